//! End to end: a real registry, a real berthd, real containers, through the `berth` CLI.

use berth_integration::{or_skip, Berthd, Engine, Registry};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One registry (busybox, also as ubuntu:14.04) and one berthd shared by the tests of this
/// file; None when a tool is missing.
fn env() -> Option<&'static Engine> {
    static E: OnceLock<Option<Engine>> = OnceLock::new();
    E.get_or_init(|| Engine::with_names(&["busybox:latest", "ubuntu:14.04"]))
        .as_ref()
}

fn run_out(e: &Engine, args: &[&str]) -> (i32, String, String) {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(args);
    let o = e.d.berth(&a);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn pull_list_and_inspect() {
    let e = or_skip!(env());
    let r = format!("{}/ubuntu:14.04", e.reg.addr);
    e.d.ok(&["pull", &r]);
    let ls = e.d.ok(&["image", "ls"]);
    assert!(ls.lines().next().unwrap().starts_with("REPOSITORY"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.contains("ubuntu") && l.contains("14.04")),
        "{ls}"
    );
    let ids = e.d.ok(&["images", "-q"]);
    assert!(
        ids.lines()
            .all(|l| l.len() == 12 && l.bytes().all(|b| b.is_ascii_hexdigit())),
        "{ids}"
    );
    let js: serde_json::Value = serde_json::from_str(&e.d.ok(&["image", "inspect", &r])).unwrap();
    let i = &js[0];
    assert_eq!(i["Config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert!(i["Id"].as_str().unwrap().starts_with("sha256:"));
    // both tags name the same image, so both are its RepoTags, as Docker shows them
    let tags = i["RepoTags"].as_array().unwrap();
    assert!(
        tags.contains(&serde_json::json!(r)) && tags.contains(&serde_json::json!(e.img)),
        "{tags:?}"
    );
    assert!(i["RepoDigests"][0].as_str().unwrap().contains("@sha256:"));
    assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    // both names share one image id, and the layer was unpacked once
    let id2: serde_json::Value =
        serde_json::from_str(&e.d.ok(&["image", "inspect", &e.img])).unwrap();
    assert_eq!(id2[0]["Id"], i["Id"]);
}

#[test]
fn bad_references_and_missing_images_are_clear_errors() {
    let e = or_skip!(env());
    let (code, err) = e.d.fails(&["pull", "UPPER/Case::bad"]);
    assert_eq!(code, 125);
    assert!(err.contains("invalid reference format"), "{err}");
    let (_, err) =
        e.d.fails(&["pull", &format!("{}/nothing-here:1", e.reg.addr)]);
    assert!(err.contains("not found"), "{err}");
    let (_, err) = e.d.fails(&["image", "inspect", "no-such-image"]);
    assert!(err.contains("No such image"), "{err}");
    let port = berth_integration::free_port();
    let (_, err) = e.d.fails(&["pull", &format!("127.0.0.1:{port}/x:1")]);
    assert!(
        err.to_lowercase().contains("127.0.0.1") && err.contains("reach"),
        "{err}"
    );
}

#[test]
fn run_relays_output_and_exit_codes() {
    let e = or_skip!(env());
    assert_eq!(
        run_out(e, &[&e.img, "echo", "hello-berth"]).1,
        "hello-berth\n"
    );
    assert_eq!(run_out(e, &[&e.img, "sh", "-c", "exit 7"]).0, 7);
    let (code, _, err) = run_out(e, &[&e.img, "/no/such/binary"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("/no/such/binary"), "{err}");
    let (code, _, err) = run_out(e, &[&e.img, "nosuchcommand"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("executable file not found"), "{err}");
    let (code, _, err) = run_out(e, &[&e.img, "/etc/passwd"]);
    assert_eq!(code, 126, "{err}");
    let (_, out, err) = run_out(e, &[&e.img, "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(out, "out\n");
    assert!(err.contains("err"), "{err}");
}

#[test]
fn containers_are_isolated() {
    let e = or_skip!(env());
    assert_eq!(run_out(e, &[&e.img, "sh", "-c", "echo $$"]).1, "1\n");
    assert_eq!(
        run_out(e, &["--hostname", "myhost", &e.img, "hostname"]).1,
        "myhost\n"
    );
    let probe = format!(
        "test -e {} && echo leaked || echo isolated",
        e.d.dir.path().display()
    );
    assert_eq!(run_out(e, &[&e.img, "sh", "-c", &probe]).1, "isolated\n");
    // only sh (pid 1) and ps itself: ps writes to a file so no pipeline races with it
    let ps = run_out(
        e,
        &[&e.img, "sh", "-c", "ps -o pid,comm > /tmp/ps; cat /tmp/ps"],
    )
    .1;
    assert_eq!(
        ps.lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>(),
        ["1 sh", "2 ps"],
        "{ps}"
    );
    // its own network namespace: on the default bridge lo and eth0, with none only lo
    assert_eq!(
        run_out(e, &[&e.img, "sh", "-c", "ls /sys/class/net"]).1,
        "eth0\nlo\n"
    );
    assert_eq!(
        run_out(
            e,
            &["--network", "none", &e.img, "sh", "-c", "ls /sys/class/net"]
        )
        .1,
        "lo\n"
    );
    // the default capability set has no CAP_SYS_ADMIN: mounting fails
    assert_ne!(
        run_out(e, &[&e.img, "mount", "-t", "tmpfs", "x", "/mnt"]).0,
        0
    );
    // /proc/kcore is masked, /proc/sys is read-only
    assert_ne!(
        run_out(
            e,
            &[&e.img, "sh", "-c", "echo 1 > /proc/sys/kernel/domainname"]
        )
        .0,
        0
    );
    // a device node made inside cannot open the host's disk
    let (code, _, _) = run_out(
        e,
        &[
            &e.img,
            "sh",
            "-c",
            "mknod /tmp/sda b 8 0 && head -c1 /tmp/sda",
        ],
    );
    assert_ne!(code, 0);
    // As with Docker: a seccomp filter, no_new_privs only when asked for.
    let status = run_out(
        e,
        &[
            &e.img,
            "grep",
            "-E",
            "NoNewPrivs|Seccomp:",
            "/proc/self/status",
        ],
    )
    .1;
    assert_eq!(status, "NoNewPrivs:\t0\nSeccomp:\t2\n");
    let args = [
        "--security-opt",
        "no-new-privileges",
        &e.img,
        "grep",
        "NoNewPrivs",
        "/proc/self/status",
    ];
    assert_eq!(run_out(e, &args).1, "NoNewPrivs:\t1\n");
}

#[test]
fn env_workdir_user_and_stdin() {
    let e = or_skip!(env());
    assert_eq!(
        run_out(e, &["-e", "V=42", &e.img, "sh", "-c", "echo v=$V"]).1,
        "v=42\n"
    );
    assert_eq!(run_out(e, &["-w", "/tmp", &e.img, "pwd"]).1, "/tmp\n");
    assert_eq!(
        run_out(e, &["-w", "/new/dir", &e.img, "pwd"]).1,
        "/new/dir\n"
    );
    assert_eq!(
        run_out(e, &["--user", "nobody", &e.img, "id", "-u"]).1,
        "65534\n"
    );
    assert_eq!(
        run_out(e, &["--user", "1234:5678", &e.img, "id"]).1.trim(),
        "uid=1234 gid=5678 groups=5678"
    );
    assert_eq!(
        run_out(e, &["--entrypoint", "echo", &e.img, "a", "b"]).1,
        "a b\n"
    );
    let mut c = e.d.cmd();
    c.args(["run", "--rm", "-i", &e.img, "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "piped\n");
    // writes stay in the container's own layer
    e.d.ok(&["run", "--rm", &e.img, "touch", "/scratch"]);
    assert_eq!(
        run_out(
            e,
            &[
                &e.img,
                "sh",
                "-c",
                "test -e /scratch && echo dirty || echo clean"
            ]
        )
        .1,
        "clean\n"
    );
}

#[test]
fn cgroup_limits_hold() {
    let e = or_skip!(env());
    let mem = run_out(e, &["--memory", "32m", &e.img, "sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"]).1;
    assert_eq!(mem.trim(), "33554432");
    let (code, _, _) = run_out(
        e,
        &[
            "--memory",
            "32m",
            &e.img,
            "sh",
            "-c",
            "dd if=/dev/zero bs=1M count=200 | cat >/dev/shm/x; tail /dev/zero",
        ],
    );
    assert_eq!(code, 137);
    let pids = run_out(
        e,
        &[
            "--pids-limit",
            "8",
            &e.img,
            "sh",
            "-c",
            "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
        ],
    )
    .1;
    assert_eq!(pids.trim(), "8");
    let cpu = run_out(
        e,
        &[
            "--cpus",
            "0.5",
            &e.img,
            "sh",
            "-c",
            "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        ],
    )
    .1;
    assert!(
        cpu.trim() == "50000" || cpu.starts_with("50000 100000"),
        "{cpu}"
    );
}

#[test]
fn a_terminal_with_dash_t() {
    let e = or_skip!(env());
    if let Some(why) = berth_integration::missing_tool(&["script"]) {
        return berth_integration::skip(why);
    }
    let cmd = format!(
        "{} --address unix://{} run -it --rm {} sh",
        berth_integration::bin_dir().join("berth").display(),
        e.d.sock.display(),
        e.img
    );
    let mut c = Command::new("timeout");
    c.args(["30", "script", "-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo inside-$((1+1)); tty; exit\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("inside-2"), "{out}");
    assert!(out.contains("/dev/pts/0"), "{out}");
}

#[test]
fn a_blob_with_the_wrong_digest_is_refused() {
    let _e = or_skip!(env());
    let reg = Registry::start().unwrap();
    reg.push_busybox("corrupt:1");
    let r = format!("{}/corrupt:1", reg.addr);
    // find the layer through the registry's API and swap its bytes on disk
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{r}"),
        ])
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let data = reg.blob_data(&layer);
    let len = std::fs::metadata(&data).unwrap().len() as usize;
    std::fs::write(&data, vec![b'x'; len]).unwrap();
    let d = Berthd::start("");
    let (code, err) = d.fails(&["pull", &r]);
    assert_eq!(code, 125);
    assert!(err.contains("digest"), "{err}");
    let hex = layer.trim_start_matches("sha256:");
    assert!(
        !d.root()
            .join("image/content/blobs/sha256")
            .join(hex)
            .exists(),
        "a corrupt blob became visible"
    );
    assert!(!d.ok(&["images"]).contains("corrupt"));
}

#[test]
fn import_an_oci_archive_and_run_it() {
    let _e = or_skip!(env());
    let d = Berthd::start("");
    let archive = berth_integration::busybox_archive();
    let out = d.ok(&["image", "import", archive.to_str().unwrap()]);
    assert!(out.contains("busybox:latest"), "{out}");
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "echo", "imported"]),
        "imported\n"
    );
}
