//! The container lifecycle through the CLI (issue #3): run -d, ps, logs, exec, stop/start,
//! kill, wait, rm, inspect -f, restart policies, volumes, and the errors of bad input.

use berth_integration::{or_skip, wait_for, Engine};
use std::sync::OnceLock;
use std::time::Duration;

/// One registry and one berthd shared by the tests of this file; None when a tool is missing.
fn env() -> Option<&'static Engine> {
    static E: OnceLock<Option<Engine>> = OnceLock::new();
    E.get_or_init(Engine::start).as_ref()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `berth run -d …` and gives the container's full id.
fn run_d(e: &Engine, args: &[&str]) -> String {
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(args);
    let o = e.d.berth(&a);
    assert!(
        o.status.success(),
        "run -d failed: {}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    id
}

#[test]
fn bad_flags_fail_before_talking_to_berthd() {
    let e = or_skip!(env());
    for args in [
        vec!["run", "--restart", "sometimes", &e.img],
        vec!["run", "--restart", "always:3", &e.img],
        vec!["run", "--restart", "on-failure:x", &e.img],
        vec!["run", "-v", "/host:relative", &e.img],
        vec!["run", "--rm", "--restart", "always", &e.img],
        vec!["run", "--stop-signal", "NOPE", &e.img],
        vec!["kill", "-s", "NOPE", "x"],
        vec!["ps", "-f", "status=bogus"],
        vec!["inspect", "-f", "{{.State", "x"],
    ] {
        let (code, err) = e.d.fails(&args);
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?} says why");
    }
}

#[test]
fn unknown_containers_are_clear_errors() {
    let e = or_skip!(env());
    for verb in [
        vec!["stop", "nosuch"],
        vec!["start", "nosuch"],
        vec!["rm", "nosuch"],
        vec!["kill", "nosuch"],
        vec!["wait", "nosuch"],
        vec!["logs", "nosuch"],
        vec!["exec", "nosuch", "echo"],
        vec!["container", "inspect", "nosuch"],
    ] {
        let o = e.d.berth(&verb);
        assert!(!o.status.success(), "{verb:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("No such container: nosuch"), "{verb:?}: {err}");
        assert_eq!(o.status.code(), Some(125), "{verb:?}: {err}");
    }
    let (_, err) = e.d.fails(&["inspect", "nosuch"]);
    assert!(err.contains("No such object: nosuch"), "{err}");
}

#[test]
fn detached_lifecycle() {
    let e = or_skip!(env());
    let id = run_d(
        e,
        &[
            "--name",
            "lc-web",
            &e.img,
            "sh",
            "-c",
            "echo started; echo oops >&2; while true; do sleep 0.2; done",
        ],
    );
    let short = &id[..12];
    let ls = e.d.ok(&["container", "ls"]);
    assert!(ls.starts_with("CONTAINER ID"), "{ls}");
    let line = ls
        .lines()
        .find(|l| l.contains("lc-web"))
        .unwrap_or_else(|| panic!("lc-web is listed: {ls}"));
    assert!(line.starts_with(short), "{line}");
    assert!(line.contains("\"sh -c 'echo"), "{line}");
    assert!(line.contains("Up "), "{line}");
    assert!(e.d.ok(&["ps", "-q"]).lines().any(|l| l == short));
    assert!(e.d.ok(&["ps", "-q", "--no-trunc"]).lines().any(|l| l == id));
    assert!(e
        .d
        .ok(&["ps", "-q", "-f", "name=lc-web", "-f", "status=running"])
        .contains(short));
    assert!(!e.d.ok(&["ps", "-q", "-f", "status=exited"]).contains(short));
    // By name, by unique prefix.
    assert_eq!(
        e.d.ok(&["inspect", "-f", "{{.State.Status}}", "lc-web"])
            .trim(),
        "running"
    );
    assert_eq!(
        e.d.ok(&["inspect", "-f", "{{.Name}}", &id[..10]]).trim(),
        "/lc-web"
    );
    wait_for("logs", Duration::from_secs(10), || {
        stdout(&e.d.berth(&["logs", "lc-web"])).contains("started")
    });
    let o = e.d.berth(&["logs", "lc-web"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("oops"));
    let o = e.d.berth(&["logs", "-t", "lc-web"]);
    assert!(stdout(&o)
        .lines()
        .next()
        .is_some_and(|l| l.len() > 31 && l.as_bytes()[4] == b'-' && l.contains("Z started")));

    assert_eq!(
        e.d.ok(&["exec", "lc-web", "echo", "inside"]).trim(),
        "inside"
    );
    let o = e.d.berth(&["exec", "lc-web", "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    let o = e.d.berth(&["exec", "lc-web", "/no/such/binary"]);
    assert_eq!(o.status.code(), Some(127));

    let (_, err) = e.d.fails(&["rm", "lc-web"]);
    assert!(!err.is_empty());
    assert_eq!(e.d.ok(&["stop", "-t", "1", "lc-web"]).trim(), "lc-web");
    assert!(!e.d.ok(&["ps"]).contains("lc-web"));
    let exited = e.d.ok(&["ps", "-a", "-f", "status=exited"]);
    assert!(
        exited.contains("lc-web") && exited.contains("Exited ("),
        "{exited}"
    );
    assert!(e
        .d
        .ok(&["container", "ls", "-f", "status=exited", "-q"])
        .contains(short));

    assert_eq!(e.d.ok(&["start", "lc-web"]).trim(), "lc-web");
    wait_for("the second run's output", Duration::from_secs(10), || {
        stdout(&e.d.berth(&["logs", "lc-web"]))
            .lines()
            .filter(|l| *l == "started")
            .count()
            == 2
    });
    assert_eq!(e.d.ok(&["kill", "-s", "KILL", "lc-web"]).trim(), "lc-web");
    assert_eq!(e.d.ok(&["wait", "lc-web"]).trim(), "137");
    assert_eq!(e.d.ok(&["rm", "lc-web"]).trim(), "lc-web");
    assert!(!e.d.ok(&["ps", "-a"]).contains("lc-web"));
}

#[test]
fn create_then_start_attached() {
    let e = or_skip!(env());
    let o = e.d.berth(&[
        "create",
        "--name",
        "lc-created",
        &e.img,
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o).trim().len(), 64);
    let ls = e.d.ok(&["ps", "-a", "-f", "status=created"]);
    assert!(ls.contains("lc-created") && ls.contains("Created"), "{ls}");
    let o = e.d.berth(&["start", "-a", "lc-created"]);
    assert_eq!(stdout(&o).trim(), "hi");
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        e.d.ok(&["inspect", "-f", "{{.State.ExitCode}}", "lc-created"])
            .trim(),
        "3"
    );
    e.d.ok(&["rm", "lc-created"]);
}

#[test]
fn inspect_shows_docker_fields_and_templates() {
    let e = or_skip!(env());
    let host = berth_integration::TempDir::new("berth-it-bind");
    let bind = format!("{}:/data:ro", host.path().display());
    let _id = run_d(
        e,
        &[
            "--name",
            "lc-insp",
            "--restart",
            "on-failure:2",
            "-v",
            &bind,
            "--stop-signal",
            "SIGUSR1",
            &e.img,
            "sleep",
            "30",
        ],
    );
    let j: serde_json::Value = serde_json::from_str(&e.d.ok(&["inspect", "lc-insp"])).unwrap();
    let c = &j[0];
    assert_eq!(c["Name"], "/lc-insp");
    assert_eq!(c["State"]["Running"], true);
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(c["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
    assert_eq!(c["HostConfig"]["Binds"][0], bind.as_str());
    assert_eq!(c["Config"]["StopSignal"], "SIGUSR1");
    assert_eq!(c["Path"], "sleep");
    let m = e.d.ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Destination}} {{.RW}}{{end}}",
        "lc-insp",
    ]);
    assert_eq!(m.trim(), "/data false");
    assert_eq!(
        e.d.ok(&["inspect", "-f", "{{json .Args}}", "lc-insp"])
            .trim(),
        r#"["30"]"#
    );
    // An image by the same verb, and image inspect -f with compact json.
    let layers =
        e.d.ok(&["image", "inspect", "-f", "{{json .RootFS.Layers}}", &e.img]);
    assert!(
        layers.starts_with("[\"sha256:") && !layers.contains(", "),
        "{layers}"
    );
    assert!(e
        .d
        .ok(&["inspect", "-f", "{{.Id}}", &e.img])
        .starts_with("sha256:"));
    e.d.ok(&["rm", "-f", "lc-insp"]);
}

#[test]
fn restart_always_brings_it_back() {
    let e = or_skip!(env());
    let _id = run_d(
        e,
        &[
            "--name",
            "lc-phoenix",
            "--restart",
            "always",
            &e.img,
            "sh",
            "-c",
            "echo up; sleep 1; exit 3",
        ],
    );
    wait_for("a restart", Duration::from_secs(15), || {
        stdout(&e.d.berth(&["logs", "lc-phoenix"]))
            .lines()
            .filter(|l| *l == "up")
            .count()
            >= 2
    });
    let n: i32 =
        e.d.ok(&["inspect", "-f", "{{.RestartCount}}", "lc-phoenix"])
            .trim()
            .parse()
            .unwrap();
    assert!(n >= 1);
    e.d.ok(&["rm", "-f", "lc-phoenix"]);
    assert!(!e.d.ok(&["ps", "-a"]).contains("lc-phoenix"));
}

#[test]
fn prune_and_volumes() {
    let e = or_skip!(env());
    assert_eq!(e.d.ok(&["volume", "create", "lc-vol"]).trim(), "lc-vol");
    assert!(e.d.ok(&["volume", "ls"]).contains("lc-vol"));
    assert!(e
        .d
        .ok(&["volume", "inspect", "-f", "{{.Name}}", "lc-vol"])
        .contains("lc-vol"));
    assert_eq!(e.d.ok(&["volume", "rm", "lc-vol"]).trim(), "lc-vol");
    e.d.ok(&["create", "--name", "lc-prune", &e.img, "true"]);
    let out = e.d.ok(&["container", "prune", "-f"]);
    assert!(out.ends_with("Total reclaimed space: 0B\n"), "{out}");
    assert!(!e.d.ok(&["ps", "-a"]).contains("lc-prune"));
}
