//! The Kubernetes CRI under bad requests and crashes (issue 15, robust slice): every RPC
//! that takes an id answers an unknown one with CRI's code (NotFound, or success where the
//! kubelet relies on idempotence); a container aimed at another pod's sandbox, or at a
//! stopped one, and a duplicate name are refused; a sandbox whose CNI ADD fails halfway
//! or whose sysctl is refused leaves no container, netns, veth, lease or iptables rule; a
//! kill -9 of berthd with two running pods keeps both listed, logging and cleanly removable;
//! `crictl logs -f` follows a container until it exits.

use berth_api::cri::v1 as cri;
use berth_api::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_integration::cri::{cri, text, Cri, BUSYBOX};
use berth_integration::{free_port, or_skip, wait_for, TempDir};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

/// A runtime.v1 client on CRI socket `socket`, its connections on `rt`.
fn client(rt: &tokio::runtime::Runtime, socket: &Path) -> RuntimeServiceClient<Channel> {
    let _in_rt = rt.enter();
    let channel = berth_core::grpc::channel(&format!("unix://{}", socket.display()))
        .expect("a channel to the CRI socket");
    RuntimeServiceClient::new(channel)
}

/// A pod config: `name` in pod namespace `berth-robust`, logs in `logs`, `sysctls` and a
/// host port when given.
fn pod_config(
    name: &str,
    logs: &Path,
    sysctls: &[(&str, &str)],
    host_port: Option<u16>,
) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "berth-robust".into(),
            attempt: 1,
        }),
        log_directory: logs.display().to_string(),
        port_mappings: host_port
            .map(|p| cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 80,
                host_port: p as i32,
                host_ip: String::new(),
            })
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            sysctls: sysctls
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A busybox container config running `script`, logging to `<name>.log`.
fn container_config(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// The same as files for crictl: (pod file, container file).
fn crictl_files(
    dir: &Path,
    pod: &cri::PodSandboxConfig,
    name: &str,
    script: &str,
) -> (String, String) {
    let meta = pod.metadata.clone().unwrap_or_default();
    let pod_json = serde_json::json!({
        "metadata": {"name": meta.name, "uid": meta.uid, "namespace": meta.namespace, "attempt": meta.attempt},
        "log_directory": pod.log_directory,
        "port_mappings": pod.port_mappings.iter().map(|p| serde_json::json!(
            {"protocol": 0, "container_port": p.container_port, "host_port": p.host_port})).collect::<Vec<_>>(),
        "linux": {}
    });
    let ctr_json = serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": BUSYBOX},
        "command": ["sh", "-c", script],
        "log_path": format!("{name}.log"),
        "linux": {}
    });
    let pod_file = dir.join(format!("{}-pod.json", meta.name));
    let ctr_file = dir.join(format!("{name}-ctr.json"));
    std::fs::write(&pod_file, pod_json.to_string()).unwrap();
    std::fs::write(&ctr_file, ctr_json.to_string()).unwrap();
    (
        pod_file.display().to_string(),
        ctr_file.display().to_string(),
    )
}

/// The ids of every berth container in `k8s.io`.
fn berth_containers(c: &Cri) -> Vec<String> {
    c.berthd
        .ok(&["-n", "k8s.io", "ps", "-a", "-q", "--no-trunc"])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The error of RPC future `call`, asserted to carry `code`.
macro_rules! refused {
    ($call:expr, $code:expr) => {{
        let e = $call.await.unwrap_err();
        assert_eq!(e.code(), $code, "{e:?}");
        e
    }};
}

const UNKNOWN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn unknown_ids_get_the_codes_the_kubelet_expects() {
    let c = or_skip!(cri());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rs = client(&rt, &c.socket);
    let id = UNKNOWN.to_string();
    rt.block_on(async {
        // The kubelet's cleanup paths: idempotent, success for what is gone.
        let stop = rs
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        assert!(stop.is_ok(), "StopPodSandbox: {stop:?}");
        let remove = rs
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        assert!(remove.is_ok(), "RemovePodSandbox: {remove:?}");
        let remove = rs
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await;
        assert!(remove.is_ok(), "RemoveContainer: {remove:?}");

        let mut codes: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
        macro_rules! call {
            ($name:literal, $call:expr) => {
                codes.push(($name, $call.await.map(|_| ())))
            };
        }
        call!(
            "PodSandboxStatus",
            rs.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: true
            })
        );
        call!(
            "CreateContainer",
            rs.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: id.clone(),
                config: Some(container_config("lost", BUSYBOX, "true")),
                sandbox_config: None,
            })
        );
        call!(
            "StartContainer",
            rs.start_container(cri::StartContainerRequest {
                container_id: id.clone()
            })
        );
        call!(
            "StopContainer",
            rs.stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 1
            })
        );
        call!(
            "ContainerStatus",
            rs.container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true
            })
        );
        call!(
            "UpdateContainerResources",
            rs.update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(Default::default()),
                ..Default::default()
            })
        );
        call!(
            "ReopenContainerLog",
            rs.reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.clone()
            })
        );
        call!(
            "ExecSync",
            rs.exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["true".into()],
                timeout: 1
            })
        );
        call!(
            "Exec",
            rs.exec(cri::ExecRequest {
                container_id: id.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            })
        );
        call!(
            "Attach",
            rs.attach(cri::AttachRequest {
                container_id: id.clone(),
                stdout: true,
                ..Default::default()
            })
        );
        call!(
            "PortForward",
            rs.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: id.clone(),
                port: vec![80]
            })
        );
        call!(
            "ContainerStats",
            rs.container_stats(cri::ContainerStatsRequest {
                container_id: id.clone()
            })
        );
        call!(
            "PodSandboxStats",
            rs.pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: id.clone()
            })
        );
        let wrong: Vec<String> = codes
            .iter()
            .filter(|(_, r)| !matches!(r, Err(e) if e.code() == Code::NotFound))
            .map(|(name, r)| format!("{name}: {r:?}"))
            .collect();
        assert!(wrong.is_empty(), "not NotFound: {wrong:#?}");
        for (name, r) in &codes {
            let message = r.as_ref().unwrap_err().message().to_string();
            assert!(message.contains(UNKNOWN), "{name} names no id: {message}");
        }
        // An empty id is the caller's mistake, not an unknown object.
        refused!(
            rs.container_status(cri::ContainerStatusRequest::default()),
            Code::InvalidArgument
        );
        // Filters naming unknown objects find nothing, without an error.
        let listed = rs
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(listed.containers.is_empty());
    });
}

#[test]
fn containers_stay_in_their_own_running_pod_and_names_are_unique() {
    let c = or_skip!(cri());
    c.ok(&["pull", BUSYBOX]);
    let tmp = TempDir::new("berth-it-cri-robust");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rs = client(&rt, &c.socket);
    let config_a = pod_config("robust-a", tmp.path(), &[], None);
    let config_b = pod_config("robust-b", tmp.path(), &[], None);
    rt.block_on(async {
        let run = |config: &cri::PodSandboxConfig| cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let a = rs
            .run_pod_sandbox(run(&config_a))
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let b = rs
            .run_pod_sandbox(run(&config_b))
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        // The same pod metadata again (same attempt): AlreadyExists, as containerd answers.
        refused!(rs.run_pod_sandbox(run(&config_a)), Code::AlreadyExists);

        let create = |sandbox: &str, config: &cri::PodSandboxConfig, name: &str, image: &str| {
            cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.to_string(),
                config: Some(container_config(name, image, "sleep 1000")),
                sandbox_config: Some(config.clone()),
            }
        };
        // Pod A's id with pod B's config: refused, nothing made.
        let crossed = refused!(
            rs.create_container(create(&a, &config_b, "crossed", BUSYBOX)),
            Code::InvalidArgument
        );
        assert!(crossed.message().contains("robust-b"), "{crossed:?}");
        // An image that is not there: NotFound naming it, nothing made.
        let missing = "registry.k8s.io/berth-robust/no-such-image:1";
        let absent = refused!(
            rs.create_container(create(&a, &config_a, "absent", missing)),
            Code::NotFound
        );
        assert!(absent.message().contains("no-such-image"), "{absent:?}");

        let first = rs
            .create_container(create(&a, &config_a, "app", BUSYBOX))
            .await
            .unwrap();
        let first = first.into_inner().container_id;
        refused!(
            rs.create_container(create(&a, &config_a, "app", BUSYBOX)),
            Code::AlreadyExists
        );
        // The same name in another pod is another container.
        let other = rs
            .create_container(create(&b, &config_b, "app", BUSYBOX))
            .await
            .unwrap();
        let other = other.into_inner().container_id;
        assert_ne!(first, other);
        let in_a = rs
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: a.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(in_a.len(), 1, "{in_a:?}");

        // A stopped sandbox takes no new container: its namespaces are gone.
        rs.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: b.clone(),
        })
        .await
        .unwrap();
        refused!(
            rs.create_container(create(&b, &config_b, "late", BUSYBOX)),
            Code::FailedPrecondition
        );
        // Nor may its created container start.
        refused!(
            rs.start_container(cri::StartContainerRequest {
                container_id: other.clone(),
            }),
            Code::FailedPrecondition
        );
        // A container that never ran: known, so not NotFound, but nothing to exec in.
        refused!(
            rs.exec_sync(cri::ExecSyncRequest {
                container_id: other.clone(),
                cmd: vec!["true".into()],
                timeout: 1,
            }),
            Code::FailedPrecondition
        );
        refused!(
            rs.reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: other.clone(),
            }),
            Code::FailedPrecondition
        );

        for pod in [&a, &b] {
            rs.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
            rs.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
        }
        let left: Vec<String> = berth_containers(c)
            .into_iter()
            .filter(|id| [&a, &b, &first, &other].contains(&id))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    });
    let names = c.berthd.ok(&["-n", "k8s.io", "ps", "-a", "--no-trunc"]);
    for name in ["crossed", "absent", "late"] {
        assert!(
            !names.contains(&format!("k8s_{name}_")),
            "{name} was made: {names}"
        );
    }
}

/// What pods of network `network` on bridge `bridge` leave on the host.
#[derive(Debug, PartialEq, Eq)]
struct HostTraces {
    netns: Vec<PathBuf>,
    leases: Vec<String>,
    veths: Vec<String>,
    rules: Vec<String>,
}

impl HostTraces {
    /// The traces that name one of the sandboxes `ids` (veths: all of the bridge's).
    fn of(self, ids: &[String]) -> HostTraces {
        let named = |l: &String| ids.iter().any(|id| l.contains(id.as_str()));
        HostTraces {
            netns: self
                .netns
                .into_iter()
                .filter(|p| named(&p.display().to_string()))
                .collect(),
            leases: self.leases.into_iter().filter(named).collect(),
            veths: self.veths,
            rules: self.rules.into_iter().filter(named).collect(),
        }
    }
}

fn host_traces(c: &Cri, network: &str, bridge: &str, port: u16) -> HostTraces {
    // One folder per berth namespace, a pinned netns file per sandbox in it.
    let entries = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let netns = entries(&c.berthd.state().join("net/netns"))
        .iter()
        .flat_map(|ns| entries(ns))
        .collect();
    let leases = std::fs::read_dir(Path::new("/var/lib/cni/networks").join(network))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .parse::<std::net::IpAddr>()
                .is_ok()
        })
        .map(|e| {
            // host-local's lease file holds the container id that owns the address.
            let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
            let owner = owner.lines().next().unwrap_or_default().to_string();
            format!("{} {owner}", e.file_name().to_string_lossy())
        })
        .collect();
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let veths = run("ip", &["-o", "link", "show", "master", bridge])
        .lines()
        .map(str::to_string)
        .collect();
    let dport = format!("--dport {port} ");
    let rules = run("iptables-save", &[])
        .lines()
        .filter(|l| l.contains(&format!("\\\"{network}\\\"")) || l.contains(&dport))
        .map(str::to_string)
        .collect();
    HostTraces {
        netns,
        leases,
        veths,
        rules,
    }
}

/// A conflist of network `name` on `bridge` (10.177.0.0/24, masquerading, host ports), with
/// `last` plugins after portmap.
fn conflist(name: &str, bridge: &str, last: serde_json::Value) -> String {
    let mut plugins = vec![
        serde_json::json!({
            "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.177.0.0/24"}]]}
        }),
        serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}),
    ];
    if !last.is_null() {
        plugins.push(last);
    }
    serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins}).to_string()
}

#[test]
fn sandboxes_that_fail_halfway_leave_nothing_behind() {
    const NETWORK: &str = "berth-robust";
    const BRIDGE: &str = "berth-rbst0";
    // The tuning plugin runs after bridge and portmap did their work, then fails on a sysctl
    // the kernel does not have: the ADD fails halfway.
    let failing = conflist(
        NETWORK,
        BRIDGE,
        serde_json::json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.berth_no_such": "1"}}),
    );
    let Some(c) = Cri::start_with_cni(Some(&failing)) else {
        return;
    };
    let tmp = TempDir::new("berth-it-cri-robust-half");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rs = client(&rt, &c.socket);
    let port = free_port();
    // What an earlier run of this test may have left in the host's shared places.
    let clean = host_traces(&c, NETWORK, BRIDGE, port);
    assert!(
        clean.netns.is_empty() && clean.veths.is_empty(),
        "{clean:?}"
    );
    let run = |config: cri::PodSandboxConfig| cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    };
    rt.block_on(async {
        let failed = rs
            .run_pod_sandbox(run(pod_config("half-cni", tmp.path(), &[], Some(port))))
            .await
            .unwrap_err();
        assert!(failed.message().contains("berth_no_such"), "{failed:?}");
        assert_eq!(host_traces(&c, NETWORK, BRIDGE, port), clean);
        assert!(
            berth_containers(&c).is_empty(),
            "{:?}",
            berth_containers(&c)
        );

        // A working network, and a sandbox sysctl the kernel refuses.
        std::fs::write(
            c.cni.path().join("10-pods.conflist"),
            conflist(NETWORK, BRIDGE, serde_json::Value::Null),
        )
        .unwrap();
        let sysctl = [("net.ipv4.berth_no_such", "1")];
        let failed = rs
            .run_pod_sandbox(run(pod_config(
                "half-sysctl",
                tmp.path(),
                &sysctl,
                Some(port),
            )))
            .await
            .unwrap_err();
        assert!(failed.message().contains("berth_no_such"), "{failed:?}");
        assert_eq!(host_traces(&c, NETWORK, BRIDGE, port), clean);
        assert!(
            berth_containers(&c).is_empty(),
            "{:?}",
            berth_containers(&c)
        );

        // A host port another program holds: refused before any network is set up.
        let holder = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let held = holder.local_addr().unwrap().port();
        let failed = refused!(
            rs.run_pod_sandbox(run(pod_config("half-port", tmp.path(), &[], Some(held)))),
            Code::FailedPrecondition
        );
        assert!(failed.message().contains("already allocated"), "{failed:?}");
        let after = host_traces(&c, NETWORK, BRIDGE, held);
        let dport = format!("--dport {held} ");
        assert!(!after.rules.iter().any(|r| r.contains(&dport)), "{after:?}");
        assert_eq!(host_traces(&c, NETWORK, BRIDGE, port), clean);
        assert!(
            berth_containers(&c).is_empty(),
            "{:?}",
            berth_containers(&c)
        );
        drop(holder);

        // The same pod then runs, and is removed as cleanly.
        let pod = rs
            .run_pod_sandbox(run(pod_config("half-sysctl", tmp.path(), &[], Some(port))))
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let up = host_traces(&c, NETWORK, BRIDGE, port).of(std::slice::from_ref(&pod));
        assert!(
            up.netns.len() == 1
                && up.leases.len() == 1
                && up.veths.len() == 1
                && !up.rules.is_empty(),
            "{up:?}"
        );
        rs.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
        assert_eq!(host_traces(&c, NETWORK, BRIDGE, port), clean);
    });
}

/// The cgroup folders (every v1 hierarchy and the unified one) whose path names `id`.
fn cgroups_of(id: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, id: &str, depth: usize, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if !p.is_dir() || p.is_symlink() {
                continue;
            }
            if p.to_string_lossy().contains(id) {
                out.push(p);
            } else if depth < 4 {
                walk(&p, id, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), id, 0, &mut out);
    out
}

#[test]
fn two_pods_survive_a_killed_berthd_and_are_removed_cleanly() {
    const NETWORK: &str = "berth-robust-kill";
    const BRIDGE: &str = "berth-rbstk0";
    let Some(mut c) =
        Cri::start_with_cni(Some(&conflist(NETWORK, BRIDGE, serde_json::Value::Null)))
    else {
        return;
    };
    c.ok(&["pull", BUSYBOX]);
    let tmp = TempDir::new("berth-it-cri-robust-kill");
    let port = free_port();
    let mut pods = Vec::new();
    for (i, name) in ["kill-one", "kill-two"].into_iter().enumerate() {
        let config = pod_config(name, tmp.path(), &[], (i == 0).then_some(port));
        let script = "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.2; done";
        let (pod_file, ctr_file) =
            crictl_files(tmp.path(), &config, &format!("{name}-main"), script);
        let pod = c.ok(&["runp", &pod_file]).trim().to_string();
        let ctr = c
            .ok(&["create", &pod, &ctr_file, &pod_file])
            .trim()
            .to_string();
        c.ok(&["start", &ctr]);
        pods.push((pod, ctr, tmp.path().join(format!("{name}-main.log"))));
    }
    let ids: Vec<String> = pods.iter().map(|(p, _, _)| p.clone()).collect();
    let up = host_traces(&c, NETWORK, BRIDGE, port).of(&ids);
    assert!(
        up.netns.len() == 2 && up.leases.len() == 2 && up.veths.len() == 2,
        "{up:?}"
    );
    c.berthd.kill9();
    c.berthd.restart();
    wait_for("the CRI after the restart", Duration::from_secs(20), || {
        c.crictl(&["version"]).status.success()
    });
    let ready = c.ok(&["pods", "--state", "ready", "-q", "--no-trunc"]);
    let running = c.ok(&["ps", "--state", "running", "-q", "--no-trunc"]);
    for (pod, ctr, log) in &pods {
        assert!(ready.contains(pod.as_str()), "{pod} not ready: {ready}");
        assert!(
            running.contains(ctr.as_str()),
            "{ctr} not running: {running}"
        );
        let out = c.ok(&["exec", "-s", ctr, "hostname"]);
        assert!(!out.trim().is_empty());
        // The shim kept writing while berthd was down and after: new lines keep coming.
        let count = || c.ok(&["logs", ctr]).lines().count();
        let before = count();
        wait_for(
            "new log lines after the restart",
            Duration::from_secs(10),
            || count() > before,
        );
        assert!(log.exists(), "{}", log.display());
    }
    let cgroups: Vec<PathBuf> = pods
        .iter()
        .flat_map(|(p, c, _)| [cgroups_of(p), cgroups_of(c)].concat())
        .collect();
    assert!(!cgroups.is_empty(), "no cgroups found for the pods");
    for (pod, _, _) in &pods {
        c.ok(&["stopp", pod]);
        c.ok(&["rmp", pod]);
    }
    let clean = host_traces(&c, NETWORK, BRIDGE, port).of(&ids);
    assert!(
        clean.netns.is_empty()
            && clean.leases.is_empty()
            && clean.veths.is_empty()
            && clean.rules.is_empty(),
        "{clean:?}"
    );
    let left: Vec<PathBuf> = pods
        .iter()
        .flat_map(|(p, c, _)| [cgroups_of(p), cgroups_of(c)].concat())
        .collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    assert!(
        berth_containers(&c).is_empty(),
        "{:?}",
        berth_containers(&c)
    );
    // The kubelet's log files stay where it keeps them, for it to collect.
    for (_, _, log) in &pods {
        assert!(log.exists(), "{}", log.display());
    }
}

#[test]
fn crictl_logs_follow_until_the_container_exits() {
    let c = or_skip!(cri());
    c.ok(&["pull", BUSYBOX]);
    let tmp = TempDir::new("berth-it-cri-robust-follow");
    let config = pod_config("follow", tmp.path(), &[], None);
    // Prints one line, waits to be told, prints another, then exits.
    let script = "echo first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo second; exit 0";
    let (pod_file, ctr_file) = crictl_files(tmp.path(), &config, "follow-main", script);
    let pod = c.ok(&["runp", &pod_file]).trim().to_string();
    let ctr = c
        .ok(&["create", &pod, &ctr_file, &pod_file])
        .trim()
        .to_string();
    c.ok(&["start", &ctr]);
    let endpoint = format!("unix://{}", c.socket.display());
    let mut follow = Command::new(c.tools.join("crictl"))
        .args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ])
        .args(["logs", "-f", &ctr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a followed line")
    };
    assert_eq!(next(), "first");
    c.ok(&["exec", "-s", &ctr, "touch", "/tmp/go"]);
    assert_eq!(next(), "second");
    // The container exited: `logs -f` ends by itself.
    let mut status = None;
    wait_for("crictl logs -f to end", Duration::from_secs(15), || {
        status = follow.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
    let state = c.json(&["inspect", &ctr]);
    assert_eq!(
        state["status"]["state"],
        "CONTAINER_EXITED",
        "{}",
        text(&c.crictl(&["inspect", &ctr]))
    );
    c.ok(&["stopp", &pod]);
    c.ok(&["rmp", &pod]);
}

/// The folder of process `pid`'s cgroup where the hugetlb controller is: its v1 hugetlb
/// hierarchy, else the cgroup2 one (`0::` line) when that has the controller.
fn hugetlb_cgroup_of(pid: &str) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "hugetlb") {
            return Some(Path::new("/sys/fs/cgroup/hugetlb").join(path));
        }
        if controllers.is_empty() {
            for mount in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
                let dir = Path::new(mount).join(path);
                if std::fs::read_to_string(dir.join("hugetlb.2MB.max")).is_ok()
                    || std::fs::read_dir(&dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("hugetlb."))
                {
                    return Some(dir);
                }
            }
        }
    }
    None
}

#[test]
fn hugepage_limits_reach_the_cgroup_and_unknown_sizes_are_refused() {
    let c = or_skip!(cri());
    c.ok(&["pull", BUSYBOX]);
    let tmp = TempDir::new("berth-it-cri-robust-huge");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rs = client(&rt, &c.socket);
    let config = pod_config("huge", tmp.path(), &[], None);
    rt.block_on(async {
        let pod = rs
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let with_limits = |name: &str, size: &str| {
            let mut ctr = container_config(name, BUSYBOX, "sleep 1000");
            ctr.linux = Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    hugepage_limits: vec![cri::HugepageLimit {
                        page_size: size.into(),
                        limit: 4 << 20,
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            });
            cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(ctr),
                sandbox_config: Some(config.clone()),
            }
        };
        // A page size the host has no pages of: refused at CreateContainer, named.
        let refused = refused!(
            rs.create_container(with_limits("huge-bad", "16GB")),
            Code::InvalidArgument
        );
        assert!(refused.message().contains("16GB"), "{refused:?}");
        // x86's 2 MiB pages: the size every hugetlb host offers here.
        if !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir() {
            berth_integration::skip("this host has no 2MB hugepages");
            return;
        }
        let size = "2MB";
        let ctr = rs
            .create_container(with_limits("huge-ok", size))
            .await
            .unwrap()
            .into_inner()
            .container_id;
        let started = rs
            .start_container(cri::StartContainerRequest {
                container_id: ctr.clone(),
            })
            .await;
        let status = rs
            .container_status(cri::ContainerStatusRequest {
                container_id: ctr.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        let limits = status
            .resources
            .and_then(|r| r.linux)
            .unwrap()
            .hugepage_limits;
        assert_eq!(limits.len(), 1, "{limits:?}");
        assert_eq!(
            (limits[0].page_size.as_str(), limits[0].limit),
            (size, 4 << 20)
        );
        match hugetlb_controller_on_host() {
            false => {
                // No hugetlb controller anywhere: the shim refuses to start it unlimited.
                let e = started.unwrap_err();
                assert!(e.message().contains("hugetlb"), "{e:?}");
            }
            true => {
                started.unwrap();
                let pid = c
                    .berthd
                    .ok(&["-n", "k8s.io", "inspect", "-f", "{{.State.Pid}}", &ctr]);
                let dir = hugetlb_cgroup_of(pid.trim()).expect("the container's hugetlb cgroup");
                let file = ["max", "limit_in_bytes"]
                    .iter()
                    .map(|f| dir.join(format!("hugetlb.{size}.{f}")))
                    .find(|f| f.exists())
                    .unwrap();
                let limit = std::fs::read_to_string(&file).unwrap();
                assert_eq!(limit.trim(), (4u64 << 20).to_string(), "{}", file.display());
            }
        }
        rs.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    });
}

/// Whether the host has the hugetlb controller: a v1 hierarchy or in cgroup2's controllers.
fn hugetlb_controller_on_host() -> bool {
    Path::new("/sys/fs/cgroup/hugetlb").is_dir()
        || ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .any(|m| {
                std::fs::read_to_string(Path::new(m).join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "hugetlb"))
            })
}

#[test]
fn a_sandbox_image_that_cannot_be_pulled_fails_runp_and_leaves_nothing() {
    let Some(registry) = berth_integration::Registry::start() else {
        return;
    };
    let cni = TempDir::new("berth-it-cri-robust-cni");
    let image = format!("{}/berth-robust/no-pause:1", registry.addr);
    let d = berth_integration::Berthd::start(&format!(
        "[cri]\nsocket = \"{{STATE}}/cri.sock\"\ncni_conf_dir = \"{}\"\nsandbox_image = \"{image}\"\n",
        cni.path().display()
    ));
    let socket = d.dir.path().join("state/cri.sock");
    wait_for("the CRI socket", Duration::from_secs(10), || {
        socket.exists()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rs = client(&rt, &socket);
    let tmp = TempDir::new("berth-it-cri-robust-pause");
    let failed = rt
        .block_on(rs.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("no-pause", tmp.path(), &[], None)),
            runtime_handler: String::new(),
        }))
        .unwrap_err();
    assert_eq!(failed.code(), Code::NotFound, "{failed:?}");
    assert!(failed.message().contains("no-pause"), "{failed:?}");
    let left = d.ok(&["-n", "k8s.io", "ps", "-a", "-q"]);
    assert!(left.trim().is_empty(), "{left}");
    let netns = d.state().join("net/netns/k8s.io");
    let pinned = std::fs::read_dir(&netns).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pinned, 0, "{}", netns.display());
}
