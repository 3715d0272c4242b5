//! A container's life with a real `berth-shim`: the monitor that records exits, restart
//! policies, stop/kill, logs, exec, and a runtime that starts again while containers run.
//!
//! Each test says why it skips when the machine cannot run containers (not root, no busybox,
//! no shim binary) or when the shim lacks a newer op (`exec`).

mod common;
use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::containers::v1::{
    Container, ContainerConfig, ContainerState, DeleteContainerRequest, GetContainerRequest,
    PruneContainersRequest, RestartPolicy,
};
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_api::tasks::v1::{
    exec_request, exec_response, ExecRequest, ExecStart, KillTaskRequest, LogsRequest,
    StartTaskRequest, StopTaskRequest, WaitTaskRequest,
};
use berth_core::config::RuntimeConfig;
use berth_core::grpc::{channel, exit_code_of, request};
use berth_runtime::bundle::{Bundle, RootfsMount};
use berth_runtime::spec::{self, ImageConfig};
use berth_runtime::Runtime;
use common::{busybox_rootfs, kill_leftovers, open_runtime, serve, shim_binary, store_container};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

const NS: &str = "default";

macro_rules! shim_or_skip {
    () => {
        match shim_binary() {
            Ok(s) => s,
            Err(why) => return common::skip(why),
        }
    };
}

struct Harness {
    dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    mounts: Vec<RootfsMount>,
    fakes: fakes::Fakes,
    containers: ContainersClient<Channel>,
    tasks: TasksClient<Channel>,
    server: tokio::task::JoinHandle<()>,
    fake_server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
        self.fake_server.abort();
        kill_leftovers(&self.dir.path().join("s"));
    }
}

/// Stand-ins for the Snapshots service (every key mounts the test rootfs; removing works)
/// and the Events service (it keeps what is published).
mod fakes {
    use super::*;
    use berth_api::events::v1::events_server::{Events, EventsServer};
    use berth_api::events::v1::{Envelope, PublishRequest, PublishResponse, SubscribeRequest};
    use berth_api::snapshots::v1 as snap;
    use berth_api::snapshots::v1::snapshots_server::{Snapshots, SnapshotsServer};
    use std::sync::Mutex;
    use tonic::{Request, Response, Status, Streaming};

    #[derive(Clone)]
    pub struct Fakes {
        pub mounts: Vec<RootfsMount>,
        pub events: Arc<Mutex<Vec<Envelope>>>,
        pub removed: Arc<Mutex<Vec<String>>>,
    }

    fn no<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("fake"))
    }

    #[tonic::async_trait]
    impl Snapshots for Fakes {
        async fn prepare(
            &self,
            _: Request<snap::PrepareSnapshotRequest>,
        ) -> Result<Response<snap::MountsResponse>, Status> {
            no()
        }
        async fn view(
            &self,
            _: Request<snap::PrepareSnapshotRequest>,
        ) -> Result<Response<snap::MountsResponse>, Status> {
            no()
        }
        async fn mounts(
            &self,
            _: Request<snap::SnapshotKey>,
        ) -> Result<Response<snap::MountsResponse>, Status> {
            let mounts = self
                .mounts
                .iter()
                .map(|m| berth_api::types::v1::Mount {
                    r#type: m.typ.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                    ..Default::default()
                })
                .collect();
            Ok(Response::new(snap::MountsResponse { mounts }))
        }
        async fn commit(
            &self,
            _: Request<snap::CommitSnapshotRequest>,
        ) -> Result<Response<snap::CommitSnapshotResponse>, Status> {
            no()
        }
        async fn remove(
            &self,
            r: Request<snap::SnapshotKey>,
        ) -> Result<Response<snap::RemoveSnapshotResponse>, Status> {
            self.removed.lock().unwrap().push(r.into_inner().key);
            Ok(Response::new(Default::default()))
        }
        async fn stat(
            &self,
            _: Request<snap::SnapshotKey>,
        ) -> Result<Response<snap::StatSnapshotResponse>, Status> {
            no()
        }
        async fn list(
            &self,
            _: Request<snap::ListSnapshotsRequest>,
        ) -> Result<Response<snap::ListSnapshotsResponse>, Status> {
            no()
        }
        async fn usage(
            &self,
            _: Request<snap::SnapshotKey>,
        ) -> Result<Response<snap::UsageResponse>, Status> {
            no()
        }
        async fn apply(
            &self,
            _: Request<Streaming<snap::ApplyRequest>>,
        ) -> Result<Response<snap::ApplyResponse>, Status> {
            no()
        }
        type DiffStream = Sub<snap::DiffResponse>;
        async fn diff(
            &self,
            _: Request<snap::DiffRequest>,
        ) -> Result<Response<Self::DiffStream>, Status> {
            no()
        }
        async fn namespace_usage(
            &self,
            _: Request<berth_api::types::v1::NamespaceUsageRequest>,
        ) -> Result<Response<berth_api::types::v1::NamespaceUsageResponse>, Status> {
            no()
        }
    }

    type Sub<T = Envelope> =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

    #[tonic::async_trait]
    impl Events for Fakes {
        async fn publish(
            &self,
            r: Request<PublishRequest>,
        ) -> Result<Response<PublishResponse>, Status> {
            if let Some(e) = r.into_inner().event {
                self.events.lock().unwrap().push(e);
            }
            Ok(Response::new(PublishResponse {}))
        }
        type SubscribeStream = Sub;
        async fn subscribe(&self, _: Request<SubscribeRequest>) -> Result<Response<Sub>, Status> {
            no()
        }
    }

    /// Serves both on `socket`.
    pub fn serve(socket: &Path, f: Fakes) -> tokio::task::JoinHandle<()> {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(SnapshotsServer::new(f.clone()))
                .add_service(EventsServer::new(f))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .unwrap();
        })
    }
}

impl Harness {
    async fn start(shim: &Path) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("lc")
            .tempdir_in("/tmp")
            .unwrap();
        let mounts = busybox_rootfs(dir.path());
        let f = fakes::Fakes {
            mounts: mounts.clone(),
            events: Default::default(),
            removed: Default::default(),
        };
        let fake_socket = dir.path().join("fakes.sock");
        let fake_server = fakes::serve(&fake_socket, f.clone());
        let fake_channel = channel(&format!("unix://{}", fake_socket.display())).unwrap();
        let runtime = Runtime::open_with_events(
            &dir.path().join("root"),
            &dir.path().join("s"),
            RuntimeConfig {
                shim: Some(shim.to_path_buf()),
                log_max_size: 1 << 20,
                ..Default::default()
            },
            fake_channel.clone(),
            fake_channel.clone(),
            Some(fake_channel),
        )
        .unwrap();
        let (server, containers, tasks) = serve(&runtime, dir.path());
        Harness {
            dir,
            runtime,
            mounts,
            fakes: f,
            containers,
            tasks,
            server,
            fake_server,
        }
    }

    /// Stores a container running `cmd` and creates its task (the snapshot service is not
    /// there: the test rootfs stands in for it, and restarts reuse the task's rootfs).
    async fn container(&self, n: u8, cmd: &[&str], config: ContainerConfig) -> Container {
        add_container(&self.runtime, n, cmd, config, &self.mounts).await
    }

    async fn state(&mut self, name: &str) -> ContainerState {
        self.containers
            .get(request(NS, GetContainerRequest { id: name.into() }))
            .await
            .unwrap()
            .into_inner()
            .container
            .unwrap()
            .state
            .unwrap()
    }

    async fn start_task(&mut self, name: &str) -> Result<u32, tonic::Status> {
        self.tasks
            .start(request(
                NS,
                StartTaskRequest {
                    container_id: name.into(),
                },
            ))
            .await
            .map(|r| r.into_inner().pid)
    }

    /// Polls the container's state until `done` holds (at most 15 s).
    async fn until(
        &mut self,
        name: &str,
        done: impl Fn(&ContainerState) -> bool,
    ) -> ContainerState {
        for _ in 0..300 {
            let st = self.state(name).await;
            if done(&st) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name}: state never reached: {:?}", self.state(name).await);
    }

    async fn logs(&mut self, name: &str, follow: bool, tail: Option<i64>) -> Vec<String> {
        let mut s = self
            .tasks
            .logs(request(
                NS,
                LogsRequest {
                    container_id: name.into(),
                    follow,
                    tail: tail.unwrap_or(0),
                    has_tail: tail.is_some(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(e) = s.message().await.unwrap() {
            out.push(String::from_utf8_lossy(&e.data).trim_end().to_string());
        }
        out
    }
}

async fn add_container(
    runtime: &Runtime,
    n: u8,
    cmd: &[&str],
    config: ContainerConfig,
    mounts: &[RootfsMount],
) -> Container {
    let id = format!("{n:02x}").repeat(32);
    let image = ImageConfig {
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let config = ContainerConfig {
        image: "busybox".into(),
        network_mode: "none".into(),
        ..config
    };
    let c = store_container(runtime, NS, &id, &format!("c{n}"), &image, config);
    runtime
        .create_task_with_mounts(NS, &c, mounts)
        .await
        .unwrap();
    c
}

fn policy(name: &str, n: i32) -> ContainerConfig {
    ContainerConfig {
        restart_policy: Some(RestartPolicy {
            name: name.into(),
            maximum_retry_count: n,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn exits_are_recorded_and_logs_outlive_the_task() {
    let shim = shim_or_skip!();
    let mut h = Harness::start(&shim).await;
    let c = h
        .container(
            1,
            &["sh", "-c", "echo one; sleep 0.2; echo two >&2; exit 3"],
            Default::default(),
        )
        .await;
    assert_eq!(h.state("c1").await.status, "created");
    let pid = h.start_task("c1").await.unwrap();
    assert!(pid > 0);
    let st = h.until("c1", |s| s.status == "exited").await;
    assert_eq!((st.exit_code, st.pid, st.restart_count), (3, 0, 0));
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    // The monitor deleted the task; the exit stays readable.
    let bundle = Bundle::new(&h.dir.path().join("s"), NS, &c.id);
    for _ in 0..100 {
        if !bundle.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !bundle.exists(),
        "the task of an exited container is deleted"
    );
    let w = h
        .tasks
        .wait(request(
            NS,
            WaitTaskRequest {
                container_id: "c1".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(w.into_inner().exit.unwrap().exit_code, 3);

    // The log is the container's, in its own folder, and lists both streams.
    let log = h.runtime.log_path(NS, &c.id);
    assert!(log.starts_with(h.dir.path().join("root/containers/default")));
    assert!(log.is_file(), "no log at {}", log.display());
    assert_eq!(h.logs("c1", false, None).await, ["one", "two"]);
    assert_eq!(h.logs("c1", false, Some(1)).await, ["two"]);
    assert_eq!(h.logs("c1", true, None).await, ["one", "two"]);

    // Kill and stop of an exited container: Docker's answers.
    let err = h
        .tasks
        .kill(request(
            NS,
            KillTaskRequest {
                container_id: "c1".into(),
                signal: 9,
                all: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), format!("Container {} is not running", c.id));
    h.tasks
        .stop(request(
            NS,
            StopTaskRequest {
                container_id: "c1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    // A second run (a new task on the same rootfs) appends to the same log.
    h.runtime
        .create_task_with_mounts(NS, &c, &h.mounts)
        .await
        .unwrap();
    h.start_task("c1").await.unwrap();
    let st = h.until("c1", |s| s.status == "exited").await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(
        h.logs("c1", false, None).await,
        ["one", "two", "one", "two"]
    );

    // Prune removes it with its log folder.
    let pruned = h
        .containers
        .prune(request(NS, PruneContainersRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pruned.deleted, vec![c.id.clone()]);
    assert!(!log.exists());
    assert_eq!(*h.fakes.removed.lock().unwrap(), vec![c.id.clone()]);
    let actions: Vec<String> = h
        .fakes
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.id == c.id)
        .map(|e| match e.attributes.get("exitCode") {
            Some(code) => format!("{}:{code}", e.action),
            None => e.action.clone(),
        })
        .collect();
    assert_eq!(actions, ["start", "die:3", "start", "die:3", "destroy"]);
}

#[tokio::test]
async fn logs_follow_a_running_container_until_it_exits() {
    let shim = shim_or_skip!();
    let mut h = Harness::start(&shim).await;
    h.container(
        12,
        &["sh", "-c", "for i in 1 2 3 4; do echo $i; sleep 0.3; done"],
        Default::default(),
    )
    .await;
    h.start_task("c12").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    let lines = h.logs("c12", true, Some(10)).await;
    assert_eq!(lines, ["1", "2", "3", "4"]);
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "follow returned early"
    );
    assert_eq!(h.state("c12").await.status, "exited");
}

#[tokio::test]
async fn a_shim_killed_while_the_runtime_runs_reads_as_exited() {
    let shim = shim_or_skip!();
    let mut h = Harness::start(&shim).await;
    let c = h.container(13, &["sleep", "100"], Default::default()).await;
    h.start_task("c13").await.unwrap();
    let bundle = Bundle::new(&h.dir.path().join("s"), NS, &c.id);
    let (shim_pid, init_pid) = (bundle.shim_pid().unwrap(), bundle.init_pid().unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = h.until("c13", |s| s.status == "exited").await;
    assert_eq!(st.exit_code, 255);
    assert!(st.error.contains("shim"), "{st:?}");
    // The init went with it (or is at least no longer running).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alive = std::fs::read_to_string(format!("/proc/{init_pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .unwrap()
                .1
                .trim_start()
                .starts_with(['Z', 'X'])
        })
        .unwrap_or(false);
    assert!(!alive, "the container's init still runs");
    assert!(!bundle.exists());
}

#[tokio::test]
async fn on_failure_restarts_with_back_off_up_to_its_maximum() {
    let shim = shim_or_skip!();
    let mut h = Harness::start(&shim).await;
    h.container(
        2,
        &["sh", "-c", "echo run; exit 1"],
        policy("on-failure", 2),
    )
    .await;
    let started = std::time::Instant::now();
    h.start_task("c2").await.unwrap();
    let st = h
        .until("c2", |s| s.status == "exited" && s.restart_count == 2)
        .await;
    assert_eq!(st.exit_code, 1);
    // 100 ms, then 200 ms of back-off.
    assert!(started.elapsed() >= Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let st = h.state("c2").await;
    assert_eq!((st.status.as_str(), st.restart_count), ("exited", 2));
    assert_eq!(h.logs("c2", false, None).await, ["run", "run", "run"]);

    // A start by the user resets the count.
    h.start_task("c2").await.unwrap();
    let st = h
        .until("c2", |s| s.status == "exited" && s.restart_count == 2)
        .await;
    assert_eq!(st.exit_code, 1);
}

#[tokio::test]
async fn stop_ends_a_container_for_good_and_kill_counts_as_stopped() {
    let shim = shim_or_skip!();
    let mut h = Harness::start(&shim).await;
    // PID 1 ignores SIGTERM without a handler: stop has to SIGKILL it after the timeout.
    h.container(3, &["sleep", "100"], policy("always", 0)).await;
    h.start_task("c3").await.unwrap();
    assert_eq!(h.state("c3").await.status, "running");
    let t = std::time::Instant::now();
    let exit = h
        .tasks
        .stop(request(
            NS,
            StopTaskRequest {
                container_id: "c3".into(),
                timeout: 1,
                has_timeout: true,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .exit
        .unwrap();
    assert_eq!(exit.exit_code, 137);
    assert!(t.elapsed() >= Duration::from_secs(1));
    let st = h.state("c3").await;
    assert_eq!((st.status.as_str(), st.exit_code), ("exited", 137));
    assert!(st.stopped_by_user);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.state("c3").await.status,
        "exited",
        "always does not restart a stopped one"
    );

    // A start clears the mark; a trapped TERM ends it at once.
    h.container(
        4,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ],
        policy("unless-stopped", 0),
    )
    .await;
    h.start_task("c4").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    let exit = h
        .tasks
        .stop(request(
            NS,
            StopTaskRequest {
                container_id: "c4".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .exit
        .unwrap();
    assert_eq!(exit.exit_code, 0);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(h.state("c4").await.stopped_by_user);

    // kill: the container ends, and `always` leaves it ended.
    h.start_task("c3").await.unwrap();
    let st = h.until("c3", |s| s.status == "running").await;
    assert!(!st.stopped_by_user);
    h.tasks
        .kill(request(
            NS,
            KillTaskRequest {
                container_id: "c3".into(),
                signal: 9,
                all: false,
            },
        ))
        .await
        .unwrap();
    let st = h.until("c3", |s| s.status == "exited").await;
    assert!(st.stopped_by_user);
    assert_eq!(st.exit_code, 137);

    // Without force a running container stays; with force it goes.
    h.start_task("c3").await.unwrap();
    let err = h
        .containers
        .delete(request(
            NS,
            DeleteContainerRequest {
                id: "c3".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err
        .message()
        .starts_with("You cannot remove a running container"));
    h.containers
        .delete(request(
            NS,
            DeleteContainerRequest {
                id: "c3".into(),
                force: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert!(h.runtime.store().resolve(NS, "c3").is_err());
}

#[tokio::test]
async fn always_restarts_until_stopped() {
    let shim = shim_or_skip!();
    let mut h = Harness::start(&shim).await;
    h.container(5, &["sh", "-c", "exit 0"], policy("always", 0))
        .await;
    h.start_task("c5").await.unwrap();
    h.until("c5", |s| s.restart_count >= 3).await;
    h.tasks
        .stop(request(
            NS,
            StopTaskRequest {
                container_id: "c5".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let st = h.until("c5", |s| s.status == "exited").await;
    assert!(st.stopped_by_user);
    let count = st.restart_count;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = h.state("c5").await;
    assert_eq!((st.status.as_str(), st.restart_count), ("exited", count));
}

#[tokio::test]
async fn auto_remove_removes_a_detached_container_after_its_exit() {
    let shim = shim_or_skip!();
    let mut h = Harness::start(&shim).await;
    let c = h
        .container(
            10,
            &["sh", "-c", "exit 2"],
            ContainerConfig {
                auto_remove: true,
                ..Default::default()
            },
        )
        .await;
    h.start_task("c10").await.unwrap();
    for _ in 0..200 {
        if h.runtime.store().get(NS, &c.id).unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(h.runtime.store().get(NS, &c.id).unwrap().is_none());
    assert!(!Bundle::new(&h.dir.path().join("s"), NS, &c.id).exists());
    assert!(!h.runtime.container_dir(NS, &c.id).exists());
}

#[tokio::test]
async fn volumes_and_binds_reach_the_container() {
    let shim = shim_or_skip!();
    let h = Harness::start(&shim).await;
    let host = h.dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from the host\n").unwrap();
    let binds = berth_runtime::volumes::parse_binds(&[
        "named:/data".into(),
        format!("{}:/host:ro", host.display()),
    ])
    .unwrap();
    let mounts = h.runtime.container_mounts(NS, &binds, &[]).unwrap();
    let id = "0b".repeat(32);
    let image = ImageConfig {
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo hello > /data/out; cat /host/in; echo x > /host/no || echo refused".into(),
        ]),
        ..Default::default()
    };
    let config = ContainerConfig {
        image: "busybox".into(),
        network_mode: "none".into(),
        ..Default::default()
    };
    let mut s = spec::build(&id, NS, &config, &image, &spec::Options::from_host(1 << 20)).unwrap();
    berth_runtime::volumes::add_to_spec(&mut s, &mounts).unwrap();
    let c = Container {
        id: id.clone(),
        name: "c11".into(),
        config: Some(config),
        spec: serde_json::to_vec(&s).unwrap(),
        snapshotter: "native".into(),
        snapshot_key: id.clone(),
        mounts: mounts.clone(),
        ..Default::default()
    };
    h.runtime.store().create(NS, &c).unwrap();
    h.runtime
        .create_task_with_mounts(NS, &c, &h.mounts)
        .await
        .unwrap();
    let mut h = h;
    h.start_task("c11").await.unwrap();
    let st = h.until("c11", |s| s.status == "exited").await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let vol = h.dir.path().join("root/volumes/default/named/_data/out");
    assert_eq!(std::fs::read_to_string(vol).unwrap(), "hello\n");
    assert!(!host.join("no").exists());
    let logs = h.logs("c11", false, None).await;
    assert!(logs.contains(&"from the host".to_string()), "{logs:?}");
    assert!(logs.contains(&"refused".to_string()), "{logs:?}");
}

#[tokio::test]
async fn exec_runs_in_a_running_container() {
    let shim = shim_or_skip!();
    let mut h = Harness::start(&shim).await;
    h.container(6, &["sleep", "100"], Default::default()).await;
    h.start_task("c6").await.unwrap();

    let exec = |h: &mut Harness, args: &[&str]| {
        let mut tasks = h.tasks.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(ExecRequest {
                item: Some(exec_request::Item::Start(ExecStart {
                    container_id: "c6".into(),
                    args,
                    env: vec!["GREETING=hi".into()],
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
            let mut s = tasks
                .exec(request(NS, tokio_stream::wrappers::ReceiverStream::new(rx)))
                .await?
                .into_inner();
            let (mut out, mut code, mut pid) = (Vec::new(), -1, 0);
            while let Some(m) = s.message().await? {
                match m.item {
                    Some(exec_response::Item::Stdout(b)) => out.extend(b),
                    Some(exec_response::Item::Stderr(b)) => out.extend(b),
                    Some(exec_response::Item::Exit(e)) => code = e.exit_code,
                    Some(exec_response::Item::Pid(p)) => pid = p,
                    None => {}
                }
            }
            drop(tx);
            Ok::<_, tonic::Status>((String::from_utf8_lossy(&out).into_owned(), code, pid))
        }
    };
    match exec(&mut h, &["sh", "-c", "echo $GREETING; exit 4"]).await {
        Ok((out, code, pid)) => {
            assert_eq!((out.as_str(), code), ("hi\n", 4));
            assert!(pid > 0);
        }
        Err(e) => panic!("exec failed: {e:?}"),
    }
    let err = exec(&mut h, &["nope"]).await.unwrap_err();
    assert_eq!(exit_code_of(&err), Some(127), "{err:?}");

    h.tasks
        .kill(request(
            NS,
            KillTaskRequest {
                container_id: "c6".into(),
                signal: 9,
                all: false,
            },
        ))
        .await
        .unwrap();
    h.until("c6", |s| s.status == "exited").await;
    let err = exec(&mut h, &["true"]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().ends_with("is not running"), "{err:?}");
}

/// berthd goes away while containers run (its tokio runtime, and every monitor with it), one
/// shim is killed meanwhile; a new runtime on the same folders finds all of it again.
#[test]
fn a_new_runtime_finds_running_containers_and_dead_shims() {
    let shim = shim_or_skip!();
    let dir = tempfile::Builder::new()
        .prefix("lr")
        .tempdir_in("/tmp")
        .unwrap();
    let state = dir.path().join("s");
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            kill_leftovers(&self.0);
        }
    }
    let _cleanup = Cleanup(state.clone());
    let mounts = busybox_rootfs(dir.path());
    let (running, doomed, restarted) = {
        let tokio1 = tokio::runtime::Runtime::new().unwrap();
        let ids = tokio1.block_on(async {
            let rt = open_runtime(dir.path(), Some(shim.clone()));
            let a = add_container(&rt, 7, &["sleep", "100"], Default::default(), &mounts).await;
            let b = add_container(&rt, 8, &["sleep", "100"], Default::default(), &mounts).await;
            let c = add_container(&rt, 9, &["sleep", "100"], policy("always", 0), &mounts).await;
            for x in [&a, &b, &c] {
                rt.start_container(NS, &x.id).await.unwrap();
            }
            (a.id, b.id, c.id)
        });
        tokio1.shutdown_timeout(Duration::from_secs(5));
        ids
    };
    // The shims of two containers die while no runtime watches.
    for id in [&doomed, &restarted] {
        let b = Bundle::new(&state, NS, id);
        for pid in [b.shim_pid(), b.init_pid().map(|p| p as i32)]
            .into_iter()
            .flatten()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    std::thread::sleep(Duration::from_millis(300));

    let tokio2 = tokio::runtime::Runtime::new().unwrap();
    tokio2.block_on(async {
        let rt = open_runtime(dir.path(), Some(shim.clone()));
        rt.recover().await;
        let st = |id: &str| rt.store().get(NS, id).unwrap().unwrap().state.unwrap();
        assert_eq!(st(&running).status, "running");
        let d = st(&doomed);
        assert_eq!(d.status, "exited");
        assert!(d.exit_code == 255 || d.exit_code == 137, "{d:?}");
        assert!(!Bundle::new(&state, NS, &doomed).exists());
        // `always` brought the third back.
        let r = st(&restarted);
        assert_eq!(r.status, "running", "{r:?}");
        assert!(Bundle::new(&state, NS, &restarted).exists());

        // The re-attached monitor records the exit of the running one.
        let exit = rt.stop_container(NS, &running, Some(0)).await.unwrap();
        assert_eq!(exit.exit_code, 137);
        assert_eq!(st(&running).status, "exited");
        rt.stop_container(NS, &restarted, Some(0)).await.unwrap();
        assert_eq!(st(&restarted).status, "exited");
    });
}
