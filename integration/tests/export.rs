//! End to end: `berth image export` (an OCI image layout) read by skopeo and umoci, `berth save`
//! (`docker save`'s format) loaded by `berth load` into another berthd and by the real docker,
//! each blob once however many names share it, and an unknown name failing without a file.

use berth_integration::{
    busybox_archive, or_skip, require_tools, sha256, Berthd, Dockerd, TempDir,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const BUSYBOX: &str = "docker.io/library/busybox:latest";
const TWO: &str = "docker.io/library/two:layers";

/// One berthd holding busybox:latest (also tagged localhost:5000/team/bb:v1) and two:layers
/// (busybox's layer plus one more), shared by the tests of this file; None without the tools.
struct Env {
    d: Berthd,
}

fn env() -> Option<&'static Env> {
    static E: OnceLock<Option<Env>> = OnceLock::new();
    E.get_or_init(|| {
        require_tools(&["skopeo", "umoci", "tar", "busybox"])?;
        let d = Berthd::start("");
        d.ok(&["image", "import", busybox_archive().to_str().unwrap()]);
        d.ok(&["tag", "busybox:latest", "localhost:5000/team/bb:v1"]);
        let tmp = TempDir::new("berth-it-export-setup");
        let two = two_layer_archive(tmp.path());
        d.ok(&["image", "import", two.to_str().unwrap()]);
        Some(Env { d })
    })
    .as_ref()
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn untar(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into));
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A `docker save` archive of "two:layers": busybox's gzip layer and a plain tar with
/// /extra.txt, made from the harness's busybox archive.
fn two_layer_archive(dir: &Path) -> PathBuf {
    let bb = dir.join("busybox");
    untar(&busybox_archive(), &bb);
    let index = read_json(&bb.join("index.json"));
    let blob = |d: &Value| bb.join("blobs/sha256").join(&d.as_str().unwrap()[7..]);
    let manifest = read_json(&blob(&index["manifests"][0]["digest"]));
    let mut config = read_json(&blob(&manifest["config"]["digest"]));

    let save = dir.join("save");
    let files = dir.join("extra");
    std::fs::create_dir_all(&save).unwrap();
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("extra.txt"), "second layer\n").unwrap();
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(save.join("extra.tar"))
        .arg("-C")
        .arg(&files)
        .arg("extra.txt"));
    let extra = std::fs::read(save.join("extra.tar")).unwrap();
    std::fs::copy(
        blob(&manifest["layers"][0]["digest"]),
        save.join("base.tar.gz"),
    )
    .unwrap();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(sha256(&extra)));
    config["created"] = json!("2024-05-01T00:00:00Z");
    std::fs::write(
        save.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        save.join("manifest.json"),
        serde_json::to_vec(&json!([{
            "Config": "config.json",
            "RepoTags": ["two:layers"],
            "Layers": ["base.tar.gz", "extra.tar"],
        }]))
        .unwrap(),
    )
    .unwrap();
    let out = dir.join("two.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&out)
        .arg("-C")
        .arg(&save)
        .args(["manifest.json", "config.json", "base.tar.gz", "extra.tar"]));
    out
}

/// The image id (config digest) berthd shows for `image`.
fn image_id(d: &Berthd, ns: &[&str], image: &str) -> String {
    let mut args = ns.to_vec();
    args.extend(["image", "inspect", image]);
    let v: Value = serde_json::from_str(&d.ok(&args)).unwrap();
    v[0]["Id"].as_str().unwrap().to_string()
}

/// The names of an archive's entries, as `tar -t` lists them.
fn listing(archive: &Path) -> Vec<String> {
    let o = run(Command::new("tar").arg("-tf").arg(archive));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn blobs_of(list: &[String]) -> Vec<&str> {
    list.iter()
        .filter_map(|p| p.strip_prefix("blobs/sha256/"))
        .filter(|h| !h.is_empty())
        .collect()
}

#[test]
fn an_oci_export_reads_in_skopeo_and_umoci() {
    let e = or_skip!(env());
    let tmp = TempDir::new("berth-it-export-oci");
    let archive = tmp.path().join("images.tar");
    let a = archive.to_str().unwrap();
    e.d.ok(&["image", "export", "busybox:latest", "two:layers", "-o", a]);

    // Every blob once: 2 manifests, 2 configs, busybox's layer (shared) and the extra one.
    let list = listing(&archive);
    let blobs = blobs_of(&list);
    assert_eq!(blobs.len(), 6, "{list:?}");
    assert_eq!(blobs.iter().collect::<BTreeSet<_>>().len(), 6, "{list:?}");
    for f in ["oci-layout", "index.json"] {
        assert!(list.iter().any(|p| p == f), "no {f} in {list:?}");
    }

    let busybox_id = image_id(&e.d, &[], "busybox:latest");
    let out = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{a}:{BUSYBOX}")));
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        inspected["Layers"].as_array().unwrap().len(),
        1,
        "{inspected}"
    );
    let out = run(Command::new("skopeo")
        .args(["inspect", "--config", "--raw"])
        .arg(format!("oci-archive:{a}:{TWO}")));
    assert_eq!(
        sha256(&out.stdout),
        image_id(&e.d, &[], "two:layers"),
        "skopeo reads the config berth has"
    );

    // skopeo copy verifies every blob against its digest on the way.
    for (name, dir, layers) in [(BUSYBOX, "bb", 1), (TWO, "two", 2)] {
        let dest = tmp.path().join(dir);
        run(Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci-archive:{a}:{name}"))
            .arg(format!("dir:{}", dest.display())));
        let m = read_json(&dest.join("manifest.json"));
        assert_eq!(m["layers"].as_array().unwrap().len(), layers, "{m}");
        if name == BUSYBOX {
            assert_eq!(m["config"]["digest"], json!(busybox_id));
        }
    }

    // umoci reads the layout (extracted) and unpacks a runnable rootfs.
    let layout = tmp.path().join("layout");
    untar(&archive, &layout);
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{TWO}", layout.display()))
        .arg(&bundle));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/extra.txt")).unwrap(),
        "second layer\n"
    );
    let index = read_json(&layout.join("index.json"));
    for d in index["manifests"].as_array().unwrap() {
        assert_eq!(
            d["annotations"]["io.containerd.image.name"],
            d["annotations"]["org.opencontainers.image.ref.name"]
        );
    }
}

#[test]
fn save_then_load_into_another_berthd() {
    let e = or_skip!(env());
    let tmp = TempDir::new("berth-it-export-save");
    let archive = tmp.path().join("saved.tar");
    let a = archive.to_str().unwrap();
    e.d.ok(&["save", "-o", a, "busybox:latest", "two:layers"]);
    let lines = {
        let x = tmp.path().join("x");
        untar(&archive, &x);
        read_json(&x.join("manifest.json"))
    };
    assert_eq!(lines.as_array().unwrap().len(), 2, "{lines}");
    assert_eq!(lines[0]["RepoTags"], json!(["busybox:latest"]));
    assert_eq!(lines[1]["RepoTags"], json!(["two:layers"]));

    // To standard output (a pipe), the same archive byte for byte.
    let piped = run(e
        .d
        .cmd()
        .args(["image", "save", "busybox:latest", "two:layers"])
        .stdin(Stdio::null()));
    assert!(
        piped.stdout == std::fs::read(&archive).unwrap(),
        "the archive on standard output differs from the file"
    );

    let other = Berthd::start("");
    let out = other.ok(&["load", "-i", a]);
    assert!(out.contains("Loaded image: busybox:latest\n"), "{out}");
    assert!(out.contains("Loaded image: two:layers\n"), "{out}");
    for name in ["busybox:latest", "two:layers"] {
        assert_eq!(
            image_id(&other, &[], name),
            image_id(&e.d, &[], name),
            "{name}"
        );
    }
    assert_eq!(
        other.ok(&["run", "--rm", "two:layers", "cat", "/extra.txt"]),
        "second layer\n"
    );

    // From standard input, and the OCI export too, into another namespace.
    let oci = tmp.path().join("oci.tar");
    e.d.ok(&["image", "export", "two:layers", "-o", oci.to_str().unwrap()]);
    let o = other
        .cmd()
        .args(["-n", "other", "image", "load", "-q"])
        .stdin(std::fs::File::open(&oci).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Loaded image: two:layers\n"
    );
    assert_eq!(
        image_id(&other, &["-n", "other"], "two:layers"),
        image_id(&e.d, &[], "two:layers")
    );
    assert_eq!(
        other.ok(&[
            "-n",
            "other",
            "run",
            "--rm",
            "two:layers",
            "cat",
            "/extra.txt"
        ]),
        "second layer\n"
    );
}

#[test]
fn names_sharing_an_image_share_its_blobs() {
    let e = or_skip!(env());
    let tmp = TempDir::new("berth-it-export-shared");
    let archive = tmp.path().join("shared.tar");
    let a = archive.to_str().unwrap();
    // A bare repository is all its tags, as with docker save; an id is the image unnamed.
    let id = image_id(&e.d, &[], "busybox:latest");
    e.d.ok(&[
        "save",
        "-o",
        a,
        "busybox",
        "localhost:5000/team/bb:v1",
        &id[7..19],
        "two:layers",
    ]);
    let list = listing(&archive);
    let blobs = blobs_of(&list);
    assert_eq!(blobs.len(), 6, "{list:?}");
    assert_eq!(blobs.iter().collect::<BTreeSet<_>>().len(), 6, "{list:?}");
    let x = tmp.path().join("x");
    untar(&archive, &x);
    let lines = read_json(&x.join("manifest.json"));
    assert_eq!(lines.as_array().unwrap().len(), 2, "{lines}");
    assert_eq!(
        lines[0]["RepoTags"],
        json!(["busybox:latest", "localhost:5000/team/bb:v1"])
    );
    let repos = read_json(&x.join("repositories"));
    assert!(repos["busybox"]["latest"].is_string(), "{repos}");
    assert!(repos["localhost:5000/team/bb"]["v1"].is_string(), "{repos}");
    let index = read_json(&x.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3, "{index}");
}

#[test]
fn an_unknown_name_fails_and_leaves_no_file() {
    let e = or_skip!(env());
    let tmp = TempDir::new("berth-it-export-unknown");
    let out = tmp.path().join("out.tar");
    let o = out.to_str().unwrap();
    for args in [
        vec!["save", "-o", o, "busybox:latest", "nothere:1"],
        vec!["image", "export", "nothere", "-o", o],
        vec!["image", "save", "-o", o, "0123456789ab"],
    ] {
        let (code, err) = e.d.fails(&args);
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(err.contains("No such image"), "{args:?}: {err}");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{args:?} left a file"
        );
    }
    // An archive there before stays as it was.
    std::fs::write(&out, b"before").unwrap();
    e.d.fails(&["save", "-o", o, "nothere:1"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"before");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    // Loading something that is no archive is refused.
    let (code, err) = e.d.fails(&["load", "-i", o]);
    assert_eq!(code, 125, "{err}");
}

#[test]
fn docker_loads_what_berth_saves() {
    let e = or_skip!(env());
    let docker = or_skip!(Dockerd::start());
    let tmp = TempDir::new("berth-it-export-docker");
    let archive = tmp.path().join("saved.tar");
    let a = archive.to_str().unwrap();
    e.d.ok(&["save", "-o", a, "busybox:latest", "two:layers"]);
    let out = docker.ok(&["load", "-i", a]);
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    assert!(out.contains("Loaded image: two:layers"), "{out}");
    for name in ["busybox:latest", "two:layers"] {
        let id = docker.ok(&["image", "inspect", "-f", "{{.Id}}", name]);
        assert_eq!(id.trim(), image_id(&e.d, &[], name), "{name}");
    }
    let layers = docker.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .RootFS.Layers}}",
        "two:layers",
    ]);
    let layers: Value = serde_json::from_str(&layers).unwrap();
    assert_eq!(layers.as_array().unwrap().len(), 2, "{layers}");
    assert_eq!(
        docker.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "two:layers",
            "cat",
            "/extra.txt"
        ]),
        "second layer\n"
    );
}

#[test]
fn a_docker_schema_2_image_exports_as_an_oci_manifest() {
    let _e = or_skip!(env());
    let reg = or_skip!(berth_integration::Registry::start());
    let img = format!("{}/v2s2/busybox:1", reg.addr);
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false", "--format", "v2s2"])
        .arg(format!("oci-archive:{}", busybox_archive().display()))
        .arg(format!("docker://{img}")));
    // A berthd of its own: the shared one may hold busybox's layer under an OCI manifest.
    let d = Berthd::start("");
    d.ok(&["pull", "-q", &img]);
    let tmp = TempDir::new("berth-it-export-v2s2");
    let archive = tmp.path().join("v2s2.tar");
    d.ok(&["image", "export", &img, "-o", archive.to_str().unwrap()]);
    // skopeo 1.9 and umoci 0.4 take only OCI manifests from a layout.
    let layout = tmp.path().join("layout");
    untar(&archive, &layout);
    let index = read_json(&layout.join("index.json"));
    let m = &index["manifests"][0];
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let inspected: Value = serde_json::from_str(&d.ok(&["image", "inspect", &img])).unwrap();
    let pulled = inspected[0]["RepoDigests"][0].as_str().unwrap();
    assert!(
        !pulled.ends_with(m["digest"].as_str().unwrap()),
        "the Docker manifest {pulled} went into the layout as it was"
    );
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{img}", layout.display()))
        .arg(&bundle));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    let out = run(Command::new("skopeo")
        .args(["inspect", "--config", "--raw"])
        .arg(format!("oci-archive:{}:{img}", archive.display())));
    assert_eq!(
        sha256(&out.stdout),
        image_id(&d, &[], &img),
        "the same image id"
    );
}
