//! A container's files and settings through the gateway with Debian's docker CLI 20.10
//! (`/usr/bin/docker`) and through the `berth` CLI, which must agree: `diff`, `export`, `cp`
//! both ways (running and stopped containers, `-` for a tar), `rename` (and its conflict),
//! `update` (checked in the container's cgroup files); and a hostile tar PUT with curl that
//! lands nothing outside the container.

use berth_integration::gateway::Gateway;
use berth_integration::{or_skip, skip, wait_for, Berthd, TempDir};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const DOCKER: &str = "/usr/bin/docker";

fn gateway() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(Gateway::start).as_ref()
}

/// A running container `name` with a file added, one deleted, and sleeping.
fn busy_container(g: &Gateway, name: &str) {
    g.d.run_d(&[
        "--name",
        name,
        &g.img,
        "sh",
        "-c",
        "touch /tmp/x; rm /etc/group; exec sleep 1000",
    ]);
    wait_for("the container's changes", Duration::from_secs(10), || {
        g.d.ok(&["diff", name]).contains("A /tmp/x")
    });
}

fn cli() -> &'static Path {
    Path::new(DOCKER)
}

fn docker_cli() -> Option<&'static Gateway> {
    if !Path::new(DOCKER).exists() {
        skip("/usr/bin/docker is missing (apt-get install docker.io)");
        return None;
    }
    gateway()
}

fn tar_names(path: &Path) -> String {
    let o = Command::new("tar").arg("tf").arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The limits a running container's cgroup has: (memory bytes, pids.max) as the files say.
fn cgroup_limits(d: &Berthd, name: &str) -> (String, String) {
    let pid = d.ok(&["inspect", "--format", "{{.State.Pid}}", name]);
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
    let path_of = |controller: &str| {
        cgroups.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctl.split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
    };
    let read = |p: String| std::fs::read_to_string(p).unwrap().trim().to_string();
    match (path_of("memory"), path_of("pids")) {
        (Some(m), Some(p)) => (
            read(format!("/sys/fs/cgroup/memory{m}/memory.limit_in_bytes")),
            read(format!("/sys/fs/cgroup/pids{p}/pids.max")),
        ),
        _ => {
            let v2 = path_of("").expect("a cgroup v2 line");
            (
                read(format!("/sys/fs/cgroup{v2}/memory.max")),
                read(format!("/sys/fs/cgroup{v2}/pids.max")),
            )
        }
    }
}

#[test]
fn docker_cli_diff_export_cp_rename_update() {
    let g = or_skip!(docker_cli());
    let work = TempDir::new("berth-it-fs-docker");
    busy_container(g, "fsdocker");

    let diff = g.ok(cli(), &["diff", "fsdocker"]);
    assert_eq!(
        diff,
        g.d.ok(&["diff", "fsdocker"]),
        "docker and berth agree"
    );
    for line in ["C /etc", "D /etc/group", "C /tmp", "A /tmp/x"] {
        assert!(diff.lines().any(|l| l == line), "{line} in {diff}");
    }
    assert!(
        !diff.contains("/etc/hosts"),
        "berth's own mounts are no change: {diff}"
    );

    let export = work.path().join("export.tar");
    g.ok(
        cli(),
        &["export", "-o", export.to_str().unwrap(), "fsdocker"],
    );
    let names = tar_names(&export);
    assert!(names.lines().any(|l| l == "bin/busybox"), "{names}");
    assert!(names.lines().any(|l| l == "tmp/x"), "{names}");

    // Out as a tar on stdout, in to a folder, out as a folder.
    let o = g.docker(cli(), &["cp", "fsdocker:/etc/passwd", "-"]);
    assert!(o.status.success());
    let mut a = tar::Archive::new(o.stdout.as_slice());
    let mut entry = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.path().unwrap().to_str(), Some("passwd"));
    let mut passwd = String::new();
    std::io::Read::read_to_string(&mut entry, &mut passwd).unwrap();
    assert!(passwd.starts_with("root:x:0:0"), "{passwd}");

    let file = work.path().join("hello.txt");
    std::fs::write(&file, "hello from the host\n").unwrap();
    g.ok(cli(), &["cp", file.to_str().unwrap(), "fsdocker:/tmp/"]);
    let seen = g.d.ok(&["exec", "fsdocker", "cat", "/tmp/hello.txt"]);
    assert_eq!(seen, "hello from the host\n");

    let out = work.path().join("out");
    g.ok(cli(), &["cp", "fsdocker:/etc", out.to_str().unwrap()]);
    assert!(std::fs::read_to_string(out.join("passwd"))
        .unwrap()
        .starts_with("root:"));

    let err = g.fails(cli(), &["cp", "fsdocker:/nope/x", out.to_str().unwrap()]);
    assert!(err.contains("No such container:path"), "{err}");
    let err = g.fails(
        cli(),
        &["cp", file.to_str().unwrap(), "fsdocker:/nope/dir/x"],
    );
    assert!(err.contains("No such container:path"), "{err}");

    // A stopped container: its snapshot, both ways.
    g.d.ok(&["stop", "-t", "1", "fsdocker"]);
    g.ok(cli(), &["cp", file.to_str().unwrap(), "fsdocker:/root/"]);
    let o = g.docker(cli(), &["cp", "fsdocker:/root/hello.txt", "-"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello from the host"));
    assert!(g
        .ok(cli(), &["diff", "fsdocker"])
        .contains("A /root/hello.txt"));
    g.d.ok(&["start", "fsdocker"]);
    let seen = g.d.ok(&["exec", "fsdocker", "cat", "/root/hello.txt"]);
    assert_eq!(seen, "hello from the host\n");

    // rename, and Docker's conflict.
    g.ok(cli(), &["rename", "fsdocker", "fsdocker2"]);
    g.d.ok(&["create", "--name", "fsdocker-other", &g.img]);
    let err = g.fails(cli(), &["rename", "fsdocker2", "fsdocker-other"]);
    assert!(
        err.contains("Conflict. The container name \"/fsdocker-other\" is already in use"),
        "{err}"
    );

    // update, seen in the cgroup.
    g.ok(
        cli(),
        &[
            "update",
            "--memory",
            "64m",
            "--pids-limit",
            "20",
            "fsdocker2",
        ],
    );
    assert_eq!(
        cgroup_limits(&g.d, "fsdocker2"),
        ((64u64 << 20).to_string(), "20".to_string())
    );
    let err = g.fails(cli(), &["update", "--cpu-shares", "100", "fsdocker2"]);
    assert!(err.contains("CpuShares"), "{err}");
    g.d.ok(&["rm", "-f", "fsdocker2", "fsdocker-other"]);
}

#[test]
fn berth_cli_diff_export_cp_rename_update() {
    let g = or_skip!(gateway());
    let work = TempDir::new("berth-it-fs-berth");
    busy_container(g, "fsberth");
    let diff = g.d.ok(&["diff", "fsberth"]);
    assert!(
        diff.contains("D /etc/group\n") && diff.contains("A /tmp/x\n"),
        "{diff}"
    );

    let export = work.path().join("export.tar");
    g.d.ok(&["export", "-o", export.to_str().unwrap(), "fsberth"]);
    assert!(tar_names(&export).lines().any(|l| l == "bin/busybox"));

    let file = work.path().join("f.txt");
    std::fs::write(&file, "via berth\n").unwrap();
    g.d.ok(&["cp", file.to_str().unwrap(), "fsberth:/tmp/g.txt"]);
    assert_eq!(
        g.d.ok(&["exec", "fsberth", "cat", "/tmp/g.txt"]),
        "via berth\n"
    );
    let copied = work.path().join("passwd");
    g.d.ok(&["cp", "fsberth:/etc/passwd", copied.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&copied)
        .unwrap()
        .starts_with("root:"));
    let (code, err) =
        g.d.fails(&["cp", file.to_str().unwrap(), "fsberth:/nope/dir/x"]);
    assert_eq!(code, 125);
    assert!(err.contains("Could not find the file /nope/dir"), "{err}");

    g.d.ok(&["rename", "fsberth", "fsberth2"]);
    g.d.ok(&[
        "update",
        "--memory",
        "32m",
        "--pids-limit",
        "30",
        "fsberth2",
    ]);
    assert_eq!(
        cgroup_limits(&g.d, "fsberth2"),
        ((32u64 << 20).to_string(), "30".to_string())
    );
    g.d.ok(&["rm", "-f", "fsberth2"]);
}

/// A tar of `(name, data, false)` files and `(name, target, true)` symlinks, names written
/// unchecked (as a hostile client writes them).
fn raw_tar(entries: &[(&str, &str, bool)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, symlink) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        if *symlink {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_link_name(data).unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_tar_put_lands_nothing_outside_the_container() {
    let g = or_skip!(gateway());
    or_skip!(berth_integration::require_tools(&["curl"]));
    let work = TempDir::new("berth-it-fs-hostile");
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    g.d.run_d(&["--name", "fshostile", &g.img, "sleep", "1000"]);
    let put = |tar: Vec<u8>| {
        let f = work.path().join("put.tar");
        std::fs::write(&f, tar).unwrap();
        let o = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&g.socket)
            .args(["-X", "PUT", "-T"])
            .arg(&f)
            .arg("http://docker/v1.41/containers/fshostile/archive?path=/tmp")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let escape = format!("../../../../../..{}/dotdot", outside.display());
    assert_eq!(put(raw_tar(&[(&escape, "bad", false)])), "400");
    // Symlinks to `/` and up with `..`, then entries through them: resolved inside the
    // container (the host folder's path is made there, as missing parents are).
    for (link, target) in [("root", "/"), ("up", "../../../../../../..")] {
        let through = format!("{link}{}/via{link}", outside.display());
        let code = put(raw_tar(&[(link, target, true), (&through, "x", false)]));
        assert_eq!(code, "200", "{link}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing lands on the host"
    );
    let inside = format!("{}/viaroot", outside.display());
    g.d.ok(&["exec", "fshostile", "test", "-f", &inside]);
    g.d.ok(&["rm", "-f", "fshostile"]);
}
