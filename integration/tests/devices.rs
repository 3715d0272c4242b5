//! Host devices in containers (issues 14 and 15): `berth run --device HOST[:CONTAINER[:PERMS]]`
//! gives the container the host's node at its own path with the cgroup permissions asked for;
//! a host folder gives every device under it; a device not given stays unusable even when the
//! container makes its node; a missing path, a regular file and bad permissions are refused
//! with words naming them; the Docker gateway takes HostConfig.Devices and inspect shows them;
//! the CRI's `devices` reach a pod's container through crictl.

use berth_integration::cri::{cri, text, BUSYBOX};
use berth_integration::gateway::{docker_clis, Gateway};
use berth_integration::{busybox_archive, or_skip, Berthd, TempDir};
use std::path::Path;
use std::sync::OnceLock;

/// One berthd with busybox imported as `busybox:latest`, shared by the CLI tests.
fn daemon() -> &'static Berthd {
    static D: OnceLock<Berthd> = OnceLock::new();
    D.get_or_init(|| {
        let d = Berthd::start("");
        d.ok(&["image", "import", busybox_archive().to_str().unwrap()]);
        d
    })
}

/// `run --rm FLAGS busybox sh -c SCRIPT`: (exit code, stdout+stderr).
fn run(flags: &[&str], script: &str) -> (i32, String) {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend(["busybox:latest", "sh", "-c", script]);
    let o = daemon().berth(&args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.code().unwrap_or(-1), out)
}

#[test]
fn a_given_device_is_read_at_its_container_path() {
    let (code, out) = run(
        &["--device", "/dev/zero:/dev/myzero"],
        "head -c 4 /dev/myzero | od -An -tx1; stat -c '%F %t,%T' /dev/myzero",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["00 00 00 00", "character special file 1,5"],
        "{out}"
    );
    // Privileged (every host device already): the mapping adds its own path.
    let (code, out) = run(
        &["--privileged", "--device", "/dev/zero:/dev/myzero"],
        "head -c 2 /dev/myzero | od -An -tx1",
    );
    assert_eq!((code, out.trim()), (0, "00 00"), "{out}");
}

#[test]
fn a_folder_gives_every_device_under_it() {
    assert!(
        Path::new("/dev/net/tun").exists(),
        "the host has no /dev/net/tun"
    );
    let (code, out) = run(
        &["--device", "/dev/net:/dev/hostnet"],
        "stat -c '%F %t,%T' /dev/hostnet/tun",
    );
    assert_eq!(
        (code, out.trim()),
        (0, "character special file a,c8"),
        "{out}"
    );
}

#[test]
fn permissions_limit_what_the_container_does_with_the_device() {
    // A device outside the default allowlist (the pm_qos latency, harmless to read and write),
    // read-only: reading works, opening it for writing is refused by the device cgroup.
    let (code, out) = run(
        &["--device", "/dev/cpu_dma_latency:/dev/rlat:r"],
        "head -c 4 /dev/rlat | wc -c; echo 0 > /dev/rlat",
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.starts_with("4\n"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let (code, out) = run(
        &["--device", "/dev/cpu_dma_latency:/dev/rwlat:rw"],
        "printf '\\0\\0\\0\\0' > /dev/rwlat && echo written",
    );
    assert_eq!((code, out.as_str()), (0, "written\n"), "{out}");
}

#[test]
fn a_device_not_given_is_not_usable() {
    // /dev/fuse is not there; a node the container makes for it cannot be opened.
    let (code, out) = run(
        &[],
        "test -e /dev/fuse && echo present; mknod /dev/myfuse c 10 229 && cat /dev/myfuse",
    );
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("present"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
}

#[test]
fn bad_devices_are_refused_by_name() {
    let tmp = TempDir::new("berth-it-devices");
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let file = file.display().to_string();
    for (device, words) in [
        ("/dev/no-such-device".to_string(), "\"/dev/no-such-device\""),
        (format!("{file}:/dev/f"), "not a character or block device"),
        (
            "/dev/zero:/dev/z:rx".to_string(),
            "invalid device cgroup permissions",
        ),
        ("/dev/zero:relative".to_string(), "must be an absolute path"),
    ] {
        let (code, out) = daemon().fails(&["create", "--device", &device, "busybox:latest"]);
        assert_eq!(code, 125, "{device}: {out}");
        assert!(out.contains(words), "{device}: {out}");
    }
}

#[test]
fn inspect_shows_the_devices() {
    let d = daemon();
    let id = d.ok(&[
        "create",
        "--device",
        "/dev/zero:/dev/z:rw",
        "busybox:latest",
    ]);
    let shown: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", id.trim()])).unwrap();
    assert_eq!(
        shown[0]["HostConfig"]["Devices"],
        serde_json::json!([
            {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z", "CgroupPermissions": "rw"}
        ])
    );
    d.ok(&["rm", id.trim()]);
}

#[test]
fn the_gateway_takes_and_shows_host_config_devices() {
    let clis = or_skip!(docker_clis());
    let g = or_skip!(Gateway::start());
    for cli in clis {
        let name = format!("dev-{}", cli.display().to_string().len());
        let out = g.ok(
            &cli,
            &[
                "run",
                "--name",
                &name,
                "--device",
                "/dev/zero:/dev/gwzero:r",
                "--device",
                "/dev/null",
                &g.img,
                "sh",
                "-c",
                "head -c 2 /dev/gwzero | od -An -tx1",
            ],
        );
        assert_eq!(out.trim(), "00 00", "{out}");
        let shown = g.inspect(&cli, &name, "{{json .HostConfig.Devices}}");
        let shown: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
        assert_eq!(
            shown,
            serde_json::json!([
                {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/gwzero", "CgroupPermissions": "r"},
                {"PathOnHost": "/dev/null", "PathInContainer": "/dev/null", "CgroupPermissions": "rwm"}
            ])
        );
        g.ok(&cli, &["rm", &name]);
        let err = g.fails(&cli, &["create", "--device", "/dev/no-such-device", &g.img]);
        assert!(err.contains("/dev/no-such-device"), "{err}");
    }
}

#[test]
fn a_cri_container_reads_its_device() {
    let c = or_skip!(cri());
    let tmp = TempDir::new("berth-it-cri-devices");
    c.ok(&["pull", BUSYBOX]);
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let pod = serde_json::json!({
        "metadata": {"name": "devices", "uid": "uid-devices", "namespace": "berth-dev", "attempt": 1},
        "log_directory": logs.display().to_string(),
        "linux": {}
    });
    let pod_file = tmp.path().join("pod.json");
    std::fs::write(&pod_file, pod.to_string()).unwrap();
    let pod_file = pod_file.display().to_string();
    let ctr = |name: &str, host: &str| {
        let c = serde_json::json!({
            "metadata": {"name": name},
            "image": {"image": BUSYBOX},
            "command": ["sleep", "1000"],
            "log_path": format!("{name}.log"),
            "devices": [{"container_path": "/dev/podzero", "host_path": host, "permissions": "mrw"}],
            "linux": {}
        });
        let path = tmp.path().join(format!("{name}.json"));
        std::fs::write(&path, c.to_string()).unwrap();
        path.display().to_string()
    };
    let pod_id = c.ok(&["runp", &pod_file]).trim().to_string();
    let good = ctr("reader", "/dev/zero");
    let id = c
        .ok(&["create", &pod_id, &good, &pod_file])
        .trim()
        .to_string();
    c.ok(&["start", &id]);
    let out = c.ok(&[
        "exec",
        "-s",
        &id,
        "sh",
        "-c",
        "head -c 3 /dev/podzero | od -An -tx1",
    ]);
    assert_eq!(out.trim(), "00 00 00", "{out}");

    let bad = ctr("missing", "/dev/no-such-device");
    let out = c.crictl(&["create", &pod_id, &bad, &pod_file]);
    assert!(!out.status.success());
    assert!(text(&out).contains("/dev/no-such-device"), "{}", text(&out));
    c.ok(&["stopp", &pod_id]);
    c.ok(&["rmp", &pod_id]);
}
