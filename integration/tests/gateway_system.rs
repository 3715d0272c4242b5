//! The gateway's networks, volumes, events, top, stats and system df driven by the real
//! docker CLIs (Debian's 20.10 at /usr/bin/docker; a current one at /usr/local/bin/docker
//! when installed), against a berthd whose containers the `berth` CLI runs; and the `berth`
//! verbs around them (top, stats, info, system df|prune, volume prune, builder prune).

use berth_integration::gateway::Gateway;
use berth_integration::{or_skip, skip, wait_for};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// A berthd serving the gateway, busybox pulled from a registry and tagged `busybox`.
fn gateway() -> Option<&'static Gateway> {
    berth_integration::gateway::Gateway::shared()
}

/// Held by each test: the prunes of one would take the other's objects.
static SERIAL: Mutex<()> = Mutex::new(());

/// The docker CLIs installed here.
fn clis() -> Vec<PathBuf> {
    let v: Vec<PathBuf> = ["/usr/bin/docker", "/usr/local/bin/docker"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    if v.is_empty() {
        skip("no docker CLI (apt-get install docker.io)");
    }
    v
}

/// Networks with each CLI: create, ls, inspect, aliases between berth's containers,
/// connect and disconnect, rm and prune, Docker's refusals.
fn networks(g: &Gateway, cli: &Path, tag: &str) {
    let net = format!("n-{tag}");
    let id = g.ok(cli, &["network", "create", "--label", "t=1", &net]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let ls = g.ok(cli, &["network", "ls"]);
    for n in ["bridge", "host", "none", net.as_str()] {
        assert!(
            ls.lines().any(|l| l.split_whitespace().nth(1) == Some(n)),
            "{ls}"
        );
    }
    let custom = g.ok(cli, &["network", "ls", "-q", "-f", "label=t=1"]);
    assert_eq!(custom.trim(), &id.trim()[..12]);
    let inspect: serde_json::Value =
        serde_json::from_str(&g.ok(cli, &["network", "inspect", &net])).unwrap();
    assert_eq!(inspect[0]["Name"], net.as_str());
    assert_eq!(inspect[0]["Driver"], "bridge");
    assert_eq!(inspect[0]["Scope"], "local");
    assert!(
        inspect[0]["IPAM"]["Config"][0]["Subnet"].is_string(),
        "{inspect}"
    );
    let err = g.fails(cli, &["network", "create", &net]);
    assert!(err.contains("already exists"), "{err}");
    let err = g.fails(cli, &["network", "create", "-d", "overlay", "x"]);
    assert!(err.contains("not supported"), "{err}");
    let err = g.fails(cli, &["network", "rm", "bridge"]);
    assert!(err.contains("pre-defined network"), "{err}");

    // Two containers on the network reach each other by alias, and by one given at connect.
    let alias = format!("web-{tag}");
    let web = g.d.run_d(&[
        "--network",
        &net,
        "--network-alias",
        &alias,
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/",
    ]);
    let client = g.d.run_d(&["busybox", "sleep", "60"]);
    g.ok(
        cli,
        &["network", "connect", "--alias", "other", &net, &client],
    );
    let url = format!("http://{alias}/etc/hostname");
    wait_for(
        "the web container by its alias",
        Duration::from_secs(10),
        || {
            g.d.berth(&["exec", &client, "wget", "-qO-", &url])
                .status
                .success()
        },
    );
    let page = g.d.ok(&["exec", &client, "wget", "-qO-", &url]);
    assert_eq!(page.trim(), &web[..12]);
    let hosts = g.d.ok(&["exec", &web, "cat", "/etc/hosts"]);
    assert!(hosts.lines().any(|l| l.ends_with(" other")), "{hosts}");
    let inspect = g.ok(
        cli,
        &["network", "inspect", "-f", "{{len .Containers}}", &net],
    );
    assert_eq!(inspect.trim(), "2");
    g.ok(cli, &["network", "disconnect", &net, &client]);
    let hosts = g.d.ok(&["exec", &web, "cat", "/etc/hosts"]);
    assert!(!hosts.contains(" other"), "{hosts}");
    let err = g.fails(cli, &["network", "rm", &net]);
    assert!(err.contains("active endpoints"), "{err}");
    g.d.ok(&["rm", "-f", &web, &client]);
    g.ok(cli, &["network", "rm", &net]);
    let spare = format!("spare-{tag}");
    g.ok(cli, &["network", "create", &spare]);
    let pruned = g.ok(cli, &["network", "prune", "-f"]);
    assert!(pruned.contains(&spare), "{pruned}");
}

/// Volumes with each CLI: create, ls (filters), inspect, rm (refused in use), prune.
fn volumes(g: &Gateway, cli: &Path, tag: &str) {
    let (v1, v2) = (format!("v1-{tag}"), format!("v2-{tag}"));
    assert_eq!(g.ok(cli, &["volume", "create", &v1]).trim(), v1);
    g.ok(cli, &["volume", "create", "--label", "keep=1", &v2]);
    let ls = g.ok(cli, &["volume", "ls"]);
    assert!(ls.starts_with("DRIVER"), "{ls}");
    assert!(ls.contains(&v1) && ls.contains(&v2), "{ls}");
    let labelled = g.ok(cli, &["volume", "ls", "-q", "-f", "label=keep=1"]);
    assert_eq!(labelled.trim(), v2);
    let inspect: serde_json::Value =
        serde_json::from_str(&g.ok(cli, &["volume", "inspect", &v1])).unwrap();
    assert_eq!(inspect[0]["Name"], v1.as_str());
    assert_eq!(inspect[0]["Driver"], "local");
    let err = g.fails(cli, &["volume", "create", "-d", "nfs", "x"]);
    assert!(err.contains("not supported"), "{err}");
    let user =
        g.d.run_d(&["-v", &format!("{v1}:/data"), "busybox", "sleep", "60"]);
    let err = g.fails(cli, &["volume", "rm", &v1]);
    assert!(err.contains("in use"), "{err}");
    let dangling = g.ok(cli, &["volume", "ls", "-q", "-f", "dangling=true"]);
    assert!(
        !dangling.contains(&v1) && dangling.contains(&v2),
        "{dangling}"
    );
    let df = g.ok(cli, &["system", "df"]);
    assert!(df.contains("Local Volumes"), "{df}");
    // API 1.41's prune takes every unused volume (here the label narrows it to v2).
    let pruned = g.ok(cli, &["volume", "prune", "-f", "--filter", "label=keep"]);
    assert!(pruned.contains(&v2) && !pruned.contains(&v1), "{pruned}");
    g.d.ok(&["rm", "-f", &user]);
    g.ok(cli, &["volume", "rm", &v1]);
    assert!(!g.ok(cli, &["volume", "ls", "-q"]).contains(&v1));
}

/// Events replayed with since/until, top and stats of a running container.
fn events_and_usage(g: &Gateway, cli: &Path) {
    let id = g.d.ok(&["run", "-d", "busybox", "true"]).trim().to_string();
    g.d.ok(&["wait", &id]);
    // `--until 0s` is sent in whole seconds: the events of this second show once it is over.
    let filter = format!("container={id}");
    let args = [
        "events", "--since", "1m", "--until", "0s", "--filter", &filter,
    ];
    let died = format!(" container die {id}");
    wait_for(
        "the container's events replayed",
        Duration::from_secs(5),
        || g.ok(cli, &args).contains(&died),
    );
    let events = g.ok(cli, &args);
    for action in ["create", "start", "die"] {
        assert!(
            events
                .lines()
                .any(|l| l.contains(&format!(" container {action} {id}"))),
            "{action}: {events}"
        );
    }
    let ct = g.d.run_d(&["busybox", "sleep", "60"]);
    let top = g.ok(cli, &["top", &ct]);
    assert!(top.starts_with("UID"), "{top}");
    assert!(top.contains("sleep 60"), "{top}");
    let stats = g.ok(cli, &["stats", "--no-stream", &ct]);
    assert!(stats.starts_with("CONTAINER ID"), "{stats}");
    assert!(
        stats.contains(&ct[..12]) && stats.contains("iB / "),
        "{stats}"
    );
    g.d.ok(&["rm", "-f", &ct, &id]);
}

#[test]
fn docker_clis_drive_networks_volumes_events_and_usage() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = or_skip!(gateway());
    for (i, cli) in clis().iter().enumerate() {
        let tag = format!("c{i}");
        networks(g, cli, &tag);
        volumes(g, cli, &tag);
        events_and_usage(g, cli);
    }
}

#[test]
fn berth_verbs_for_the_engine() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = or_skip!(gateway());
    let ct = g.d.run_d(&["busybox", "sleep", "60"]);
    let top = g.d.ok(&["top", &ct]);
    assert!(top.starts_with("UID") && top.contains("sleep 60"), "{top}");
    let stats = g.d.ok(&["stats", "--no-stream", &ct]);
    assert!(stats.starts_with("CONTAINER ID"), "{stats}");
    assert!(
        stats.contains(&ct[..12]) && stats.contains(" / "),
        "{stats}"
    );
    let info = g.d.ok(&["info"]);
    assert!(info.contains("Server:\n Containers: "), "{info}");
    assert!(info.contains(" Docker Root Dir: "), "{info}");
    let df = g.d.ok(&["system", "df"]);
    assert!(df.starts_with("TYPE"), "{df}");
    assert!(df.contains("Images") && df.contains("Build Cache"), "{df}");
    g.d.ok(&["volume", "create", "prune-me"]);
    let pruned = g.d.ok(&["volume", "prune", "-f", "-a"]);
    assert!(pruned.contains("prune-me"), "{pruned}");
    assert!(pruned.contains("Total reclaimed space:"), "{pruned}");
    let b = g.d.ok(&["builder", "prune", "-f"]);
    assert!(b.contains("Total reclaimed space:"), "{b}");
    g.d.ok(&["stop", "-t", "0", &ct]);
    let sp = g.d.ok(&["system", "prune", "-f"]);
    assert!(sp.contains(&ct), "the stopped container is pruned: {sp}");
    assert!(sp.contains("Total reclaimed space:"), "{sp}");
}
