//! Containers through the Docker Engine API gateway, driven by the real docker CLIs (Debian's
//! 20.10 at /usr/bin/docker, and the current one at /usr/local/bin/docker when installed):
//! create, list, inspect, start, stop, kill, wait, pause, remove, prune, Docker's refusals,
//! and the `wait` before `start` that `docker run` relies on (with curl over the socket).

use berth_integration::gateway::{docker_clis, Gateway};
use berth_integration::{or_skip, wait_for};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// A name of this test's own for each CLI, so the two CLIs' runs do not meet.
fn name(cli: &Path, base: &str) -> String {
    let tag = if cli.starts_with("/usr/local") {
        "new"
    } else {
        "old"
    };
    format!("{base}-{tag}")
}

#[test]
fn create_list_inspect_start_stop_remove() {
    let g = or_skip!(Gateway::shared());
    for cli in &or_skip!(docker_clis()) {
        let c = name(cli, "c1");
        let id = g.ok_trimmed(cli, &["create", "--name", &c, "busybox", "sleep", "30"]);
        assert_eq!(id.len(), 64, "{id}");
        let ps = g.ok_trimmed(cli, &["ps", "-a", "--filter", &format!("name=^{c}$")]);
        assert!(ps.contains("Created") && ps.contains(&c), "{ps}");
        assert_eq!(g.inspect(cli, &c, "{{.State.Status}}"), "created");
        assert_eq!(g.ok_trimmed(cli, &["start", &c]), c);
        let ps = g.ok_trimmed(cli, &["ps", "--filter", &format!("name=^{c}$")]);
        assert!(ps.contains(" Up "), "{ps}");
        let ip = g.inspect(
            cli,
            &c,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        );
        assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip:?}");
        assert_eq!(
            g.ok_trimmed(cli, &["start", &c]),
            c,
            "a running one: 304, quietly"
        );

        let x = name(cli, "x");
        let id = g.ok_trimmed(
            cli,
            &[
                "run",
                "-d",
                "--name",
                &x,
                "-e",
                "V=1",
                "-w",
                "/tmp",
                "--memory",
                "32m",
                "--pids-limit",
                "8",
                "busybox",
                "sleep",
                "30",
            ],
        );
        let shown = g.inspect(
            cli,
            &x,
            "{{.State.Status}} {{.Config.WorkingDir}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{json .Config.Env}}",
        );
        assert!(
            shown.starts_with("running /tmp 33554432 8 ") && shown.contains("\"V=1\""),
            "{shown}"
        );
        assert_eq!(g.ok_trimmed(cli, &["stop", "-t", "1", &x]), x);
        let exited = g.ok_trimmed(
            cli,
            &["ps", "-a", "-q", "--no-trunc", "-f", "status=exited"],
        );
        assert!(exited.lines().any(|l| l == id), "{exited}");
        assert_eq!(g.ok_trimmed(cli, &["wait", &x]), "137");

        assert_eq!(g.ok_trimmed(cli, &["kill", &c]), c);
        let e = g.fails(cli, &["kill", &c]);
        assert!(e.contains("is not running"), "{e}");
        assert_eq!(g.ok_trimmed(cli, &["rm", &c, &x]), format!("{c}\n{x}"));

        let r = name(cli, "r");
        g.ok_trimmed(cli, &["run", "-d", "--name", &r, "busybox", "sleep", "30"]);
        let e = g.fails(cli, &["rm", &r]);
        assert!(e.contains("You cannot remove a running container"), "{e}");
        assert_eq!(g.ok_trimmed(cli, &["rm", "-f", &r]), r);
        let e = g.fails(cli, &["rm", "nosuch"]);
        assert!(e.contains("No such container: nosuch"), "{e}");
    }
}

#[test]
fn pause_wait_prune_and_refusals() {
    let g = or_skip!(Gateway::shared());
    for cli in &or_skip!(docker_clis()) {
        let p = name(cli, "p");
        g.ok_trimmed(cli, &["run", "-d", "--name", &p, "busybox", "sleep", "30"]);
        assert_eq!(g.ok_trimmed(cli, &["pause", &p]), p);
        assert_eq!(g.inspect(cli, &p, "{{.State.Status}}"), "paused");
        assert!(g
            .ok(cli, &["ps", "-f", "status=paused"])
            .contains("(Paused)"));
        assert_eq!(g.ok_trimmed(cli, &["unpause", &p]), p);
        assert_eq!(g.inspect(cli, &p, "{{.State.Status}}"), "running");
        g.ok_trimmed(cli, &["rm", "-f", &p]);

        let w = name(cli, "w");
        let label = format!("prune={w}");
        g.ok_trimmed(
            cli,
            &[
                "run", "-d", "--name", &w, "--label", &label, "busybox", "sh", "-c", "exit 3",
            ],
        );
        assert_eq!(g.ok_trimmed(cli, &["wait", &w]), "3");
        // Only this test's container: the other tests' stopped ones are theirs.
        let filter = format!("label={label}");
        let pruned = g.ok_trimmed(cli, &["container", "prune", "-f", "--filter", &filter]);
        assert!(pruned.contains("Total reclaimed space"), "{pruned}");
        assert!(g.fails(cli, &["inspect", &w]).contains("No such"));

        let e = g.fails(
            cli,
            &[
                "run",
                "-d",
                "--device-cgroup-rule",
                "c 1:3 r",
                "busybox",
                "true",
            ],
        );
        assert!(
            e.contains("berth does not support HostConfig.DeviceCgroupRules"),
            "{e}"
        );
        let e = g.fails(cli, &["create", "--cpuset-cpus", "0", "busybox"]);
        assert!(
            e.contains("berth does not support HostConfig.CpusetCpus"),
            "{e}"
        );
        let e = g.fails(cli, &["create", "--memory", "1m", "busybox"]);
        assert!(e.contains("Minimum memory limit allowed is 6MB"), "{e}");
        let e = g.fails(
            cli,
            &[
                "create",
                "--network",
                "container:nosuch",
                "--hostname",
                "h",
                "busybox",
            ],
        );
        assert!(
            e.contains("Conflicting options: hostname and the network mode"),
            "{e}"
        );
        // --expose: inspect lists the port, -P publishes it on a free host port.
        let x = name(cli, "expose");
        g.ok_trimmed(
            cli,
            &[
                "run", "-d", "--name", &x, "--expose", "8080", "-P", "busybox", "sleep", "30",
            ],
        );
        let exposed = g.inspect(cli, &x, "{{json .Config.ExposedPorts}}");
        assert!(exposed.contains("8080/tcp"), "{exposed}");
        let port = g.ok_trimmed(cli, &["port", &x, "8080"]);
        assert!(port.contains("0.0.0.0:"), "{port}");
        g.ok_trimmed(cli, &["rm", "-f", &x]);

        let taken = name(cli, "taken");
        g.ok_trimmed(cli, &["create", "--name", &taken, "busybox"]);
        let e = g.fails(cli, &["create", "--name", &taken, "busybox"]);
        assert!(e.contains("is already in use by container"), "{e}");
        g.ok_trimmed(cli, &["rm", &taken]);
    }
}

/// `docker run` waits (next-exit, or removed with --rm) before it starts the container: the
/// answer's headers come at once, its body when the container is gone.
#[test]
fn wait_before_start_as_docker_run_does() {
    let g = or_skip!(Gateway::shared());
    let created = g
        .curl_command(&[
            "-XPOST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"Image":"busybox","Cmd":["sh","-c","exit 7"],"HostConfig":{"AutoRemove":true}}"#,
            "http://d/v1.41/containers/create",
        ])
        .output()
        .unwrap();
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let id = created["Id"].as_str().expect("an Id").to_string();
    assert_eq!(created["Warnings"], serde_json::json!([]));
    let mut waiter = g
        .curl_command(&[
            "-N",
            "-XPOST",
            "-D",
            "-",
            &format!("http://d/v1.41/containers/{id}/wait?condition=removed"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The headers arrive before the container starts.
    let mut out = waiter.stdout.take().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        use std::io::Read;
        assert_eq!(out.read(&mut byte).unwrap(), 1, "the headers came whole");
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    let started = g
        .curl_command(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-XPOST",
            &format!("http://d/v1.41/containers/{id}/start"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&started.stdout), "204");
    let mut body = String::new();
    std::io::Read::read_to_string(&mut out, &mut body).unwrap();
    assert!(waiter.wait().unwrap().success());
    let body: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(body, serde_json::json!({"StatusCode": 7, "Error": null}));
    wait_for(
        "the container to be removed",
        Duration::from_secs(10),
        || !g.d.berth(&["inspect", &id]).status.success(),
    );
}

/// Bad requests get Docker's JSON 400s, and the gateway goes on serving.
#[test]
fn bad_requests_are_400s() {
    let g = or_skip!(Gateway::shared());
    let status = |args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        let o = g.curl_command(&all).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let post = |body: &str| {
        status(&[
            "-XPOST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            "http://d/v1.41/containers/create",
        ])
    };
    assert_eq!(post(r#"{"Image":"#), "400");
    assert_eq!(post("[]"), "400");
    assert_eq!(
        post(r#"{"Image":"busybox","HostConfig":{"Memory":"x"}}"#),
        "400"
    );
    assert_eq!(post(r#"{"Image":"nosuch-image"}"#), "404");
    assert_eq!(
        status(&["http://d/v1.41/containers/json?filters=%7B%22colour%22%3A%5B%22red%22%5D%7D"]),
        "400"
    );
    assert_eq!(
        status(&["-XPOST", "http://d/v1.41/containers/nosuch/start"]),
        "404"
    );
    assert_eq!(
        status(&[
            "-XPOST",
            "http://d/v1.41/containers/nosuch/wait?condition=bogus"
        ]),
        "400"
    );
    assert_eq!(status(&["http://d/_ping"]), "200");
}
