//! The ctr-style commands (issue 12, point 4) against a real berthd, each test with a berthd of
//! its own (busybox imported), so that what one test lists no other test changes:
//!
//! - `namespace create|ls|rm`: labels, namespaces that only hold objects, rm refused while
//!   anything (image, snapshots, container, volume, work in flight) is left, then allowed;
//! - `snapshot ls|info|usage|mounts|tree|rm`, the printed mount command mounted for real;
//! - `content ls|get|rm`: the gc.ref labels, bytes that hash to their digest, rm refused for a
//!   blob an image holds and done for one nobody holds;
//! - `task ls|ps|metrics` on a running `sleep` with limits, an exec'd process and a pause;
//! - `lease ls|rm`: none, an unknown one, and the lease of an export nobody reads (held until
//!   its client reads, so it is there to be seen for as long as the test needs) stopped by rm;
//! - `-q` and `--format` (templates and json) on each listing.

use berth_integration::{busybox_archive, missing_tool, or_skip, skip, Berthd, TempDir};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A berthd with busybox imported as busybox:latest; None (after a SKIP line, or a failure
/// under CI) when a prerequisite is missing.
fn daemon() -> Option<Berthd> {
    if let Some(why) = missing_tool(&["umoci", "skopeo"]) {
        skip(format!(
            "{why}: the busybox image is made with umoci and skopeo"
        ));
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("containers need root");
        return None;
    }
    let d = Berthd::start("");
    d.ok(&["image", "import", busybox_archive().to_str().unwrap()]);
    Some(d)
}

/// The words of a table's header line.
fn header(out: &str) -> Vec<&str> {
    out.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

/// The rows of a table below its header, each split into its cells' words.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

fn lines(out: &str) -> Vec<String> {
    out.lines().map(String::from).collect()
}

/// Asserts a refusal: exit 125 and a message holding `what`.
fn refused(d: &Berthd, args: &[&str], what: &str) -> String {
    let (code, err) = d.fails(args);
    assert_eq!(code, 125, "berth {args:?}: {err}");
    assert!(err.contains(what), "berth {args:?}: {err}");
    err
}

fn inspect(d: &Berthd, template: &str, name: &str) -> String {
    d.ok(&["inspect", "-f", template, name]).trim().to_string()
}

#[test]
fn namespaces_are_listed_labelled_and_removed_only_when_empty() {
    let d = or_skip!(daemon());
    let ls = d.ok(&["namespace", "ls"]);
    assert_eq!(header(&ls), ["NAME", "LABELS"], "{ls}");
    // default was never created, but it holds the image.
    assert_eq!(rows(&ls), [vec!["default".to_string()]], "{ls}");

    assert_eq!(
        d.ok(&["ns", "create", "--label", "tier=web", "--label", "team=a", "ctr-team"]),
        ""
    );
    refused(&d, &["ns", "create", "ctr-team"], "already exists");
    refused(&d, &["ns", "create", "Bad_Name"], "invalid namespace");
    let ls = d.ok(&["namespaces", "ls"]);
    assert!(
        rows(&ls).contains(&vec!["ctr-team".to_string(), "team=a,tier=web".to_string()]),
        "{ls}"
    );
    assert_eq!(lines(&d.ok(&["ns", "ls", "-q"])), ["ctr-team", "default"]);
    let formatted = d.ok(&["ns", "ls", "--format", "{{.Name}}:{{.Labels}}"]);
    assert_eq!(lines(&formatted), ["ctr-team:team=a,tier=web", "default:"]);
    let json: Vec<Value> = d
        .ok(&["ns", "ls", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json[0]["Name"], "ctr-team");
    assert_eq!(json[0]["Created"], true);
    assert_eq!(json[1]["Created"], false);
    assert!(json[1]["Objects"]["images"].as_i64() >= Some(1), "{json:?}");

    // A namespace nobody created, holding a volume (the runtime service is asked).
    d.ok(&["-n", "ctr-implicit", "volume", "create", "v1"]);
    assert!(lines(&d.ok(&["ns", "ls", "-q"])).contains(&"ctr-implicit".to_string()));
    refused(&d, &["ns", "rm", "ctr-implicit"], "it holds 1 volume");

    // Everything a namespace can hold keeps it: an image (and its snapshot), a container.
    let archive = busybox_archive();
    d.ok(&[
        "-n",
        "ctr-team",
        "image",
        "import",
        archive.to_str().unwrap(),
    ]);
    let err = refused(
        &d,
        &["ns", "rm", "ctr-team"],
        "namespace ctr-team is not empty",
    );
    assert!(
        err.contains("1 image") && err.contains("1 snapshot (overlayfs)"),
        "{err}"
    );
    d.ok(&[
        "-n",
        "ctr-team",
        "create",
        "--network",
        "none",
        "--name",
        "c",
        "busybox",
        "true",
    ]);
    let err = refused(&d, &["ns", "rm", "ctr-team"], "1 container");
    assert!(err.contains("2 snapshots (overlayfs)"), "{err}");
    // Refused means nothing happened.
    assert!(lines(&d.ok(&["ns", "ls", "-q"])).contains(&"ctr-team".to_string()));
    assert_eq!(d.ok(&["-n", "ctr-team", "ps", "-aq"]).lines().count(), 1);

    // Emptied, it goes.
    d.ok(&["-n", "ctr-team", "rm", "c"]);
    d.ok(&["-n", "ctr-team", "rmi", "busybox"]);
    assert_eq!(d.ok(&["ns", "rm", "ctr-team"]), "ctr-team\n");
    d.ok(&["-n", "ctr-implicit", "volume", "rm", "v1"]);
    // Never created and now empty: there is nothing to remove.
    refused(&d, &["ns", "rm", "ctr-implicit"], "not found");
    assert_eq!(lines(&d.ok(&["ns", "ls", "-q"])), ["default"]);
    // Several at once: each is reported, the exit code says one failed.
    let o = d.berth(&["ns", "rm", "nope1", "default"]);
    assert_eq!(o.status.code(), Some(125));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nope1 not found") && err.contains("default is not empty"),
        "{err}"
    );
}

#[test]
fn snapshots_are_listed_inspected_mounted_drawn_and_removed() {
    let d = or_skip!(daemon());
    // One layer: its chain id is its diff_id.
    let chain: Vec<String> = serde_json::from_str(&d.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .RootFS.Layers}}",
        "busybox",
    ]))
    .unwrap();
    let chain = chain[0].clone();
    d.ok(&[
        "create",
        "--network",
        "none",
        "--name",
        "c1",
        "busybox",
        "true",
    ]);
    let id = inspect(&d, "{{.Id}}", "c1");

    let ls = d.ok(&["snapshot", "ls"]);
    assert_eq!(header(&ls), ["KEY", "PARENT", "KIND"]);
    let mut got = rows(&ls);
    got.sort();
    let mut want = vec![
        vec![id.clone(), chain.clone(), "Active".into()],
        vec![chain.clone(), "Committed".into()],
    ];
    want.sort();
    assert_eq!(got, want, "{ls}");
    let mut keys = lines(&d.ok(&["snapshots", "ls", "-q"]));
    keys.sort();
    let mut both = vec![id.clone(), chain.clone()];
    both.sort();
    assert_eq!(keys, both);
    assert!(d
        .ok(&["snapshot", "ls", "--format", "{{.Key}} {{.Kind}}"])
        .lines()
        .any(|l| l == format!("{id} Active")));
    // The other snapshotter holds nothing here.
    assert_eq!(
        d.ok(&["snapshot", "--snapshotter", "native", "ls", "-q"]),
        ""
    );
    refused(&d, &["snapshot", "--snapshotter", "zfs", "ls"], "zfs");

    let info: Value = serde_json::from_str(&d.ok(&["snapshot", "info", &id])).unwrap();
    assert_eq!(info["Kind"], "Active");
    assert_eq!(info["Name"], id.as_str());
    assert_eq!(info["Parent"], chain.as_str());
    let info: Value = serde_json::from_str(&d.ok(&["snapshot", "info", &chain])).unwrap();
    assert_eq!(info["Kind"], "Committed");
    assert!(info.get("Parent").is_none(), "{info}");
    refused(&d, &["snapshot", "info", "nosuch"], "nosuch");

    // The layer holds busybox itself: at least its size, and one inode per applet link.
    let usage = d.ok(&["snapshot", "usage", "-b", &chain]);
    let row = &rows(&usage)[0];
    assert_eq!(row[0], chain);
    let busybox = std::fs::metadata("/usr/bin/busybox").unwrap().len();
    assert!(row[1].parse::<u64>().unwrap() >= busybox, "{usage}");
    assert!(row[2].parse::<u64>().unwrap() > 100, "{usage}");
    assert_eq!(rows(&d.ok(&["snapshot", "usage"])).len(), 2);

    // The printed command mounts the container's root filesystem.
    let target = TempDir::new("berth-it-ctr-mount");
    let t = target.path().to_str().unwrap();
    let cmds = d.ok(&["snapshot", "mounts", t, &id]);
    assert_eq!(cmds.lines().count(), 1, "{cmds}");
    assert!(
        cmds.starts_with(&format!("mount -t overlay overlay {t} -o "))
            && cmds.contains("upperdir=")
            && cmds.contains("lowerdir="),
        "{cmds}"
    );
    let st = std::process::Command::new("sh")
        .args(["-c", cmds.trim()])
        .status()
        .unwrap();
    assert!(st.success(), "{cmds}");
    let mounted = target.path().join("bin/busybox").is_file();
    let _ = std::process::Command::new("umount").arg(t).status();
    assert!(
        mounted,
        "the mount command did not mount the rootfs: {cmds}"
    );
    refused(&d, &["snapshot", "mounts", t, &chain], "");

    assert_eq!(
        d.ok(&["snapshot", "tree"]),
        format!(" {chain}\n  \\_ {id}\n")
    );

    // Something is built on the layer: refused, and it stays.
    refused(&d, &["snapshot", "rm", &chain], &chain);
    assert_eq!(d.ok(&["snapshot", "rm", &id]), format!("{id}\n"));
    assert_eq!(lines(&d.ok(&["snapshot", "ls", "-q"])), [chain.as_str()]);
    refused(&d, &["snapshot", "rm", &id], "");
}

#[test]
fn content_is_listed_read_and_removed_only_when_no_image_holds_it() {
    let d = or_skip!(daemon());
    let config = inspect(&d, "{{.Id}}", "busybox");
    let ls = d.ok(&["content", "ls"]);
    assert_eq!(header(&ls), ["DIGEST", "SIZE", "AGE", "LABELS"]);
    let blobs: Vec<Value> = d
        .ok(&["content", "ls", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The manifest names its config and its layer, as containerd's gc.ref labels.
    let manifest = blobs
        .iter()
        .find(|b| {
            b["Labels"]
                .as_str()
                .unwrap()
                .contains(&format!("berth.gc.ref.content.config={config}"))
        })
        .unwrap_or_else(|| panic!("no manifest naming {config}: {blobs:?}"));
    let labels = manifest["Labels"].as_str().unwrap();
    let layer = labels
        .split(',')
        .find_map(|l| l.strip_prefix("berth.gc.ref.content.l.0="))
        .unwrap_or_else(|| panic!("{labels}"))
        .to_string();
    let digests = lines(&d.ok(&["content", "ls", "-q"]));
    for want in [
        &config,
        &layer,
        &manifest["Digest"].as_str().unwrap().to_string(),
    ] {
        assert!(digests.contains(want), "{want} not in {digests:?}");
    }

    // get: the bytes hash to the digest and are as long as listed.
    let o = d.berth(&["content", "get", &layer]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(format!("sha256:{:x}", Sha256::digest(&o.stdout)), layer);
    let listed = blobs
        .iter()
        .find(|b| b["Digest"] == layer.as_str())
        .unwrap();
    assert_eq!(Some(o.stdout.len() as u64), listed["Bytes"].as_u64());
    let m: Value = serde_json::from_slice(
        &d.berth(&["content", "get", manifest["Digest"].as_str().unwrap()])
            .stdout,
    )
    .unwrap();
    assert_eq!(m["config"]["digest"], config.as_str());

    // The image holds it: refused, naming the image; nothing removed.
    refused(
        &d,
        &["content", "rm", &layer],
        "is part of image docker.io/library/busybox:latest (namespace default)",
    );
    assert!(lines(&d.ok(&["content", "ls", "-q"])).contains(&layer));
    assert!(d
        .berth(&["run", "--rm", "--network", "none", "busybox", "true"])
        .status
        .success());

    // A blob nobody holds (written over the API) goes.
    let data = b"a blob no image holds".to_vec();
    let digest = format!("sha256:{:x}", Sha256::digest(&data));
    write_blob(&d, data.clone());
    assert!(lines(&d.ok(&["content", "ls", "-q"])).contains(&digest));
    assert_eq!(d.berth(&["content", "get", &digest]).stdout, data);
    assert_eq!(d.ok(&["content", "rm", &digest]), format!("{digest}\n"));
    assert!(!lines(&d.ok(&["content", "ls", "-q"])).contains(&digest));
    refused(&d, &["content", "get", &digest], "not found");
    refused(&d, &["content", "rm", &digest], "not found");
    refused(&d, &["content", "get", "sha256:nothex"], "");
}

/// Writes `data` into berthd's content store through Content.Write.
fn write_blob(d: &Berthd, data: Vec<u8>) {
    use berth_api::content::v1::{content_client::ContentClient, write_content_request::Item};
    use berth_api::content::v1::{WriteContentRequest, WriteHeader};
    let address = format!("unix://{}", d.sock.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let channel = berth_core::grpc::channel(&address).unwrap();
        let header = WriteContentRequest {
            item: Some(Item::Header(WriteHeader {
                expected_digest: String::new(),
                expected_size: data.len() as i64,
                labels: Default::default(),
            })),
        };
        let body = WriteContentRequest {
            item: Some(Item::Data(data)),
        };
        ContentClient::new(channel)
            .write(tokio_stream::iter([header, body]))
            .await
            .unwrap();
    });
}

#[test]
fn tasks_show_their_processes_and_cgroup_figures() {
    let d = or_skip!(daemon());
    let id = d
        .ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            "sl",
            "--memory",
            "64m",
            "--pids-limit",
            "8",
            "busybox",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    let pid = inspect(&d, "{{.State.Pid}}", "sl");
    let ls = d.ok(&["task", "ls"]);
    assert_eq!(header(&ls), ["TASK", "PID", "STATUS"]);
    assert_eq!(
        rows(&ls),
        [vec![id[..12].to_string(), pid.clone(), "RUNNING".into()]],
        "{ls}"
    );
    assert_eq!(lines(&d.ok(&["tasks", "ls", "-q"])), [id[..12].to_string()]);
    assert_eq!(
        lines(&d.ok(&["task", "ls", "-q", "--no-trunc"])),
        [id.as_str()]
    );
    assert_eq!(
        d.ok(&["task", "ls", "--format", "{{.Pid}} {{.Status}}"]),
        format!("{pid} RUNNING\n")
    );

    // An exec'd process joins the container's cgroup.
    d.ok(&["exec", "-d", "sl", "sleep", "999"]);
    let ps = d.ok(&["task", "ps", "sl"]);
    assert_eq!(header(&ps), ["PID", "INFO"]);
    let procs = rows(&ps);
    assert_eq!(procs.len(), 2, "{ps}");
    assert!(
        procs.contains(&vec![pid.clone(), "sleep".into(), "1000".into()]),
        "{ps}"
    );
    assert!(
        procs
            .iter()
            .any(|p| p[0] != pid && p[1..] == ["sleep".to_string(), "999".to_string()]),
        "{ps}"
    );
    let mut pids: Vec<String> = procs.iter().map(|p| p[0].clone()).collect();
    pids.sort();
    let mut quiet = lines(&d.ok(&["task", "ps", "-q", &id[..12]]));
    quiet.sort();
    assert_eq!(quiet, pids);
    assert_eq!(
        d.ok(&["task", "ps", "--format", "{{.Pid}}:{{.Info}}", "sl"])
            .lines()
            .filter(|l| *l == format!("{pid}:sleep 1000"))
            .count(),
        1
    );

    // The cgroup's figures, under the kernel's names of this host's cgroup version.
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let table = d.ok(&["task", "metrics", "sl"]);
    assert_eq!(header(&table), ["ID", "TIMESTAMP"]);
    assert!(rows(&table)[0][0] == id, "{table}");
    let metric = |name: &str| {
        table
            .lines()
            .find_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 2 && w[0] == name).then(|| w[1].to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in:\n{table}"))
    };
    let (usage, limit) = if v2 {
        ("memory.usage", "memory.usage_limit")
    } else {
        ("memory.usage_in_bytes", "memory.limit_in_bytes")
    };
    assert_eq!(metric(limit), "67108864", "{table}");
    assert!(metric(usage).parse::<u64>().unwrap() > 0, "{table}");
    assert_eq!(metric("pids.current"), "2", "{table}");
    assert_eq!(metric("pids.limit"), "8", "{table}");
    let j: Value =
        serde_json::from_str(&d.ok(&["task", "metrics", "--format", "json", "sl"])).unwrap();
    assert_eq!(j["ID"], id.as_str());
    assert_eq!(j["CgroupVersion"], if v2 { 2 } else { 1 });
    assert_eq!(j["Memory"]["Limit"], 67_108_864);
    assert!(j["Memory"]["Usage"].as_u64() > Some(0), "{j}");
    assert!(j["CPU"]["UsageNsec"].as_u64() > Some(0), "{j}");
    assert_eq!(j["Pids"]["Current"], 2);
    assert_eq!(j["Pids"]["Limit"], 8);
    assert_eq!(
        d.ok(&[
            "task",
            "metrics",
            "--format",
            "{{.Pids.Current}}/{{.Pids.Limit}}",
            "sl"
        ]),
        "2/8\n"
    );

    d.ok(&["pause", "sl"]);
    assert_eq!(d.ok(&["task", "ls", "--format", "{{.Status}}"]), "PAUSED\n");
    d.ok(&["unpause", "sl"]);
    assert_eq!(
        d.ok(&["task", "ls", "--format", "{{.Status}}"]),
        "RUNNING\n"
    );

    d.ok(&["stop", "-t", "0", "sl"]);
    refused(&d, &["task", "ps", "sl"], "is not running");
    refused(&d, &["task", "metrics", "sl"], "is not running");
    refused(&d, &["task", "ps", "nosuch"], "No such container: nosuch");
}

#[test]
fn leases_of_work_in_flight_are_listed_and_removing_one_stops_its_work() {
    let d = or_skip!(daemon());
    assert_eq!(
        lines(&d.ok(&["lease", "ls"])),
        ["ID   CREATED AT   LABELS"],
        "no work in flight, no lease"
    );
    assert_eq!(d.ok(&["leases", "ls", "-q"]), "");
    refused(
        &d,
        &["lease", "rm", "nosuch"],
        "no lease nosuch in namespace default",
    );

    // An image larger than everything between berthd and a client that does not read
    // (berthd's queue, HTTP/2 windows, a pipe): its export waits, holding its lease, until
    // the client reads or the lease goes.
    d.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "fat",
        "busybox",
        "dd",
        "if=/dev/urandom",
        "of=/fat",
        "bs=1048576",
        "count=48",
    ]);
    d.ok(&["commit", "fat", "fat:1"]);
    let mut save = d.cmd();
    save.args(["save", "fat:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut save = save.spawn().unwrap();

    let start = Instant::now();
    let id = loop {
        let ids = lines(&d.ok(&["lease", "ls", "-q"]));
        if let [id] = ids.as_slice() {
            break id.clone();
        }
        assert!(ids.is_empty(), "{ids:?}");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the export's lease never showed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(id.starts_with("export-"), "{id}");
    let ls = d.ok(&["lease", "ls"]);
    let row = &rows(&ls)[0];
    assert_eq!(row[0], id);
    assert_eq!(
        row[2], "berth.lease.image=fat:1,berth.lease.operation=export",
        "{ls}"
    );
    let blobs: Vec<String> =
        serde_json::from_str(&d.ok(&["lease", "ls", "--format", "{{json .Blobs}}"])).unwrap();
    // It holds the image's two layers, busybox's and the 48 MiB one.
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    let big = d
        .ok(&["content", "ls", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|b| b["Bytes"].as_u64() > Some(48 << 20))
        .expect("the big layer is stored");
    assert!(
        blobs.iter().any(|b| b == big["Digest"].as_str().unwrap()),
        "{blobs:?} {big}"
    );
    // Work in flight keeps its namespace.
    refused(&d, &["ns", "rm", "default"], "1 lease (work in flight)");

    assert_eq!(d.ok(&["lease", "rm", &id]), format!("{id}\n"));
    // berthd answered once the lease was gone.
    assert_eq!(d.ok(&["lease", "ls", "-q"]), "");
    // The client gets what was queued, then the reason: never a cut archive that looks whole.
    let mut got = Vec::new();
    save.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    let mut err = String::new();
    save.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let st = save.wait().unwrap();
    assert_eq!(st.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!(
            "export of fat:1 stopped: its lease {id} was removed"
        )),
        "{err}"
    );
    assert!(got.len() < 48 << 20, "{} bytes arrived", got.len());

    // Nothing was harmed: the image exports whole now.
    let out = TempDir::new("berth-it-ctr-save");
    let file = out.path().join("fat.tar");
    d.ok(&["save", "-o", file.to_str().unwrap(), "fat:1"]);
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(listed.status.success());
    let names = String::from_utf8_lossy(&listed.stdout);
    assert!(names.lines().any(|l| l == "manifest.json"), "{names}");
    assert_eq!(d.ok(&["lease", "ls", "-q"]), "");
}
