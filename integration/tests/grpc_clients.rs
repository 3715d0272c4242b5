//! berthd speaks plain gRPC to any language, on its unix socket, to stock clients with no
//! channel options — as containerd does. Two independent implementations, against real daemons:
//!
//! - Python's grpcio (grpc-core), with stubs generated from proto/ by grpc_tools.protoc and
//!   the standard health and reflection packages: health, server reflection v1 and v1alpha,
//!   a harmless call of every berth service that reflection lists, Images.List with and without
//!   the `berth-namespace` metadata, error codes, the Networks service.
//! - Node's @grpc/grpc-js (gRPC in JavaScript on Node's HTTP/2): health, reflection v1 and
//!   v1alpha, and a call of every berth service, from descriptors that reflection alone gave.
//!
//! grpcio sends the socket's path, percent-encoded, as `:authority` (grpc-core since 1.57,
//! grpc/grpc#38142); grpc-js sends `localhost`, and once, on purpose, the path as it is (as
//! grpc-java and Go programs dialling a path do). The h2 crate refused both until berth
//! patched it (vendor/README.md).
//!
//! The Python packages go into a virtualenv kept between runs in `/var/cache/berth-ci/pyenv`
//! (`BERTH_PYENV` to move it), the Node packages into `/var/cache/berth-ci/nodeenv`
//! (`BERTH_NODEENV`); without python3 and its venv and pip, or node and npm, the test is
//! skipped (fails under CI).

use berth_integration::python::{install, lock_in, run_for};
use berth_integration::{or_skip, Berthd, Registry, TempDir};
use serde_json::Value;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PACKAGES: &[&str] = &[
    "grpcio",
    "grpcio-tools",
    "grpcio-health-checking",
    "grpcio-reflection",
];
const IMPORTS: &str = "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2";

/// The Node packages of the grpc-js client, pinned.
const NODE_PACKAGES: &[(&str, &str)] = &[
    ("@grpc/grpc-js", "1.14.7"),
    ("@grpc/proto-loader", "0.8.1"),
    ("@grpc/reflection", "1.0.4"),
    ("grpc-health-check", "2.1.0"),
];

/// berth's services, each of which both clients call once (found through reflection).
const BERTH_SERVICES: &[&str] = &[
    "berth.build.v1.Build",
    "berth.containers.v1.Containers",
    "berth.content.v1.Content",
    "berth.events.v1.Events",
    "berth.images.v1.Images",
    "berth.networks.v1.Networks",
    "berth.registry.v1.Registry",
    "berth.snapshots.v1.Snapshots",
    "berth.tasks.v1.Tasks",
    "berth.version.v1.Version",
    "berth.volumes.v1.Volumes",
];

/// The `node_modules` folder of the Node packages in [`NODE_PACKAGES`], at their versions, or
/// the reason there is none.
fn node_with_grpc() -> Result<PathBuf, String> {
    let env = std::env::var_os("BERTH_NODEENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth-ci/nodeenv"));
    let modules = env.join("node_modules");
    if !berth_integration::have("node") || !berth_integration::have("npm") {
        return Err("node or npm is not installed (apt-get install nodejs npm)".into());
    }
    let check: String = NODE_PACKAGES
        .iter()
        .map(|(p, v)| {
            format!("if (require('{p}/package.json').version !== '{v}') process.exit(1);")
        })
        .collect();
    let usable = || {
        let mut c = Command::new("node");
        c.args(["-e", &check]).env("NODE_PATH", &modules);
        run_for(c, Duration::from_secs(60)).is_some_and(|o| o.status.success())
    };
    if usable() {
        return Ok(modules);
    }
    let _lock = lock_in(&env, ".install.lock")?;
    if usable() {
        return Ok(modules);
    }
    let wanted: Vec<String> = NODE_PACKAGES
        .iter()
        .map(|(p, v)| format!("{p}@{v}"))
        .collect();
    let mut c = Command::new("npm");
    c.args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&env)
        .args(&wanted);
    install(
        c,
        &format!("npm install {}", wanted.join(" ")),
        Some(&modules),
    )?;
    if usable() {
        Ok(modules)
    } else {
        Err(format!(
            "{} lacks {} after npm install",
            modules.display(),
            wanted.join(" ")
        ))
    }
}

/// Runs a client script with a time limit and reads the JSON object it printed.
fn report_of(c: Command, client: &str, d: &Berthd) -> Value {
    let o = run_for(c, Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the {client} client did not finish within 2 minutes"));
    assert!(
        o.status.success(),
        "the {client} client failed ({}):\n{}\nberthd's log:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "the {client} client's output is not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// What both clients check alike: health, the services that reflection v1 and v1alpha list,
/// and one call of each berth service, all served.
fn assert_served(r: &Value, client: &str) {
    let all = serde_json::to_string_pretty(r).unwrap();
    // grpc.health.v1: the server as a whole and each hosted service serve; others are unknown.
    assert_eq!(r["health"][""], "SERVING", "{client}: {all}");
    assert_eq!(r["health"]["berth.image"], "SERVING", "{client}: {all}");
    assert_eq!(
        r["health"]["no.such.service"], "error:NOT_FOUND",
        "{client}: {all}"
    );
    // Server reflection, v1 and v1alpha: the same services, each listing itself.
    let v1 = strs(&r["reflection_v1"]["services"]);
    let v1alpha = strs(&r["reflection_v1alpha"]["services"]);
    for s in BERTH_SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
        assert!(
            v1.contains(&s.to_string()),
            "{client}: reflection v1 does not list {s}: {all}"
        );
        assert!(
            v1alpha.contains(&s.to_string()),
            "{client}: reflection v1alpha does not list {s}: {all}"
        );
    }
    assert!(v1.contains(&"grpc.reflection.v1.ServerReflection".to_string()));
    assert!(v1alpha.contains(&"grpc.reflection.v1alpha.ServerReflection".to_string()));
    // One harmless call of every berth service that reflection lists; Build, given an empty
    // stream, answers as a build service does.
    for s in v1.iter().filter(|s| s.starts_with("berth.")) {
        let want = if s == "berth.build.v1.Build" {
            "INVALID_ARGUMENT: empty build request"
        } else {
            "OK"
        };
        assert_eq!(
            r["calls"][s], want,
            "{client}: the call of {s} (\"no call known\": a new service, give it a harmless \
             call in read_calls of tests/py/berth_client.py and readCalls of \
             tests/js/berth_client.js): {all}"
        );
    }
}

/// A registry with busybox, and a berthd that pulled it (as REGISTRY/busybox:latest, the third
/// value) into `default` and into a namespace `third`, so that namespaces are seen to select,
/// not to hide.
fn daemon_with_image() -> Option<(Registry, Berthd, String)> {
    let reg = Registry::start()?;
    reg.push_busybox("busybox:latest");
    let d = Berthd::start("");
    let img = format!("{}/busybox:latest", reg.addr);
    d.ok(&["pull", "-q", &img]);
    d.ok(&["-n", "third", "pull", "-q", &img]);
    Some((reg, d, img))
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
    let python = match berth_integration::python::python_with(PACKAGES, IMPORTS) {
        Ok(p) => p,
        Err(why) => return berth_integration::skip(format!("no Python gRPC client: {why}")),
    };
    let (_reg, d, img) = or_skip!(daemon_with_image());
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
        .arg("--image")
        .arg(&img)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let r = report_of(c, "Python", &d);
    let all = serde_json::to_string_pretty(&r).unwrap();

    // Health, reflection v1 and v1alpha, a call of every service, on a stock channel.
    assert_served(&r, "Python");
    // Reflection describes the API well enough to call, in both versions.
    for v in ["reflection_v1", "reflection_v1alpha"] {
        let methods = strs(&r[v]["images_methods"]);
        for m in ["Get", "List", "Inspect", "Pull", "Delete", "Import"] {
            assert!(
                methods.contains(&m.to_string()),
                "{v}'s descriptor of Images lacks {m}: {all}"
            );
        }
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

#[test]
fn node_grpc_js_client_health_reflection_and_every_service() {
    let modules = match node_with_grpc() {
        Ok(m) => m,
        Err(why) => return berth_integration::skip(format!("no Node gRPC client: {why}")),
    };
    let (_reg, d, img) = or_skip!(daemon_with_image());

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new("node");
    c.arg(manifest.join("tests/js/berth_client.js"))
        .arg("--address")
        .arg(format!("unix://{}", d.sock.display()))
        .arg("--image")
        .arg(&img)
        .env("NODE_PATH", &modules);
    let r = report_of(c, "Node", &d);
    let all = serde_json::to_string_pretty(&r).unwrap();

    assert_served(&r, "Node");
    // Everything below came from reflection's descriptors: berth's files and what they import.
    for v in ["reflection_v1", "reflection_v1alpha"] {
        let files = strs(&r[v]["files"]);
        for f in [
            "berth/images/v1/images.proto",
            "berth/types/v1/types.proto",
            "google/protobuf/timestamp.proto",
        ] {
            assert!(
                files.contains(&f.to_string()),
                "{v} did not give {f}: {all}"
            );
        }
        assert_eq!(strs(&r[v]["errors"]), Vec::<String>::new(), "{v}: {all}");
    }
    let methods = strs(&r["images"]["methods"]);
    for m in ["Get", "List", "Inspect", "Pull", "Delete", "Import"] {
        assert!(
            methods.contains(&m.to_string()),
            "reflection's descriptor of Images lacks {m}: {all}"
        );
    }
    // No metadata means `default`; berth-namespace chooses another.
    assert_eq!(strs(&r["images"]["default"]), vec![img.clone()], "{all}");
    assert_eq!(strs(&r["images"]["third"]), vec![img.clone()], "{all}");
    // The socket's path as it is, as :authority (grpc-java, Go programs dialling a path).
    assert_eq!(r["raw_path_authority"], "OK", "{all}");
}
