//! The Kubernetes CRI's container events and pod stats (issue 15, events slice): a
//! GetContainerEvents client (berth-api's generated `runtime.v1` client, as the kubelet's
//! evented PLEG subscribes) sees a pod's container created, started, stopped and deleted by
//! crictl, in order, with the pod's status; PodSandboxStats and `crictl statsp` measure a
//! running pod; critest's event and stats specs pass.

use berth_api::cri::v1 as cri;
use berth_api::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_integration::cri::{cri, Cri, BUSYBOX};
use berth_integration::{or_skip, wait_for, TempDir};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// Writes a pod config and a container config running `script` for crictl: their paths.
fn configs(dir: &Path, name: &str, script: &str) -> (String, String) {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let pod = serde_json::json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "namespace": "berth-events", "attempt": 1},
        "log_directory": logs.display().to_string(),
        "labels": {"app": name, "suite": "cri-events"},
        "linux": {}
    });
    let container = serde_json::json!({
        "metadata": {"name": format!("{name}-main")},
        "image": {"image": BUSYBOX},
        "command": ["sh", "-c", script],
        "log_path": format!("{name}.log"),
        "labels": {"role": "main"},
        "linux": {}
    });
    let pod_file = dir.join(format!("{name}-pod.json"));
    let ctr_file = dir.join(format!("{name}-ctr.json"));
    std::fs::write(&pod_file, pod.to_string()).unwrap();
    std::fs::write(&ctr_file, container.to_string()).unwrap();
    (
        pod_file.display().to_string(),
        ctr_file.display().to_string(),
    )
}

/// A runtime.v1 client on the CRI socket, its connections on `rt`.
fn client(rt: &tokio::runtime::Runtime, c: &Cri) -> RuntimeServiceClient<Channel> {
    let _in_rt = rt.enter();
    let channel = berth_core::grpc::channel(&format!("unix://{}", c.socket.display()))
        .expect("a channel to the CRI socket");
    RuntimeServiceClient::new(channel)
}

fn run(c: &Cri, args: &[&str]) -> String {
    c.ok(args).trim().to_string()
}

#[test]
fn events_follow_a_container_through_its_life() {
    let c = or_skip!(cri());
    c.ok(&["pull", BUSYBOX]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen: Arc<Mutex<Vec<cri::ContainerEventResponse>>> = Arc::default();
    let mut stream = rt
        .block_on(client(&rt, c).get_container_events(cri::GetEventsRequest {}))
        .expect("GetContainerEvents")
        .into_inner();
    let collected = seen.clone();
    rt.spawn(async move {
        while let Ok(Some(e)) = stream.message().await {
            collected.lock().unwrap().push(e);
        }
    });

    let tmp = TempDir::new("berth-it-cri-events");
    let (pod_file, ctr_file) = configs(tmp.path(), "evented", "sleep 1000");
    let pod = run(c, &["runp", &pod_file]);
    let ctr = run(c, &["create", &pod, &ctr_file, &pod_file]);
    c.ok(&["start", &ctr]);
    c.ok(&["stop", "--timeout", "0", &ctr]);
    c.ok(&["rm", &ctr]);

    use cri::ContainerEventType as T;
    let wanted = [
        T::ContainerCreatedEvent,
        T::ContainerStartedEvent,
        T::ContainerStoppedEvent,
        T::ContainerDeletedEvent,
    ];
    let of = |id: &str| -> Vec<cri::ContainerEventResponse> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|e| e.container_id == id)
            .cloned()
            .collect()
    };
    wait_for(
        "the container's four events",
        Duration::from_secs(20),
        || of(&ctr).len() >= wanted.len(),
    );
    let events = of(&ctr);
    let kinds: Vec<i32> = events.iter().map(|e| e.container_event_type).collect();
    let wanted_kinds: Vec<i32> = wanted.iter().map(|t| *t as i32).collect();
    assert_eq!(kinds, wanted_kinds, "{events:#?}");
    let mut last = 0;
    for e in &events {
        assert!(e.created_at >= last && e.created_at > 0, "{events:#?}");
        last = e.created_at;
        let status = e.pod_sandbox_status.as_ref().expect("the pod's status");
        assert_eq!(status.id, pod);
        assert_eq!(status.metadata.as_ref().unwrap().name, "evented");
        assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    }
    // The container's status rides along while it exists: created, running, exited.
    let own = |e: &cri::ContainerEventResponse| {
        e.containers_statuses
            .iter()
            .find(|s| s.id == ctr)
            .map(|s| s.state)
    };
    assert_eq!(
        own(&events[0]),
        Some(cri::ContainerState::ContainerCreated as i32)
    );
    assert_eq!(
        own(&events[2]),
        Some(cri::ContainerState::ContainerExited as i32)
    );
    assert_eq!(own(&events[3]), None, "a deleted container has no status");

    // The sandbox's own events, as containerd sends them.
    c.ok(&["stopp", &pod]);
    c.ok(&["rmp", &pod]);
    wait_for("the sandbox's events", Duration::from_secs(20), || {
        of(&pod).len() >= 4
    });
    let pod_kinds: Vec<i32> = of(&pod).iter().map(|e| e.container_event_type).collect();
    assert_eq!(pod_kinds, wanted_kinds, "{:#?}", of(&pod));
    let deleted = of(&pod).pop().unwrap();
    assert!(deleted.pod_sandbox_status.is_none(), "{deleted:?}");
}

#[test]
fn pod_stats_measure_a_running_pod() {
    let c = or_skip!(cri());
    c.ok(&["pull", BUSYBOX]);
    let tmp = TempDir::new("berth-it-cri-statsp");
    let (pod_file, ctr_file) = configs(
        tmp.path(),
        "measured",
        "head -c 4000000 /dev/zero > /dev/shm/fill; sleep 1000",
    );
    let pod = run(c, &["runp", &pod_file]);
    let ctr = run(c, &["create", &pod, &ctr_file, &pod_file]);
    c.ok(&["start", &ctr]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = client(&rt, c);
    let stats = rt
        .block_on(client.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(stats.attributes.as_ref().unwrap().id, pod);
    assert_eq!(stats.attributes.as_ref().unwrap().labels["app"], "measured");
    let linux = stats.linux.unwrap();
    let memory = linux.memory.expect("the pod's memory");
    assert!(memory.usage_bytes.unwrap().value > 0, "{memory:?}");
    assert!(linux.cpu.expect("the pod's cpu").timestamp > 0);
    let processes = linux.process.expect("the pod's processes");
    assert!(processes.process_count.unwrap().value >= 2, "{processes:?}");
    let network = linux.network.expect("the pod's network");
    assert_eq!(network.default_interface.unwrap().name, "eth0");
    assert_eq!(linux.containers.len(), 1);
    assert_eq!(linux.containers[0].attributes.as_ref().unwrap().id, ctr);

    // ListPodSandboxStats: by label selector, by id prefix; another selector finds nothing.
    let list = |filter: cri::PodSandboxStatsFilter| {
        rt.block_on(
            client
                .clone()
                .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
                    filter: Some(filter),
                }),
        )
        .expect("ListPodSandboxStats")
        .into_inner()
        .stats
    };
    let by_label = list(cri::PodSandboxStatsFilter {
        label_selector: [("app".to_string(), "measured".to_string())].into(),
        ..Default::default()
    });
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].attributes.as_ref().unwrap().id, pod);
    let by_id = list(cri::PodSandboxStatsFilter {
        id: pod[..12].to_string(),
        ..Default::default()
    });
    assert_eq!(by_id.len(), 1);
    let none = list(cri::PodSandboxStatsFilter {
        label_selector: [("app".to_string(), "other".to_string())].into(),
        ..Default::default()
    });
    assert!(none.is_empty());
    let unknown = rt
        .block_on(client.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: "0123456789ab".into(),
        }))
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // ListContainerStats by pod and by the container's CRI labels.
    let by_pod = rt
        .block_on(client.list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod[..12].to_string(),
                label_selector: [("role".to_string(), "main".to_string())].into(),
                ..Default::default()
            }),
        }))
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(by_pod.len(), 1);
    assert_eq!(by_pod[0].attributes.as_ref().unwrap().id, ctr);

    // crictl as a user: statsp names the pod.
    let out = c.ok(&["statsp", "-o", "json", "--id", &pod]);
    assert!(out.contains(&pod), "{out}");

    c.ok(&["stopp", &pod]);
    c.ok(&["rmp", &pod]);
}

/// critest's specs of container events and stats.
#[test]
fn critest_events_and_stats() {
    let c = or_skip!(cri());
    c.critest_passes(&["--ginkgo.focus=events|stats|Stats"]);
}
