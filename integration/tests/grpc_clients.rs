//! berthd speaks plain gRPC to any language: a Python client (grpcio, with stubs generated from
//! proto/ by grpc_tools.protoc, plus the standard health and reflection packages) checks health,
//! explores the API through server reflection, and calls Version and Images.List with and
//! without the `berth-namespace` metadata against a real daemon.
//!
//! The Python packages go into a virtualenv kept between runs in `/var/cache/berth-ci/pyenv`
//! (`BERTH_PYENV` to move it); without python3, venv or pip the test is skipped (fails under CI).

use berth_integration::{or_skip, Berthd, Registry, TempDir};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PACKAGES: &[&str] = &[
    "grpcio",
    "grpcio-tools",
    "grpcio-health-checking",
    "grpcio-reflection",
];
const IMPORTS: &str = "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2";

/// Runs `cmd` with a time limit; None when it could not start or took too long (then killed).
fn run_for(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take()?;
    let mut err = child.stderr.take()?;
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    Some(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A Python with grpcio, grpcio-tools, grpcio-health-checking and grpcio-reflection, or the
/// reason there is none.
fn python_with_grpc() -> Result<PathBuf, String> {
    let venv = std::env::var_os("BERTH_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth-ci/pyenv"));
    let python = venv.join("bin/python");
    let usable = |py: &Path| {
        let mut c = Command::new(py);
        c.args(["-c", IMPORTS]);
        run_for(c, Duration::from_secs(60)).is_some_and(|o| o.status.success())
    };
    if usable(&python) {
        return Ok(python);
    }
    if !berth_integration::have("python3") {
        return Err("python3 is not installed".into());
    }
    let parent = venv.parent().ok_or("BERTH_PYENV has no parent folder")?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    // One installer at a time, should several test binaries get here together.
    let lock = File::create(parent.join(".pyenv.lock"))
        .map_err(|e| format!("cannot lock {}: {e}", parent.display()))?;
    // SAFETY: flock(2) on a descriptor we own; released when `lock` is closed.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if usable(&python) {
        return Ok(python);
    }
    let mut c = Command::new("python3");
    c.args(["-m", "venv", "--clear"]).arg(&venv);
    match run_for(c, Duration::from_secs(120)) {
        Some(o) if o.status.success() => {}
        Some(o) => {
            return Err(format!(
                "python3 -m venv failed (apt-get install python3-venv?): {}",
                tail(&o.stderr)
            ))
        }
        None => return Err("python3 -m venv did not finish".into()),
    }
    let mut c = Command::new(&python);
    c.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(PACKAGES);
    match run_for(c, Duration::from_secs(600)) {
        Some(o) if o.status.success() => {}
        Some(o) => {
            let _ = std::fs::remove_dir_all(&venv);
            return Err(format!(
                "pip cannot install {}: {}",
                PACKAGES.join(" "),
                tail(&o.stderr)
            ));
        }
        None => {
            let _ = std::fs::remove_dir_all(&venv);
            return Err(format!(
                "pip install {} did not finish in 10 minutes",
                PACKAGES.join(" ")
            ));
        }
    }
    if usable(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import the gRPC packages after pip install",
            python.display()
        ))
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

#[test]
fn python_grpc_client_health_reflection_version_and_namespaces() {
    let python = match python_with_grpc() {
        Ok(p) => p,
        Err(why) => return berth_integration::skip(format!("no Python gRPC client: {why}")),
    };
    let reg = or_skip!(Registry::start());
    reg.push_busybox("busybox:latest");
    let d = Berthd::start("");
    let img = format!("{}/busybox:latest", reg.addr);
    d.ok(&["pull", "-q", &img]);
    // the same image in a third namespace, so that namespaces are seen to select, not to hide
    d.ok(&["-n", "third", "pull", "-q", &img]);
    let cli_id = d.ok(&["images", "-q", "--no-trunc"]);

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stubs = TempDir::new("berth-it-pystubs");
    let mut c = Command::new(&python);
    c.arg(manifest.join("tests/py/berth_client.py"))
        .arg("--address")
        .arg(format!("unix://{}", d.sock.display()))
        .arg("--proto-dir")
        .arg(manifest.join("../proto"))
        .arg("--out-dir")
        .arg(stubs.path())
        .args(["--ns", "default", "--ns", "other", "--ns", "third"])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let o = run_for(c, Duration::from_secs(120))
        .expect("the Python client did not finish within 2 minutes");
    assert!(
        o.status.success(),
        "the Python client failed ({}):\n{}\nberthd's log:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    let r: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "the Python client's output is not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    let all = serde_json::to_string_pretty(&r).unwrap();

    // A stock grpcio channel to `unix:PATH` sends the percent-encoded path as :authority, which
    // the h2 crate under tonic refuses (grpc/grpc#38142, hyperium/h2#487); Python clients set
    // `grpc.default_authority`, as the client above does for everything below.
    if r["stock_unix_channel"] != "OK" {
        eprintln!(
            "NOTE: a stock grpcio channel to unix://{} fails without grpc.default_authority: {}",
            d.sock.display(),
            r["stock_unix_channel"]
        );
    }

    // grpc.health.v1: the server as a whole and each hosted service serve; others are unknown.
    assert_eq!(r["health"][""], "SERVING", "{all}");
    assert_eq!(r["health"]["berth.image"], "SERVING", "{all}");
    assert_eq!(r["health"]["no.such.service"], "error:NOT_FOUND", "{all}");

    // Server reflection lists the API and describes it well enough to call.
    let services = strs(&r["reflection_v1"]["services"]);
    for s in [
        "berth.images.v1.Images",
        "berth.tasks.v1.Tasks",
        "berth.version.v1.Version",
        "berth.containers.v1.Containers",
        "berth.content.v1.Content",
        "berth.snapshots.v1.Snapshots",
        "berth.registry.v1.Registry",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&s.to_string()),
            "reflection does not list {s}: {all}"
        );
    }
    let methods = strs(&r["reflection_v1"]["images_methods"]);
    for m in ["Get", "List", "Inspect", "Pull", "Delete", "Import"] {
        assert!(
            methods.contains(&m.to_string()),
            "reflection's descriptor of Images lacks {m}: {all}"
        );
    }
    if r["reflection_v1alpha"].get("error").is_some() {
        // Python's grpc_reflection client (ProtoReflectionDescriptorDatabase) and older tools
        // speak only v1alpha; berthd serves v1 alone for now.
        eprintln!(
            "NOTE: berthd does not serve grpc.reflection.v1alpha: {}",
            r["reflection_v1alpha"]
        );
    }

    // Version, through stubs generated from proto/.
    assert_eq!(r["version"]["version"], env!("CARGO_PKG_VERSION"), "{all}");
    assert_eq!(r["version"]["os"], "linux", "{all}");
    let hosted = strs(&r["version"]["services"]);
    for s in ["image", "snapshot", "runtime", "registry"] {
        assert!(
            hosted.contains(&s.to_string()),
            "Version does not list the {s} service: {all}"
        );
    }

    // Images.List: no metadata means `default`, where the CLI pulled the image.
    let list = &r["list"];
    let names = strs(&list["(no metadata)"]["names"]);
    assert_eq!(
        names,
        vec![img.clone()],
        "a call without berth-namespace should see what the CLI pulled into default: {all}"
    );
    let ids = strs(&list["(no metadata)"]["ids"]);
    assert_eq!(
        ids,
        vec![cli_id.trim().to_string()],
        "the image id seen from Python differs from `berth images -q --no-trunc`: {all}"
    );
    assert_eq!(
        list["(no metadata)"], list["default"],
        "no metadata and `default` differ: {all}"
    );
    assert!(
        list["other"].get("error").is_none(),
        "listing namespace other failed: {all}"
    );
    assert_eq!(
        strs(&list["other"]["names"]),
        Vec::<String>::new(),
        "namespace other should be empty: {all}"
    );
    assert_eq!(
        strs(&list["third"]["names"]),
        vec![img.clone()],
        "namespace third should hold the image: {all}"
    );
    assert_eq!(
        list["(invalid)"]["error"], "INVALID_ARGUMENT",
        "a malformed namespace must be refused: {all}"
    );

    // Errors map to proper codes for other languages too.
    assert_eq!(r["get_missing"], "NOT_FOUND", "{all}");

    // The Networks service from Python: the built-ins, a network made and removed.
    let net = &r["networks"];
    assert!(net.get("error").is_none(), "{all}");
    let before = strs(&net["before"]);
    for n in ["bridge", "host", "none"] {
        assert!(before.contains(&n.to_string()), "{all}");
    }
    assert_eq!(net["created"]["name"], "pynet", "{all}");
    assert_eq!(net["created"]["driver"], "bridge", "{all}");
    assert!(
        net["created"]["bridge"]
            .as_str()
            .is_some_and(|b| b.starts_with("br-")),
        "{all}"
    );
    assert!(
        net["created"]["subnet"]
            .as_str()
            .is_some_and(|s| s.ends_with("/24")),
        "{all}"
    );
    assert_eq!(net["remove_builtin"], "FAILED_PRECONDITION", "{all}");
    assert!(!strs(&net["after"]).contains(&"pynet".to_string()), "{all}");
    drop(stubs);
}
