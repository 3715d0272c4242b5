//! Prometheus metrics end to end: berthd with `[metrics] listen` on a free loopback port, a
//! real registry, a pull and containers run; `/metrics` scraped over HTTP, read by a strict
//! parser of the text format (0.0.4) written here, and — when a Python with
//! `prometheus_client` can be had — by Prometheus' own parser too. Then a split deployment:
//! each berthd serves the metrics of the services it hosts. And an address beyond loopback
//! is refused.

use berth_integration::{free_port, or_skip, Berthd, Registry};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// `GET /metrics` on 127.0.0.1:`port`: the `Content-Type` and the body.
fn scrape(port: u16) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).expect("the metrics are UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    // axum answers with a length or chunks; metrics come with a length.
    assert!(
        head.to_ascii_lowercase().contains("content-length"),
        "expected a Content-Length: {head}"
    );
    (content_type, body.to_string())
}

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `{a="x",b="y\"z"}` → labels; strict about quoting and escapes.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if name.is_empty() && chars.peek().is_none() {
            return Ok(out);
        }
        if !valid_name(&name) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(format!("label {name} without =\"…\""));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape \\{other:?} in label {name}")),
                },
                Some('"') => break,
                Some('\n') | None => return Err(format!("unterminated value of label {name}")),
                Some(c) => value.push(c),
            }
        }
        if out.insert(name.clone(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        match chars.next() {
            Some(',') => {}
            None => return Ok(out),
            Some(c) => return Err(format!("{c:?} after label {name}")),
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Reads the text format strictly: every line a `# HELP`, a `# TYPE` or a sample; a family's
/// HELP and TYPE once each, before its samples, and its samples together; sample names that
/// fit the type (`_total` for counters; `_bucket`, `_sum`, `_count` for histograms); no series
/// twice; histogram buckets cumulative, ending at `+Inf` = `_count`. Returns the samples and
/// the type of each family.
fn parse_strict(text: &str) -> Result<(Vec<Sample>, HashMap<String, String>), String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut samples: Vec<Sample> = Vec::new();
    let mut series = HashSet::new();
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut f = rest.splitn(3, ' ');
            let (kw, name) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            let arg = f.next();
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    finished.insert(c);
                }
                if finished.contains(name) {
                    return Err(at(format!("{name} comes back after another family")));
                }
                current = Some(name.to_string());
            }
            match kw {
                "HELP" => {
                    if !helps.insert(name.to_string()) {
                        return Err(at("a second HELP".into()));
                    }
                }
                "TYPE" => {
                    let t = arg.unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(at(format!("unknown type {t:?}")));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(at("a second TYPE".into()));
                    }
                }
                _ => return Err(at("a comment that is neither HELP nor TYPE".into())),
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(at("an empty or malformed line".into()));
        }
        let (series_part, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
        let value = parse_value(value).map_err(at)?;
        let (name, labels) = match series_part.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(
                    l.strip_suffix('}')
                        .ok_or_else(|| at("no closing }".into()))?,
                )
                .map_err(at)?,
            ),
            None => (series_part, BTreeMap::new()),
        };
        if !valid_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let family = current
            .clone()
            .ok_or_else(|| at("a sample before any TYPE".into()))?;
        let ty = types
            .get(&family)
            .ok_or_else(|| at(format!("no TYPE for {family}")))?;
        let fits = match ty.as_str() {
            "counter" => name == family && family.ends_with("_total"),
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s) == Some(family.as_str())),
            _ => name == family,
        };
        if !fits {
            return Err(at(format!(
                "sample {name} does not belong to {ty} {family}"
            )));
        }
        if ty == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a negative counter".into()));
        }
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(at("the same series twice".into()));
        }
        samples.push((name.to_string(), labels, value));
    }
    // Histograms: cumulative buckets, +Inf = _count.
    for (family, ty) in &types {
        if ty != "histogram" {
            continue;
        }
        let mut by_series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for (name, labels, v) in &samples {
            if *name == format!("{family}_bucket") {
                let mut key = labels.clone();
                let le = key
                    .remove("le")
                    .ok_or(format!("{family}: a bucket without le"))?;
                by_series
                    .entry(key)
                    .or_default()
                    .push((parse_value(&le)?, *v));
            }
        }
        for (key, mut buckets) in by_series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family}{key:?}: buckets not cumulative"));
            }
            let inf = buckets.last().filter(|b| b.0.is_infinite());
            let count = samples
                .iter()
                .find(|(n, l, _)| *n == format!("{family}_count") && *l == key)
                .map(|s| s.2);
            if inf.map(|b| b.1) != count || count.is_none() {
                return Err(format!(
                    "{family}{key:?}: +Inf bucket {inf:?} ≠ _count {count:?}"
                ));
            }
        }
    }
    Ok((samples, types))
}

/// The value of `name` with (at least) these labels, summed over the other labels.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// A Python that has `prometheus_client`: the integration venv's (installing it there when
/// the venv exists), or the system's.
fn python_with_prometheus_client() -> Option<PathBuf> {
    let venv = std::env::var_os("BERTH_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth-ci/pyenv"));
    let venv_python = venv.join("bin/python");
    let has = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for py in [venv_python.clone(), PathBuf::from("python3")] {
        if has(&py) {
            return Some(py);
        }
    }
    if venv_python.exists() {
        let _ = Command::new(&venv_python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "prometheus-client",
            ])
            .output();
        if has(&venv_python) {
            return Some(venv_python);
        }
    }
    None
}

/// Prometheus' own parser reads the text, and its families and sample count agree with ours.
fn check_with_prometheus_client(text: &str, families: usize, samples: usize) {
    let Some(py) = python_with_prometheus_client() else {
        eprintln!("note: no Python with prometheus_client; the text format was checked by the strict parser only");
        return;
    };
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = list(text_string_to_metric_families(sys.stdin.read()))
print(len(fams), sum(len(f.samples) for f in fams))
"#;
    let mut child = Command::new(&py)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        got,
        format!("{families} {samples}"),
        "prometheus_client read other families/samples than the strict parser"
    );
}

fn metrics_config(port: u16) -> String {
    format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")
}

#[test]
fn berthd_serves_prometheus_metrics_of_what_it_did() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("busybox:latest");
    let port = free_port();
    let d = Berthd::start(&metrics_config(port));
    let img = format!("{}/busybox:latest", reg.addr);
    d.ok(&["pull", "-q", &img]);
    d.ok(&["run", "--rm", &img, "true"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "metrics-sleeper",
        &img,
        "sleep",
        "60",
    ]);
    d.ok(&["images"]);
    d.ok(&["image", "prune", "-f"]);
    d.fails(&["image", "inspect", "no-such-image"]);
    // A layer the registry lacks, pushed: its bytes count.
    d.ok(&[
        "run",
        "--name",
        "metrics-changed",
        &img,
        "sh",
        "-c",
        "echo changed > /changed",
    ]);
    let committed = format!("{}/metrics/changed:1", reg.addr);
    d.ok(&["commit", "metrics-changed", &committed]);
    d.ok(&["push", &committed]);

    let (content_type, text) = scrape(port);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let (samples, types) =
        parse_strict(&text).unwrap_or_else(|e| panic!("not the text format: {e}\n{text}"));
    check_with_prometheus_client(&text, types.len(), samples.len());

    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    let rpc = |service: &str, method: &str, code: &str| {
        v(
            "berth_grpc_server_handled_total",
            &[
                ("grpc_service", service),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    };
    // RPC counts: at least the calls made (the harness also calls Version while it waits).
    assert!(rpc("berth.images.v1.Images", "Pull", "OK") >= 1.0);
    assert!(rpc("berth.containers.v1.Containers", "Create", "OK") >= 2.0);
    assert!(rpc("berth.tasks.v1.Tasks", "Start", "OK") >= 2.0);
    assert!(rpc("berth.images.v1.Images", "List", "OK") >= 1.0);
    assert!(rpc("berth.images.v1.Images", "Inspect", "NotFound") >= 1.0);
    assert!(rpc("berth.version.v1.Version", "Version", "OK") >= 1.0);
    // The image service called the registry and snapshot services of this same berthd.
    assert!(rpc("berth.registry.v1.Registry", "Fetch", "OK") >= 1.0);
    assert!(rpc("berth.snapshots.v1.Snapshots", "Apply", "OK") >= 1.0);
    let pull = [
        ("grpc_service", "berth.images.v1.Images"),
        ("grpc_method", "Pull"),
    ];
    assert!(v("berth_grpc_server_started_total", &pull) >= 1.0);
    assert!(v("berth_grpc_server_handling_seconds_count", &pull) >= 1.0);
    assert!(v("berth_grpc_server_handling_seconds_sum", &pull) > 0.0);
    assert_eq!(types["berth_grpc_server_handling_seconds"], "histogram");
    // What the services know.
    assert!(
        v("berth_image_pulled_bytes_total", &[]) > 100_000.0,
        "busybox is bigger"
    );
    assert!(
        v("berth_image_pushed_bytes_total", &[]) > 0.0,
        "the new layer and config"
    );
    assert!(rpc("berth.images.v1.Images", "Push", "OK") >= 1.0);
    assert!(
        v("berth_image_gc_runs_total", &[]) >= 1.0,
        "image prune collects"
    );
    assert!(
        v("berth_content_store_blobs", &[]) >= 3.0,
        "manifest, config, layer"
    );
    assert!(v("berth_content_store_bytes", &[]) >= v("berth_image_pulled_bytes_total", &[]));
    assert_eq!(v("berth_containers", &[("state", "running")]), 1.0);
    assert_eq!(v("berth_containers", &[("state", "created")]), 0.0);
    assert_eq!(v("berth_containers", &[("state", "exited")]), 1.0);
    assert_eq!(types["berth_containers"], "gauge");
    assert!(v("berth_snapshots", &[("kind", "committed")]) >= 1.0);
    assert_eq!(
        v("berth_snapshots", &[("kind", "active")]),
        2.0,
        "the sleeper's layer and the exited container's"
    );
    assert!(v("berth_snapshot_usage_bytes", &[("kind", "committed")]) > 0.0);

    // Counts go up with use.
    let before = rpc("berth.images.v1.Images", "List", "OK");
    d.ok(&["images"]);
    d.ok(&["images"]);
    let (_, text) = scrape(port);
    let (samples, _) = parse_strict(&text).unwrap();
    let after = value(
        &samples,
        "berth_grpc_server_handled_total",
        &[
            ("grpc_service", "berth.images.v1.Images"),
            ("grpc_method", "List"),
            ("grpc_code", "OK"),
        ],
    );
    assert_eq!(after, Some(before + 2.0));
    d.ok(&["rm", "-f", "metrics-sleeper"]);
}

#[test]
fn each_berthd_serves_the_metrics_of_its_own_services() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("busybox:latest");
    let (pa, pb) = (free_port(), free_port());
    let a = Berthd::start_with(
        &metrics_config(pa),
        &[],
        &["--service", "snapshot,registry"],
    );
    let a_sock = format!("unix://{}", a.sock.display());
    let b = Berthd::start_with(
        &format!(
            "{}[services]\nsnapshot = \"{a_sock}\"\nregistry = \"{a_sock}\"\n",
            metrics_config(pb)
        ),
        &[],
        &["--service", "image,runtime"],
    );
    let img = format!("{}/busybox:latest", reg.addr);
    b.ok(&["pull", "-q", &img]);
    b.ok(&["run", "--rm", &img, "true"]);
    let parse = |port| {
        let (_, text) = scrape(port);
        let (samples, _) =
            parse_strict(&text).unwrap_or_else(|e| panic!("not the text format: {e}\n{text}"));
        (samples, text)
    };
    let ((sa, ta), (sb, tb)) = (parse(pa), parse(pb));
    let has = |s: &[Sample], name: &str| s.iter().any(|x| x.0 == name);
    let served = |s: &[Sample], service: &str| {
        value(
            s,
            "berth_grpc_server_handled_total",
            &[("grpc_service", service)],
        )
        .unwrap_or(0.0)
    };
    // A: snapshots and registry fetches, no containers or images.
    assert!(
        has(&sa, "berth_snapshots") && !has(&sa, "berth_containers"),
        "{ta}"
    );
    assert!(!has(&sa, "berth_image_pulled_bytes_total"), "{ta}");
    assert!(
        served(&sa, "berth.snapshots.v1.Snapshots") >= 2.0,
        "Apply, Prepare…: {ta}"
    );
    assert!(served(&sa, "berth.registry.v1.Registry") >= 1.0, "{ta}");
    assert_eq!(served(&sa, "berth.containers.v1.Containers"), 0.0, "{ta}");
    // B: containers and images, no snapshots.
    assert!(
        has(&sb, "berth_containers") && !has(&sb, "berth_snapshots"),
        "{tb}"
    );
    assert!(
        value(&sb, "berth_image_pulled_bytes_total", &[]).unwrap_or(0.0) > 0.0,
        "{tb}"
    );
    assert!(served(&sb, "berth.containers.v1.Containers") >= 1.0, "{tb}");
    assert_eq!(served(&sb, "berth.snapshots.v1.Snapshots"), 0.0, "{tb}");
}

#[test]
fn metrics_beyond_loopback_are_refused_unless_allowed() {
    let dir = berth_integration::TempDir::new("berth-metrics");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = \"{d}/root\"\nstate = \"{d}/state\"\n[metrics]\nlisten = \"0.0.0.0:{}\"\n",
            free_port(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(berth_integration::bin_dir().join("berthd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "berthd started: {err}");
    assert!(
        err.contains("allow_remote") && err.contains("0.0.0.0"),
        "berthd should say why and how: {err}"
    );
    assert!(
        !dir.path().join("state/berth.sock").exists(),
        "refused before any service started"
    );
}

#[test]
fn the_strict_parser_refuses_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(parse_strict(ok).is_ok());
    for bad in [
        "a_total 1\n",                                           // no TYPE
        "# TYPE a counter\na 1\n",                               // counter without _total
        "# TYPE a gauge\na{x=1} 1\n",                            // unquoted label
        "# TYPE a gauge\na{x=\"1\"} one\n",                      // bad value
        "# TYPE a gauge\na 1\na 2\n",                            // series twice
        "# TYPE a gauge\n# TYPE b gauge\nb 1\n# TYPE a gauge\n", // TYPE twice
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 1\n",
        "# TYPE a gauge\na 1", // no final newline
    ] {
        assert!(parse_strict(bad).is_err(), "accepted {bad:?}");
    }
}
