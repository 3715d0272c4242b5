//! docker-compose 1.29 (Debian's `docker-compose`, which no one here wrote) drives berth
//! through the Docker Engine API gateway: `up -d` of two services — a web server with a
//! published port and a named volume, and a client that `depends_on` it and reaches it by its
//! service name on the project's network — then `ps`, `logs`, `exec`, and `down -v`, which
//! must leave no container, network or volume behind.

use berth_integration::gateway::Gateway;
use berth_integration::{free_port, or_skip, require_tools, wait_for, TempDir};
use std::process::Output;
use std::time::Duration;

const PROJECT: &str = "berthit";

fn compose(g: &Gateway, dir: &std::path::Path, args: &[&str]) -> Output {
    g.command("docker-compose")
        .current_dir(dir)
        .args(["-p", PROJECT])
        .args(args)
        .output()
        .expect("run docker-compose")
}

fn ok(g: &Gateway, dir: &std::path::Path, args: &[&str]) -> String {
    let o = compose(g, dir, args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        o.status.success(),
        "docker-compose {args:?} failed: {err}\n{out}\n--- berthd:\n{}",
        g.d.log()
    );
    format!("{out}{err}")
}

#[test]
fn compose_up_ps_logs_exec_down() {
    or_skip!(require_tools(&["docker-compose", "curl"]));
    let Some(g) = Gateway::start() else { return };
    let dir = TempDir::new("berth-it-compose");
    let port = free_port();
    let file = format!(
        r#"version: "3.8"
services:
  web:
    image: {img}
    command: ["sh", "-c", "mkdir -p /w && echo served-by-web > /w/index.html && echo seeded > /data/seed && exec httpd -f -p 80 -h /w"]
    ports: ["127.0.0.1:{port}:80"]
    volumes: ["content:/data"]
  client:
    image: {img}
    depends_on: [web]
    command: ["sh", "-c", "for i in $$(seq 100); do wget -qO- http://web/index.html && break; sleep 0.2; done; exec sleep 300"]
volumes:
  content: {{}}
"#,
        img = g.img
    );
    std::fs::write(dir.path().join("docker-compose.yml"), file).unwrap();

    ok(&g, dir.path(), &["up", "-d"]);
    let ps = ok(&g, dir.path(), &["ps"]);
    for service in ["berthit_web_1", "berthit_client_1"] {
        assert!(
            ps.lines()
                .any(|l| l.starts_with(service) && l.contains("Up")),
            "{service} is not up:\n{ps}"
        );
    }
    let url = format!("http://127.0.0.1:{port}/index.html");
    let mut served = String::new();
    wait_for("the published port", Duration::from_secs(30), || {
        let o = std::process::Command::new("curl")
            .args(["-fs", "--max-time", "2", &url])
            .output()
            .unwrap();
        served = String::from_utf8_lossy(&o.stdout).into_owned();
        o.status.success()
    });
    assert_eq!(served, "served-by-web\n");
    // The client reached the web server by its service name.
    wait_for("the client's log", Duration::from_secs(30), || {
        ok(&g, dir.path(), &["logs", "client"]).contains("served-by-web")
    });
    let seed = ok(&g, dir.path(), &["exec", "-T", "web", "cat", "/data/seed"]);
    assert_eq!(seed.trim(), "seeded");

    ok(&g, dir.path(), &["down", "-v"]);
    let left = g.d.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!left.contains(PROJECT), "containers left: {left}");
    let networks = g.d.ok(&["network", "ls"]);
    assert!(!networks.contains(PROJECT), "networks left: {networks}");
    let volumes = g.d.ok(&["volume", "ls"]);
    assert!(!volumes.contains(PROJECT), "volumes left: {volumes}");
}
