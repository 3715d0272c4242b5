//! What the runtime's integration tests share: the shim to run, a busybox rootfs, a runtime
//! in a temporary folder served over its own socket, container records put in without the
//! image service, and the cleanup of what a test leaves running.

// Each test file uses its own part of the harness.
#![allow(dead_code)]

pub use berth_core::testing::skip;

use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::containers::v1::{Container, ContainerConfig};
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_core::config::RuntimeConfig;
use berth_core::grpc::channel;
use berth_runtime::bundle::RootfsMount;
use berth_runtime::spec::{self, ImageConfig};
use berth_runtime::Runtime;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::Channel;

/// The shim to test against (`$BERTH_SHIM`, or `berth-shim` in the target folder), or why
/// there is none.
pub fn shim_binary() -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root: containers need namespaces and cgroups".into());
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err("no /bin/busybox for the test rootfs (Debian package busybox-static)".into());
    }
    let path = match std::env::var_os("BERTH_SHIM") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("berth-shim"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no shim at {} (run `cargo build -p berth-shim`, or set BERTH_SHIM)",
            path.display()
        ))
    }
}

/// A rootfs folder with busybox as `sh` and the applets the tests call, bind-mounted the way
/// the copy snapshotter does it.
pub fn busybox_rootfs(dir: &Path) -> Vec<RootfsMount> {
    let root = dir.join("rootfs-src");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let applets = [
        "sh", "echo", "cat", "sleep", "ls", "true", "false", "id", "hostname",
    ];
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    vec![RootfsMount {
        typ: "bind".into(),
        source: root.display().to_string(),
        options: vec!["rbind".into(), "rw".into()],
    }]
}

/// Kills whatever shims and inits a test left in the state folder `state`, so a failed test
/// leaves no container behind.
pub fn kill_leftovers(state: &Path) {
    for ns in std::fs::read_dir(state.join("tasks"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for bundle in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            // An init that has exited (exit.json) may have had its pid reused.
            let exited = bundle.path().join("exit.json").exists();
            for file in ["init.pid", "shim.pid"] {
                if exited && file == "init.pid" {
                    continue;
                }
                let pid = std::fs::read_to_string(bundle.path().join(file))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
                if let Some(pid) = pid.filter(|p| *p > 1) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// A runtime in `dir` (root `dir/root`, state `dir/s`) whose Images and Snapshots channels
/// point at a socket nobody listens on.
pub fn open_runtime(dir: &Path, shim: Option<PathBuf>) -> Arc<Runtime> {
    let nobody = format!("unix://{}", dir.join("nobody-listens.sock").display());
    Runtime::open(
        &dir.join("root"),
        &dir.join("s"),
        RuntimeConfig {
            shim,
            log_max_size: 1 << 20,
            ..Default::default()
        },
        channel(&nobody).unwrap(),
        channel(&nobody).unwrap(),
    )
    .unwrap()
}

/// The Containers and Tasks services of `runtime` served on `dir/runtime.sock`: the server
/// and clients of both.
pub fn serve(
    runtime: &Arc<Runtime>,
    dir: &Path,
) -> (
    tokio::task::JoinHandle<()>,
    ContainersClient<Channel>,
    TasksClient<Channel>,
) {
    let (containers, tasks) = runtime.services();
    let socket = dir.join("runtime.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(containers)
            .add_service(tasks)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    let ch = channel(&format!("unix://{}", socket.display())).unwrap();
    (
        server,
        ContainersClient::new(ch.clone()),
        TasksClient::new(ch),
    )
}

/// Stores a container record of busybox the way Containers.Create would, without the image
/// service: its spec built from `config` and `image`.
pub fn store_container(
    runtime: &Runtime,
    ns: &str,
    id: &str,
    name: &str,
    image: &ImageConfig,
    config: ContainerConfig,
) -> Container {
    let s = spec::build(id, ns, &config, image, &spec::Options::from_host(1 << 20)).unwrap();
    let c = Container {
        id: id.to_string(),
        name: name.to_string(),
        image: "docker.io/library/busybox:latest".into(),
        config: Some(config),
        spec: serde_json::to_vec(&s).unwrap(),
        snapshotter: "native".into(),
        snapshot_key: id.to_string(),
        created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        ..Default::default()
    };
    runtime.store().create(ns, &c).unwrap();
    c
}
