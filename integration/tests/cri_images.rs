//! The Kubernetes CRI (`[cri] socket`), first slice: crictl's version, info, pull, images,
//! inspecti, rmi and imagefsinfo, and critest's Image Manager and runtime-info specs, against
//! a berthd whose registry mirrors point registry.k8s.io, gcr.io and docker.io at a local
//! registry holding the stand-in images of `deploy/cri-images.sh`.
//!
//! crictl and critest 1.27.1 come from `shared/tools/cri` beside the checkout (or
//! `BERTH_CRI_TOOLS`, a folder holding its `unpack` script), unpacked into a cache folder.

use berth_integration::cri::{berthd_with_cri, cri, text, BUSYBOX, STAGING};
use berth_integration::{bin_dir, or_skip, TempDir};
use std::path::Path;
use std::process::Command;

#[test]
fn crictl_version_and_info() {
    let c = or_skip!(cri());
    let version = c.ok(&["version"]);
    assert!(version.contains("RuntimeName:  berth"), "{version}");
    assert!(version.contains("RuntimeApiVersion:  v1"), "{version}");
    assert!(
        version.contains(&format!("RuntimeVersion:  {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    let info = c.json(&["info"]);
    let conditions = info["status"]["conditions"].as_array().unwrap();
    for kind in ["RuntimeReady", "NetworkReady"] {
        let cond = conditions.iter().find(|x| x["type"] == kind).unwrap();
        assert_eq!(cond["status"], true, "{info}");
    }
    assert_eq!(info["cni"]["network"]["name"], "berth-pods", "{info}");
    assert_eq!(
        info["cni"]["confDir"],
        c.cni.path().display().to_string(),
        "{info}"
    );
    assert_eq!(info["config"]["namespace"], "k8s.io", "{info}");

    // Pod stats answer, with no pod or some.
    c.ok(&["statsp"]);
}

#[test]
fn network_not_ready_without_a_cni_config() {
    let c = or_skip!(cri());
    let empty = TempDir::new("berth-it-cni-empty");
    // Not empty (berth would write its default there): a file that is no configuration.
    std::fs::write(empty.path().join("00-broken.conf"), "{}").unwrap();
    let (d, socket) = berthd_with_cri("127.0.0.1:1", empty.path());
    let endpoint = format!("unix://{}", socket.display());
    let out = Command::new(c.tools.join("crictl"))
        .args(["--runtime-endpoint", &endpoint, "info"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let network = info["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "NetworkReady")
        .unwrap()
        .clone();
    assert_eq!(network["status"], false, "{info}");
    assert_eq!(network["reason"], "NetworkPluginNotReady", "{info}");
    assert!(
        network["message"]
            .as_str()
            .unwrap()
            .contains("no network config found"),
        "{info}"
    );
    drop(d);
}

#[test]
fn crictl_pulls_lists_inspects_and_removes_images() {
    let c = or_skip!(cri());
    // An image critest's Image Manager specs (run in parallel) leave alone.
    let user = format!("{STAGING}/test-image-predefined-group");
    c.ok(&["pull", BUSYBOX]);
    // Credentials of the kubelet's AuthConfig go with the pull (this registry needs none).
    c.ok(&["pull", "--creds", "alice:s3cret", &user]);

    let images = c.ok(&["images"]);
    assert!(
        images.lines().any(
            |l| l.starts_with("registry.k8s.io/e2e-test-images/busybox ") && l.contains("1.29-2")
        ),
        "{images}"
    );
    let status = c.json(&["inspecti", &user]);
    let image = &status["status"];
    assert_eq!(
        image["repoTags"],
        serde_json::json!([format!("{user}:latest")]),
        "{status}"
    );
    assert!(
        image["id"].as_str().unwrap().starts_with("sha256:"),
        "{status}"
    );
    assert!(image["repoDigests"][0]
        .as_str()
        .unwrap()
        .starts_with(&format!("{user}@sha256:")));
    assert_eq!(image["uid"]["value"], "1000", "{status}");
    assert_eq!(image["username"], "", "{status}");
    assert_eq!(
        status["info"]["imageSpec"]["config"]["User"], "1000",
        "{status}"
    );
    // By id and by digest too.
    let id = image["id"].as_str().unwrap().to_string();
    let digest = image["repoDigests"][0].as_str().unwrap().to_string();
    for by in [&id, &digest] {
        let again = c.json(&["inspecti", by]);
        assert_eq!(again["status"]["id"], image["id"], "{by}: {again}");
    }
    // An absent image: an empty status, not an error, which crictl reports as absent.
    let out = c.crictl(&["inspecti", &format!("{STAGING}/never-pulled:1")]);
    let t = text(&out);
    assert!(!out.status.success() && t.contains("no such image"), "{t}");

    // berth's own view of namespace k8s.io has it too.
    let listed = c.berthd.ok(&["-n", "k8s.io", "images"]);
    assert!(listed.contains("test-image-predefined-group"), "{listed}");

    let fs = c.json(&["imagefsinfo"]);
    let mountpoint = fs["status"]["fsId"]["mountpoint"].as_str().unwrap();
    assert!(Path::new(mountpoint).is_dir(), "{fs}");
    assert!(
        mountpoint.starts_with(&c.berthd.root().display().to_string()),
        "{fs}"
    );
    let used: u64 = fs["status"]["usedBytes"]["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(used > 1_000_000, "busybox and its libraries: {fs}");

    let removed = c.ok(&["rmi", &user]);
    assert!(removed.contains("Deleted:"), "{removed}");
    let out = c.crictl(&["inspecti", &id]);
    assert!(text(&out).contains("no such image"), "{}", text(&out));
    let out = c.crictl(&["rmi", &user]);
    assert!(
        !out.status.success() && text(&out).contains("no such image"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_pulls_get_clear_errors() {
    let c = or_skip!(cri());
    let out = c.crictl(&["pull", "Bad//Ref"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("InvalidArgument") && t.contains("invalid image reference"),
        "{t}"
    );

    let out = c.crictl(&["pull", "--auth", "not base64!", BUSYBOX]);
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("AuthConfig.auth is not base64"),
        "{t}"
    );

    let out = c.crictl(&["pull", &format!("{STAGING}/no-such-image:1")]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("pulling image gcr.io/k8s-staging-cri-tools/no-such-image:1"),
        "{}",
        text(&out)
    );
}

#[test]
fn critest_image_manager_and_runtime_info() {
    let c = or_skip!(cri());
    let t = c.critest_passes(&[
        "--ginkgo.focus=Image Manager|runtime should support returning runtime info",
        "--ginkgo.skip=public image with digest should be pulled",
    ]);
    assert!(t.contains("Ran 8 of"), "{t}");
    assert!(t.contains("8 Passed | 0 Failed"), "{t}");
}

#[test]
fn the_cri_service_needs_its_socket() {
    let dir = TempDir::new("berth-it-cri-nosocket");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = \"{0}/root\"\nstate = \"{0}/state\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(bin_dir().join("berthd"))
        .arg("--config")
        .arg(&config)
        .args(["--service", "cri"])
        .output()
        .expect("run berthd");
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("service cri needs a socket: set [cri] socket"),
        "{t}"
    );
}
