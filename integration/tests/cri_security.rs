//! The Kubernetes CRI's container security and log rotation (issue 15, part sec): critest's
//! specs for ReopenContainerLog, mount propagation, seccomp profiles and capabilities, and
//! direct checks of each as crictl (or a small gRPC call) drives them — a log moved away and
//! reopened, an rshared bind whose host-side submount shows in the container, a Localhost
//! profile that blocks `mkdir`, a container without any capability, `stopp` of an unknown
//! pod — against a berthd with `[cri]` (see `berth_integration::cri`).

use berth_api::cri::v1 as cri;
use berth_integration::cri::{cri, text, Cri, BUSYBOX};
use berth_integration::{or_skip, wait_for, TempDir};
use std::path::Path;
use std::time::Duration;

/// Writes a pod config for crictl; `logs` is its log directory.
fn pod_json(dir: &Path, name: &str, logs: &Path) -> String {
    let pod = serde_json::json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "namespace": "berth-sec", "attempt": 1},
        "log_directory": logs.display().to_string(),
        "linux": {}
    });
    let path = dir.join(format!("{name}-pod.json"));
    std::fs::write(&path, pod.to_string()).unwrap();
    path.display().to_string()
}

/// Writes a container config running `script` in busybox's sh, with `extra` merged in.
fn container_json(dir: &Path, name: &str, script: &str, extra: serde_json::Value) -> String {
    let mut c = serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": BUSYBOX},
        "command": ["sh", "-c", script],
        "log_path": format!("{name}.log"),
        "linux": {}
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    let path = dir.join(format!("{name}-ctr.json"));
    std::fs::write(&path, c.to_string()).unwrap();
    path.display().to_string()
}

/// A pod in `tmp` and one started container of it; (pod id, container id).
fn pod_with(
    c: &Cri,
    tmp: &Path,
    name: &str,
    script: &str,
    extra: serde_json::Value,
) -> (String, String) {
    c.ok(&["pull", BUSYBOX]);
    let logs = tmp.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let pod_file = pod_json(tmp, name, &logs);
    let pod = c.ok(&["runp", &pod_file]).trim().to_string();
    let ctr_file = container_json(tmp, name, script, extra);
    let ctr = c
        .ok(&["create", &pod, &ctr_file, &pod_file])
        .trim()
        .to_string();
    c.ok(&["start", &ctr]);
    (pod, ctr)
}

fn remove_pod(c: &Cri, pod: &str) {
    c.ok(&["stopp", pod]);
    c.ok(&["rmp", pod]);
}

/// critest with `focus`: every spec it selects passes, and there are `expected` of them.
fn critest_passes(c: &Cri, focus: &str, expected: usize) {
    let t = c.critest_passes(&[&format!("--ginkgo.focus={focus}")]);
    assert!(t.contains(&format!("Ran {expected} of ")), "{t}");
}

#[test]
fn critest_reopen_container_log() {
    let c = or_skip!(cri());
    critest_passes(c, "should support reopening container log", 1);
}

#[test]
fn critest_mount_propagation() {
    let c = or_skip!(cri());
    critest_passes(c, "Container Mount Propagation", 3);
}

#[test]
fn critest_seccomp_and_capabilities() {
    let c = or_skip!(cri());
    critest_passes(
        c,
        "SeccompProfilePath|runtime should support .* capabilit",
        11,
    );
}

#[test]
fn stopping_an_unknown_pod_succeeds() {
    let c = or_skip!(cri());
    let out = c.crictl(&["stopp", "0123456789abcdef0123456789abcdef"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// ReopenContainerLog over gRPC, as the kubelet calls it (crictl has no verb for it).
fn reopen_log(c: &Cri, id: &str) -> Result<(), tonic::Status> {
    let socket = c.socket.clone();
    let id = id.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let channel = berth_core::grpc::channel(&format!("unix://{}", socket.display()))
            .map_err(tonic::Status::unavailable)?;
        cri::runtime_service_client::RuntimeServiceClient::new(channel)
            .reopen_container_log(cri::ReopenContainerLogRequest { container_id: id })
            .await
            .map(|_| ())
    })
}

#[test]
fn a_rotated_log_is_reopened() {
    let c = or_skip!(cri());
    let tmp = TempDir::new("berth-it-cri-reopen");
    let (pod, ctr) = pod_with(
        c,
        tmp.path(),
        "rotate",
        "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.05; done",
        serde_json::json!({}),
    );
    let log = tmp.path().join("logs/rotate.log");
    wait_for("the first lines", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("line 2"))
    });
    let moved = tmp.path().join("logs/rotate.log.1");
    std::fs::rename(&log, &moved).unwrap();
    reopen_log(c, &ctr).expect("ReopenContainerLog");
    // Answered once the shim reopened: the path exists at once, the moved file is complete
    // and the path gets the next lines.
    let old_len = std::fs::metadata(&moved).unwrap().len();
    assert!(
        log.exists(),
        "the log path is back after ReopenContainerLog"
    );
    wait_for(
        "three lines in the new file",
        Duration::from_secs(10),
        || std::fs::read_to_string(&log).is_ok_and(|t| t.matches(" stdout F line ").count() >= 3),
    );
    assert_eq!(
        std::fs::metadata(&moved).unwrap().len(),
        old_len,
        "the moved file stopped growing"
    );
    c.ok(&["stop", &ctr]);
    let e = reopen_log(c, &ctr).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let e = reopen_log(c, "no-such-container").unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    remove_pod(c, &pod);
}

#[test]
fn a_localhost_seccomp_profile_blocks_mkdir() {
    let c = or_skip!(cri());
    let tmp = TempDir::new("berth-it-cri-seccomp");
    let profile = tmp.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let sc = |p: &str| {
        serde_json::json!({"linux": {"security_context": {
            "seccomp": {"profile_type": 2, "localhost_ref": p}
        }}})
    };
    let (pod, ctr) = pod_with(
        c,
        tmp.path(),
        "seccomp",
        "sleep 1000",
        sc(&profile.display().to_string()),
    );
    let out = c.crictl(&["exec", "-s", &ctr, "mkdir", "/tmp/x"]);
    assert!(!out.status.success(), "mkdir was allowed: {}", text(&out));
    assert!(
        text(&out).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
    c.ok(&["exec", "-s", &ctr, "touch", "/tmp/y"]);

    // A missing profile is refused at create, naming the file.
    let logs = tmp.path().join("logs");
    let pod_file = pod_json(tmp.path(), "seccomp", &logs);
    let missing = tmp.path().join("absent.json").display().to_string();
    let bad = container_json(tmp.path(), "missing", "true", sc(&missing));
    let out = c.crictl(&["create", &pod, &bad, &pod_file]);
    assert!(!out.status.success());
    assert!(text(&out).contains("absent.json"), "{}", text(&out));
    remove_pod(c, &pod);
}

#[test]
fn a_container_without_capabilities_runs() {
    let c = or_skip!(cri());
    let tmp = TempDir::new("berth-it-cri-caps");
    let (pod, ctr) = pod_with(
        c,
        tmp.path(),
        "nocaps",
        "grep Cap /proc/self/status; sleep 1000",
        serde_json::json!({"linux": {"security_context": {
            "capabilities": {"drop_capabilities": ["ALL"]}
        }}}),
    );
    let log = tmp.path().join("logs/nocaps.log");
    wait_for(
        "its capabilities in the log",
        Duration::from_secs(10),
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("CapAmb")),
    );
    let t = std::fs::read_to_string(&log).unwrap();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            t.lines()
                .any(|l| l.contains(&format!("{set}:\t0000000000000000"))),
            "{set} not empty: {t}"
        );
    }
    // What is exec'd in it has none either.
    let status = c.ok(&["exec", "-s", &ctr, "cat", "/proc/self/status"]);
    assert!(status.contains("CapBnd:\t0000000000000000"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    remove_pod(c, &pod);
}

/// A mount point on the host: `dir` bound on itself, with `propagation`
/// (`--make-rshared`, as the kubelet's volumes are, or `--make-rprivate`); unmounted (with
/// what is under it) on drop.
struct HostMount(std::path::PathBuf);

impl HostMount {
    fn new(dir: &Path, propagation: &str) -> HostMount {
        let path = dir.display().to_string();
        run("mount", &["--bind", &path, &path]);
        run("mount", &[propagation, &path]);
        HostMount(dir.to_path_buf())
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.0)
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
}

#[test]
fn an_rshared_bind_propagates_both_ways() {
    let c = or_skip!(cri());
    let tmp = TempDir::new("berth-it-cri-propagation");
    let volume = tmp.path().join("volume");
    let from_host = tmp.path().join("from-host");
    std::fs::create_dir_all(volume.join("sub")).unwrap();
    std::fs::create_dir_all(&from_host).unwrap();
    std::fs::write(from_host.join("flag"), "host").unwrap();
    let shared = HostMount::new(&volume, "--make-rshared");
    let v = volume.display().to_string();
    let (pod, ctr) = pod_with(
        c,
        tmp.path(),
        "propagation",
        "sleep 1000",
        serde_json::json!({
            "mounts": [{"host_path": v, "container_path": "/vol", "propagation": 2}],
            "linux": {"security_context": {"privileged": true}}
        }),
    );
    let status = c.json(&["inspect", &ctr]);
    assert_eq!(
        status["status"]["mounts"][0]["propagation"], "PROPAGATION_BIDIRECTIONAL",
        "{status}"
    );
    // Host → container: a mount made on the host after the start shows inside.
    run(
        "mount",
        &[
            "--bind",
            &from_host.display().to_string(),
            &volume.join("sub").display().to_string(),
        ],
    );
    let out = c.ok(&["exec", "-s", &ctr, "cat", "/vol/sub/flag"]);
    assert_eq!(out.trim(), "host");
    // Container → host.
    c.ok(&[
        "exec",
        "-s",
        &ctr,
        "sh",
        "-c",
        "mkdir -p /vol/back && mount -t tmpfs tmpfs /vol/back && echo ctr > /vol/back/f",
    ]);
    wait_for(
        "the container's mount on the host",
        Duration::from_secs(5),
        || std::fs::read_to_string(volume.join("back/f")).is_ok_and(|t| t.trim() == "ctr"),
    );
    // A shared bind of a private mount could not propagate back: refused, naming the mount.
    let private = tmp.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    let private_mount = HostMount::new(&private, "--make-rprivate");
    let logs = tmp.path().join("logs");
    let pod_file = pod_json(tmp.path(), "propagation", &logs);
    let refused = container_json(
        tmp.path(),
        "refused",
        "true",
        serde_json::json!({"mounts": [{"host_path": private.display().to_string(),
            "container_path": "/p", "propagation": 2}]}),
    );
    let out = c.crictl(&["create", &pod, &refused, &pod_file]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not a shared mount"), "{}", text(&out));
    drop(private_mount);
    remove_pod(c, &pod);
    drop(shared);
}
