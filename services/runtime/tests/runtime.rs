//! The Containers and Tasks services over a real unix socket, driven by real gRPC clients.
//!
//! The Images and Snapshots services are not started: their channels point at a socket that
//! nobody listens on, so the paths that need them must fail with `Unavailable` and lose
//! nothing. Container records are put in through the runtime's own store, and the shim tests
//! run a real `berth-shim` (`$BERTH_SHIM`, or `target/debug/berth-shim`) on a busybox rootfs
//! when the machine has both and we are root; otherwise they say why they skip (and fail under
//! CI: `common::skip`).

mod common;
use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::containers::v1::{
    Container, ContainerConfig, CreateContainerRequest, DeleteContainerRequest,
    GetContainerRequest, ListContainersRequest,
};
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_api::tasks::v1::{
    attach_request, attach_response, AttachRequest, AttachStart, DeleteTaskRequest, GetTaskRequest,
    ListTasksRequest, StartTaskRequest, Status as TaskStatus, WaitTaskRequest,
};
use berth_core::grpc::{exit_code_of, request};
use berth_runtime::bundle::Bundle;
use berth_runtime::spec::ImageConfig;
use berth_runtime::Runtime;
use common::{
    busybox_rootfs, kill_leftovers, open_runtime, serve, shim_binary, skip, store_container,
};
use std::path::PathBuf;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::Code;

/// A runtime serving on its own socket in a temporary folder.
struct Harness {
    dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    containers: ContainersClient<Channel>,
    tasks: TasksClient<Channel>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
        // A failed test must not leave containers behind: end every shim and init it started.
        kill_leftovers(&self.state());
    }
}

impl Harness {
    async fn start(shim: Option<PathBuf>) -> Harness {
        // Short paths: the shim's socket is `<state>/tasks/<ns>/<64 hex>/shim.sock`, and a
        // unix socket path has at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("rt")
            .tempdir_in("/tmp")
            .unwrap();
        let runtime = open_runtime(dir.path(), shim);
        let (server, containers, tasks) = serve(&runtime, dir.path());
        Harness {
            dir,
            runtime,
            containers,
            tasks,
            server,
        }
    }

    /// Stores a container record the way Containers.Create would, without the image service.
    fn add_container(
        &self,
        ns: &str,
        id: &str,
        name: &str,
        image: ImageConfig,
        config: ContainerConfig,
    ) -> Container {
        store_container(&self.runtime, ns, id, name, &image, config)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("s")
    }
}

fn id(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

fn config(image: &str) -> ContainerConfig {
    ContainerConfig {
        image: image.into(),
        network_mode: "none".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_checks_the_request_and_needs_the_image_service() {
    let mut h = Harness::start(None).await;

    let err = h
        .containers
        .create(request(
            "default",
            CreateContainerRequest {
                name: "bad name".into(),
                config: Some(config("busybox")),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "Invalid container name (bad name), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    );

    let err = h
        .containers
        .create(request(
            "default",
            CreateContainerRequest {
                name: "web".into(),
                config: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = h
        .containers
        .create(request(
            "default",
            CreateContainerRequest {
                name: "web".into(),
                config: Some(config("busybox")),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("images service is not reachable"),
        "{err:?}"
    );

    // Nothing was stored on the way.
    let list = h
        .containers
        .list(request("default", ListContainersRequest {}))
        .await
        .unwrap();
    assert!(list.into_inner().containers.is_empty());
}

#[tokio::test]
async fn containers_are_found_by_id_prefix_and_name_per_namespace() {
    let mut h = Harness::start(None).await;
    let image = ImageConfig {
        cmd: Some(vec!["sh".into()]),
        ..Default::default()
    };
    let web = h.add_container(
        "default",
        &id(0xab),
        "web",
        image.clone(),
        config("busybox"),
    );
    h.add_container(
        "default",
        &format!("ac{}", &id(0x11)[2..]),
        "db",
        image.clone(),
        config("busybox"),
    );
    h.add_container("team-a", &id(0x22), "web", image, config("busybox"));

    let get = |reference: &str| GetContainerRequest {
        id: reference.into(),
    };
    for reference in [web.id.as_str(), &web.id[..5], "web", "/web"] {
        let c = h
            .containers
            .get(request("default", get(reference)))
            .await
            .unwrap();
        assert_eq!(c.into_inner().container.unwrap().id, web.id, "{reference}");
    }
    let err = h
        .containers
        .get(request("default", get("a")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("matches 2 containers"), "{err:?}");
    let err = h
        .containers
        .get(request("default", get("nope")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "No such container: nope")
    );

    // Namespaces: the metadata decides; none means `default`.
    let all = h
        .containers
        .list(ListContainersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.containers.len(), 2);
    let team = h
        .containers
        .list(request("team-a", ListContainersRequest {}))
        .await
        .unwrap();
    assert_eq!(team.into_inner().containers[0].id, id(0x22));

    // A taken name is refused before the image is even looked up, in Docker's words.
    let err = h
        .containers
        .create(request(
            "default",
            CreateContainerRequest {
                name: "web".into(),
                config: Some(config("busybox")),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        err.message(),
        format!(
            "Conflict. The container name \"/web\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
            web.id
        )
    );

    // No task yet.
    let err = h
        .tasks
        .get(request(
            "default",
            GetTaskRequest {
                container_id: "web".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = h
        .tasks
        .start(request(
            "default",
            StartTaskRequest {
                container_id: "web".into(),
            },
        ))
        .await
        .unwrap_err();
    // Start creates the task first, from the snapshot: the snapshots service is not there.
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let tasks = h
        .tasks
        .list(request("default", ListTasksRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(tasks.tasks.is_empty());

    // Deleting needs the snapshot service to give the snapshot back; without it the record
    // stays, so nothing leaks.
    let err = h
        .containers
        .delete(request(
            "default",
            DeleteContainerRequest {
                id: "web".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(h
        .containers
        .get(request("default", get("web")))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_task_whose_shim_is_gone_reads_as_stopped() {
    let mut h = Harness::start(None).await;
    let image = ImageConfig {
        cmd: Some(vec!["sh".into()]),
        ..Default::default()
    };
    let c = h.add_container("default", &id(0x33), "gone", image, config("busybox"));
    let bundle = Bundle::new(&h.state(), "default", &c.id);
    bundle.write(&c.spec, &[]).unwrap();
    std::fs::write(
        bundle.dir().join("exit.json"),
        r#"{"exit_code":3,"signal":null,"exited_at":"2024-05-06T07:08:09.5Z","oom_killed":false}"#,
    )
    .unwrap();

    let t = h
        .tasks
        .get(request(
            "default",
            GetTaskRequest {
                container_id: "gone".into(),
            },
        ))
        .await
        .unwrap();
    let t = t.into_inner().task.unwrap();
    assert_eq!(t.status, TaskStatus::Stopped as i32);
    assert_eq!(t.exit.as_ref().unwrap().exit_code, 3);
    assert_eq!(t.exit.unwrap().exited_at.unwrap().nanos, 500_000_000);

    let w = h
        .tasks
        .wait(request(
            "default",
            WaitTaskRequest {
                container_id: c.id[..6].into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(w.into_inner().exit.unwrap().exit_code, 3);

    let list = h
        .tasks
        .list(request("default", ListTasksRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.tasks.len(), 1);
    assert_eq!(list.tasks[0].container_id, c.id);

    // Attaching to it is refused in Docker's words.
    let start = AttachRequest {
        item: Some(attach_request::Item::Start(AttachStart {
            container_id: "gone".into(),
            stdin: false,
        })),
    };
    let err = h
        .tasks
        .attach(request("default", tokio_stream::iter(vec![start])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("cannot attach to a stopped container"),
        "{err:?}"
    );

    // Without exit.json the exit code is 255, never "running".
    std::fs::remove_file(bundle.dir().join("exit.json")).unwrap();
    let t = h
        .tasks
        .get(request(
            "default",
            GetTaskRequest {
                container_id: "gone".into(),
            },
        ))
        .await
        .unwrap();
    let t = t.into_inner().task.unwrap();
    assert_eq!(
        (t.status, t.exit.unwrap().exit_code),
        (TaskStatus::Stopped as i32, 255)
    );

    let d = h
        .tasks
        .delete(request(
            "default",
            DeleteTaskRequest {
                container_id: "gone".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(d.into_inner().exit.unwrap().exit_code, 255);
    assert!(!bundle.exists());
    let err = h
        .tasks
        .delete(request(
            "default",
            DeleteTaskRequest {
                container_id: "gone".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_real_shim_runs_a_container_attached() {
    let shim = match shim_binary() {
        Ok(s) => s,
        Err(why) => return skip(why),
    };
    let mut h = Harness::start(Some(shim.clone())).await;
    let mounts = busybox_rootfs(h.dir.path());
    let image = ImageConfig {
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo hello; echo oops >&2; read x; echo got $x; exit 3".into(),
        ]),
        ..Default::default()
    };
    let mut cfg = config("busybox");
    cfg.open_stdin = true;
    cfg.stdin_once = true;
    let c = h.add_container("default", &id(0x44), "attached", image, cfg);

    let pid = h
        .runtime
        .create_task_with_mounts("default", &c, &mounts)
        .await
        .unwrap();
    let bundle = Bundle::new(&h.state(), "default", &c.id);
    assert!(
        bundle.socket().exists(),
        "{} exited 0 without creating the container or its socket",
        shim.display()
    );
    assert!(pid > 0);
    let t = h
        .tasks
        .get(request(
            "default",
            GetTaskRequest {
                container_id: "attached".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        t.into_inner().task.unwrap().status,
        TaskStatus::Created as i32
    );

    // Attach before start, as `run` does, so no output is lost.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(AttachRequest {
        item: Some(attach_request::Item::Start(AttachStart {
            container_id: "attached".into(),
            stdin: true,
        })),
    })
    .await
    .unwrap();
    let mut output = h
        .tasks
        .attach(request(
            "default",
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    h.tasks
        .start(request(
            "default",
            StartTaskRequest {
                container_id: "attached".into(),
            },
        ))
        .await
        .unwrap();
    tx.send(AttachRequest {
        item: Some(attach_request::Item::Stdin(b"world\n".to_vec())),
    })
    .await
    .unwrap();
    tx.send(AttachRequest {
        item: Some(attach_request::Item::CloseStdin(true)),
    })
    .await
    .unwrap();

    let (mut stdout, mut stderr, mut exit) = (Vec::new(), Vec::new(), None);
    while let Some(msg) = output.message().await.unwrap() {
        match msg.item {
            Some(attach_response::Item::Stdout(b)) => stdout.extend(b),
            Some(attach_response::Item::Stderr(b)) => stderr.extend(b),
            Some(attach_response::Item::Exit(e)) => exit = Some(e.exit_code),
            None => {}
        }
    }
    assert_eq!(String::from_utf8_lossy(&stdout), "hello\ngot world\n");
    assert_eq!(String::from_utf8_lossy(&stderr), "oops\n");
    assert_eq!(exit, Some(3));

    let w = h
        .tasks
        .wait(request(
            "default",
            WaitTaskRequest {
                container_id: "attached".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(w.into_inner().exit.unwrap().exit_code, 3);
    let t = h
        .tasks
        .get(request(
            "default",
            GetTaskRequest {
                container_id: "attached".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        t.into_inner().task.unwrap().status,
        TaskStatus::Stopped as i32
    );
    let d = h
        .tasks
        .delete(request(
            "default",
            DeleteTaskRequest {
                container_id: "attached".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(d.into_inner().exit.unwrap().exit_code, 3);
    assert!(!bundle.exists());
}

#[tokio::test]
async fn a_missing_command_fails_create_with_exit_code_127() {
    let shim = match shim_binary() {
        Ok(s) => s,
        Err(why) => return skip(why),
    };
    let h = Harness::start(Some(shim.clone())).await;
    let mounts = busybox_rootfs(h.dir.path());
    let image = ImageConfig {
        cmd: Some(vec!["no-such-command".into()]),
        ..Default::default()
    };
    let c = h.add_container("default", &id(0x55), "missing", image, config("busybox"));
    let bundle = Bundle::new(&h.state(), "default", &c.id);
    match h
        .runtime
        .create_task_with_mounts("default", &c, &mounts)
        .await
    {
        Ok(_) => panic!("a missing command was created"),
        Err(e) => {
            let status: tonic::Status = e.into();
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert_eq!(exit_code_of(&status), Some(127), "{status:?}");
            assert!(status.message().contains("no-such-command"), "{status:?}");
            assert!(!bundle.exists(), "a failed create leaves no bundle");
        }
    }
}

/// Runs an attached container to its end: (stdout, stderr, exit code).
async fn run_attached(h: &mut Harness, container: &str) -> (String, String, i32) {
    let start = AttachRequest {
        item: Some(attach_request::Item::Start(AttachStart {
            container_id: container.into(),
            stdin: false,
        })),
    };
    // Keep the request stream open until the output ends.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(start).await.unwrap();
    let mut output = h
        .tasks
        .attach(request(
            "default",
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    h.tasks
        .start(request(
            "default",
            StartTaskRequest {
                container_id: container.into(),
            },
        ))
        .await
        .unwrap();
    let (mut stdout, mut stderr, mut exit) = (Vec::new(), Vec::new(), -1);
    while let Some(msg) = output.message().await.unwrap() {
        match msg.item {
            Some(attach_response::Item::Stdout(b)) => stdout.extend(b),
            Some(attach_response::Item::Stderr(b)) => stderr.extend(b),
            Some(attach_response::Item::Exit(e)) => exit = e.exit_code,
            None => {}
        }
    }
    drop(tx);
    (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
        exit,
    )
}

#[tokio::test]
async fn the_spec_reaches_the_container() {
    let shim = match shim_binary() {
        Ok(s) => s,
        Err(why) => return skip(why),
    };
    let mut h = Harness::start(Some(shim)).await;
    let mounts = busybox_rootfs(h.dir.path());
    let image = ImageConfig {
        entrypoint: Some(vec!["sh".into(), "-c".into()]),
        env: Some(vec!["FROM_IMAGE=1".into()]),
        ..Default::default()
    };
    let mut cfg = config("busybox");
    cfg.cmd = vec!["id -u; id -g; hostname; echo $FROM_IMAGE $FLAG; pwd".into()];
    cfg.user = "nobody".into();
    cfg.hostname = "box".into();
    cfg.working_dir = "/tmp".into();
    cfg.env = vec!["FLAG=2".into()];
    let c = h.add_container("default", &id(0x66), "spec", image, cfg);
    h.runtime
        .create_task_with_mounts("default", &c, &mounts)
        .await
        .unwrap();
    assert!(Bundle::new(&h.state(), "default", &c.id).socket().exists());
    let (out, err, code) = run_attached(&mut h, "spec").await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("65534\n65534\nbox\n1 2\n/tmp\n", "", 0)
    );
    h.tasks
        .delete(request(
            "default",
            DeleteTaskRequest {
                container_id: "spec".into(),
            },
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_task_is_killed_waited_replaced_and_deleted() {
    let shim = match shim_binary() {
        Ok(s) => s,
        Err(why) => return skip(why),
    };
    let mut h = Harness::start(Some(shim)).await;
    let mounts = busybox_rootfs(h.dir.path());
    let image = ImageConfig {
        cmd: Some(vec!["sleep".into(), "100".into()]),
        ..Default::default()
    };
    let c = h.add_container("default", &id(0x77), "sleeper", image, config("busybox"));
    let bundle = Bundle::new(&h.state(), "default", &c.id);
    h.runtime
        .create_task_with_mounts("default", &c, &mounts)
        .await
        .unwrap();
    assert!(bundle.socket().exists());
    // One task per container.
    let err = h
        .runtime
        .create_task_with_mounts("default", &c, &mounts)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let get = |h: &mut Harness| {
        let mut tasks = h.tasks.clone();
        async move {
            tasks
                .get(request(
                    "default",
                    GetTaskRequest {
                        container_id: "sleeper".into(),
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .task
                .unwrap()
        }
    };
    let started = h
        .tasks
        .start(request(
            "default",
            StartTaskRequest {
                container_id: "sleeper".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let t = get(&mut h).await;
    assert_eq!((t.status, t.pid), (TaskStatus::Running as i32, started.pid));
    assert!(std::path::Path::new(&format!("/proc/{}", t.pid)).exists());

    // Neither the task nor the container goes while it runs.
    let err = h
        .tasks
        .delete(request(
            "default",
            DeleteTaskRequest {
                container_id: "sleeper".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = h
        .containers
        .delete(request(
            "default",
            DeleteContainerRequest {
                id: "sleeper".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .starts_with("You cannot remove a running container"),
        "{err:?}"
    );

    h.tasks
        .kill(request(
            "default",
            berth_api::tasks::v1::KillTaskRequest {
                container_id: "sleeper".into(),
                signal: 9,
                all: false,
            },
        ))
        .await
        .unwrap();
    let w = h
        .tasks
        .wait(request(
            "default",
            WaitTaskRequest {
                container_id: "sleeper".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit.unwrap().exit_code, 137);
    let t = get(&mut h).await;
    assert_eq!(t.status, TaskStatus::Stopped as i32);
    assert_eq!(t.exit.unwrap().exit_code, 137);

    // A stopped task makes room for a new one (`start` of an exited container).
    h.runtime
        .create_task_with_mounts("default", &c, &mounts)
        .await
        .unwrap();
    assert_eq!(get(&mut h).await.status, TaskStatus::Created as i32);

    // A created task that never ran can be deleted.
    h.tasks
        .delete(request(
            "default",
            DeleteTaskRequest {
                container_id: "sleeper".into(),
            },
        ))
        .await
        .unwrap();
    assert!(!bundle.exists());
}
