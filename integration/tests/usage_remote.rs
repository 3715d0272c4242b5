//! `stats` and `top` against a berthd reached over TCP: the figures they show — the host's CPU
//! time, CPUs and memory, the container's interfaces, the `ps` table — are read by the runtime
//! service on the container's host and carried by Tasks.Metrics and Tasks.ListPids, so a
//! client on another machine (or in another language) gets the container's, not its own.

use berth_api::tasks::v1 as tapi;
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_integration::{busybox_archive, free_port, or_skip, require_tools, skip, Berthd};
use tonic::transport::Channel;

/// A berthd serving its API on a loopback TCP port, busybox imported; None (after a SKIP
/// line) when a prerequisite is missing.
fn daemon() -> Option<Berthd> {
    require_tools(&["umoci", "skopeo"])?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("containers need root");
        return None;
    }
    let address = format!("tcp://127.0.0.1:{}", free_port());
    let d = Berthd::start_with("", &[], &["--address", &address]);
    d.ok(&["image", "import", busybox_archive().to_str().unwrap()]);
    Some(d)
}

/// The words of each line of a table.
fn cells(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// The CLI over TCP: `stats --no-stream` shows the container's row with its traffic, `top`
/// the container's processes with ps's default and given options.
fn cli_over_tcp(d: &Berthd, ct: &str) {
    let stats = d.ok(&["stats", "--no-stream", ct]);
    let rows = cells(&stats);
    assert_eq!(
        rows[0],
        [
            "CONTAINER",
            "ID",
            "NAME",
            "CPU",
            "%",
            "MEM",
            "USAGE",
            "/",
            "LIMIT",
            "MEM",
            "%",
            "NET",
            "I/O",
            "BLOCK",
            "I/O",
            "PIDS"
        ],
        "{stats}"
    );
    assert_eq!(rows.len(), 2, "{stats}");
    assert_eq!(rows[1][0], &ct[..12], "{stats}");
    assert_eq!(rows[1][1], "usage-remote", "{stats}");
    // NET I/O: what the ping moved, read from the container's own interfaces.
    assert!(rows[1][7] != "0B" && rows[1][9] != "0B", "{stats}");
    assert_eq!(rows[1].last(), Some(&"1"), "one process: {stats}");

    let top = d.ok(&["top", ct]);
    let rows = cells(&top);
    assert_eq!(rows[0][..2], ["UID", "PID"], "{top}");
    assert_eq!(rows.len(), 2, "the container's process alone: {top}");
    assert!(top.contains("sleep 300"), "{top}");

    let top = d.ok(&["top", ct, "-o", "pid,comm"]);
    let rows = cells(&top);
    assert_eq!(rows[0], ["PID", "COMMAND"], "{top}");
    assert_eq!(rows[1][1], "sleep", "{top}");

    let (code, said) = d.fails(&["top", ct, "--no-such-option"]);
    assert_eq!(code, 125, "{said}");
    assert!(said.contains("ps --no-such-option"), "{said}");
}

async fn tasks(d: &Berthd) -> TasksClient<Channel> {
    TasksClient::new(berth_core::grpc::channel(&d.address).expect("a channel to berthd"))
}

/// Tasks.Metrics and Tasks.ListPids as any gRPC client sees them.
async fn grpc(d: &Berthd, ct: &str) {
    let mut c = tasks(d).await;
    let m = c
        .metrics(tapi::MetricsRequest {
            container_id: ct.to_string(),
        })
        .await
        .expect("metrics")
        .into_inner()
        .metrics
        .expect("a sample");
    assert!(m.system_cpu_nsec > 0, "{m:?}");
    assert!(m.online_cpus >= 1, "{m:?}");
    assert!(m.host_memory > 0, "{m:?}");
    assert!(m.networks.iter().all(|n| n.name != "lo"), "{m:?}");
    let eth0 = m
        .networks
        .iter()
        .find(|n| n.name == "eth0")
        .unwrap_or_else(|| panic!("an eth0 on the bridge: {m:?}"));
    assert!(eth0.rx_bytes > 0 && eth0.rx_packets > 0, "{eth0:?}");
    assert!(eth0.tx_bytes > 0 && eth0.tx_packets > 0, "{eth0:?}");

    let list = |ps_args: Option<&str>| tapi::ListPidsRequest {
        container_id: ct.to_string(),
        ps_args: ps_args.map(str::to_string),
    };
    let plain = c.list_pids(list(None)).await.expect("pids").into_inner();
    assert_eq!(plain.processes.len(), 1, "{plain:?}");
    assert!(
        plain.titles.is_empty() && plain.rows.is_empty(),
        "{plain:?}"
    );
    let init = plain.processes[0].pid.to_string();

    let ps = c
        .list_pids(list(Some("-o pid,comm")))
        .await
        .expect("ps")
        .into_inner();
    assert_eq!(ps.titles, ["PID", "COMMAND"], "{ps:?}");
    assert_eq!(ps.rows.len(), 1, "{ps:?}");
    assert_eq!(ps.rows[0].fields, [init.as_str(), "sleep"], "{ps:?}");

    let default = c.list_pids(list(Some(""))).await.expect("-ef").into_inner();
    assert_eq!(default.titles[..2], ["UID", "PID"], "{default:?}");
    assert_eq!(default.rows[0].fields[1], init, "{default:?}");

    for bad in ["--no-such-option", "-o comm"] {
        let e = c.list_pids(list(Some(bad))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e:?}");
        assert!(!e.message().is_empty(), "{bad}: {e:?}");
    }
}

#[test]
fn stats_and_top_read_the_containers_host_over_tcp() {
    let d = or_skip!(daemon());
    let ct = d.run_d(&["--name", "usage-remote", "busybox", "sleep", "300"]);
    // Traffic both ways on eth0: a ping of the bridge's gateway.
    let ping = d.berth(&[
        "exec",
        &ct,
        "sh",
        "-c",
        "ping -c 1 -W 5 $(ip route | awk '/^default/ {print $3}')",
    ]);
    assert!(
        ping.status.success(),
        "ping: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    cli_over_tcp(&d, &ct);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(grpc(&d, &ct));
    d.ok(&["rm", "-f", &ct]);
}
