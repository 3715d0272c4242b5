//! End to end: every image format berth pulls and runs, each pushed to a real registry with
//! skopeo or through the distribution API — Docker schema 2, zstd and uncompressed layers,
//! indexes with and without linux/amd64 — plus `docker save` archives (and hostile ones),
//! manifests that are not JSON or lie about a layer's size, and images in a namespace.

use berth_integration::{
    busybox_archive, or_skip, require_tools, sha256, Berthd, Registry, TempDir,
};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

struct Env {
    reg: Registry,
    d: Berthd,
}

/// One registry (with busybox:latest) and one berthd shared by the tests of this file; None
/// when a tool is missing.
fn env() -> Option<&'static Env> {
    static E: OnceLock<Option<Env>> = OnceLock::new();
    E.get_or_init(|| {
        require_tools(&["skopeo", "umoci", "curl", "busybox"])?;
        let reg = Registry::start()?;
        reg.push_busybox("busybox:latest");
        let d = Berthd::start("");
        Some(Env { reg, d })
    })
    .as_ref()
}

fn random_hex() -> String {
    let mut rnd = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut rnd))
        .unwrap();
    rnd.iter().map(|b| format!("{b:02x}")).collect()
}

fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        o.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The manifest or index the registry holds for `reference`, as bytes and as JSON.
fn raw_manifest(reference: &str) -> (Vec<u8>, Value) {
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(
        o.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = serde_json::from_slice(&o.stdout).expect("the registry's manifest is JSON");
    (o.stdout, v)
}

/// `berth [prefix…] image inspect IMAGE`, the one image's JSON.
fn inspect(d: &Berthd, prefix: &[&str], image: &str) -> Value {
    let mut args = prefix.to_vec();
    args.extend(["image", "inspect", image]);
    let v: Value = serde_json::from_str(&d.ok(&args)).unwrap();
    v[0].clone()
}

fn blob_path(d: &Berthd, digest: &str) -> PathBuf {
    d.root()
        .join("image/content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The busybox image of the harness: its config and its gzip layer.
struct Busybox {
    config: Vec<u8>,
    layer_gz: Vec<u8>,
}

impl Busybox {
    fn layer_tar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&self.layer_gz[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn diff_id(&self) -> String {
        let c: Value = serde_json::from_slice(&self.config).unwrap();
        c["rootfs"]["diff_ids"][0].as_str().unwrap().to_string()
    }

    /// The config with another platform; the same layer.
    fn config_for(&self, os: &str, arch: &str, variant: Option<&str>) -> Vec<u8> {
        let mut c: Value = serde_json::from_slice(&self.config).unwrap();
        c["os"] = json!(os);
        c["architecture"] = json!(arch);
        if let Some(v) = variant {
            c["variant"] = json!(v);
        }
        serde_json::to_vec(&c).unwrap()
    }
}

fn busybox() -> &'static Busybox {
    static B: OnceLock<Busybox> = OnceLock::new();
    B.get_or_init(|| {
        let dir = TempDir::new("berth-it-bblayout");
        skopeo(&[
            "copy",
            "-q",
            &format!("oci-archive:{}", busybox_archive().display()),
            &format!("oci:{}:img", dir.path().display()),
        ]);
        let blob = |d: &Value| {
            let hex = d.as_str().unwrap().trim_start_matches("sha256:");
            std::fs::read(dir.path().join("blobs/sha256").join(hex)).unwrap()
        };
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let m: Value = serde_json::from_slice(&blob(&index["manifests"][0]["digest"])).unwrap();
        assert_eq!(m["layers"][0]["mediaType"], OCI_LAYER_GZIP, "{m}");
        Busybox {
            config: blob(&m["config"]["digest"]),
            layer_gz: blob(&m["layers"][0]["digest"]),
        }
    })
}

/// An OCI image layout written by hand: `oci-layout`, blobs by digest, `index.json`.
struct Layout {
    dir: TempDir,
    tags: Vec<Value>,
}

impl Layout {
    fn new() -> Layout {
        let dir = TempDir::new("berth-it-layout");
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Layout {
            dir,
            tags: Vec::new(),
        }
    }

    /// Stores a blob; returns its descriptor.
    fn blob(&self, media_type: &str, data: &[u8]) -> Value {
        let digest = sha256(data);
        std::fs::write(
            self.dir
                .path()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
            data,
        )
        .unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": data.len()})
    }

    fn manifest(&self, config: &[u8], layers: &[(&str, &[u8])]) -> Value {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(OCI_CONFIG, config),
            "layers": layers.iter().map(|(t, l)| self.blob(t, l)).collect::<Vec<_>>(),
        });
        self.blob(OCI_MANIFEST, &serde_json::to_vec(&m).unwrap())
    }

    /// An index of `(manifest descriptor, os, arch, variant)`, in that order.
    fn index(&self, entries: &[(Value, &str, &str, Option<&str>)]) -> Value {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(desc, os, arch, variant)| {
                let mut d = desc.clone();
                d["platform"] = json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    d["platform"]["variant"] = json!(v);
                }
                d
            })
            .collect();
        let i = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.blob(OCI_INDEX, &serde_json::to_vec(&i).unwrap())
    }

    /// Names a manifest or index in `index.json`.
    fn tag(&mut self, tag: &str, desc: &Value) {
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.tags.push(d);
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.tags});
        std::fs::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// Pushes a tag with skopeo, byte for byte (`--preserve-digests`: no recompression, no
    /// conversion); `all` copies every manifest of an index.
    fn push(&self, tag: &str, dest: &str, all: bool) {
        let src = format!("oci:{}:{tag}", self.dir.path().display());
        let dest = format!("docker://{dest}");
        let mut args = vec![
            "copy",
            "-q",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ];
        if all {
            args.push("--all");
        }
        args.extend([src.as_str(), dest.as_str()]);
        skopeo(&args);
    }
}

/// One entry of a tar archive written by hand, so that hostile names (`..`, absolute paths)
/// and links go into it exactly as given.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    name: &'a str,
    kind: u8,
    link: &'a str,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        kind: b'0',
        link: "",
        data,
    }
}

fn link<'a>(name: &'a str, kind: u8, target: &'a str) -> Entry<'a> {
    Entry {
        name,
        kind,
        link: target,
        data: b"",
    }
}

/// A ustar archive of `entries`.
fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
        assert!(e.name.len() < 100 && e.link.len() < 100);
        put(&mut h, 0, e.name.as_bytes());
        put(&mut h, 100, b"0000644\0");
        put(&mut h, 108, b"0000000\0");
        put(&mut h, 116, b"0000000\0");
        put(&mut h, 124, format!("{:011o}\0", e.data.len()).as_bytes());
        put(&mut h, 136, b"00000000000\0");
        put(&mut h, 148, b"        ");
        h[156] = e.kind;
        put(&mut h, 157, e.link.as_bytes());
        put(&mut h, 257, b"ustar\x0000");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A small config for one layer.
fn config_of(layer_tar: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
    }))
    .unwrap()
}

/// Pushes a blob through the distribution API (POST an upload, PUT its bytes).
fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let tmp = TempDir::new("berth-it-blob");
    let f = tmp.path().join("blob");
    std::fs::write(&f, data).unwrap();
    let o = Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-D", "-", "-X", "POST"])
        .arg(format!("http://{}/v2/{repo}/blobs/uploads/", reg.addr))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let headers = String::from_utf8_lossy(&o.stdout);
    let location = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .expect("the upload has a Location");
    let mut url = if location.starts_with('/') {
        format!("http://{}{location}", reg.addr)
    } else {
        location
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("digest={digest}"));
    let o = Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-X", "PUT"])
        .args(["-H", "Content-Type: application/octet-stream"])
        .arg("--data-binary")
        .arg(format!("@{}", f.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    digest
}

/// PUTs a manifest through the distribution API; returns the HTTP status.
fn put_manifest(reg: &Registry, repo: &str, tag: &str, media_type: &str, data: &[u8]) -> u16 {
    let tmp = TempDir::new("berth-it-manifest");
    let f = tmp.path().join("manifest");
    std::fs::write(&f, data).unwrap();
    let o = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-H", &format!("Content-Type: {media_type}")])
        .arg("--data-binary")
        .arg(format!("@{}", f.display()))
        .arg(format!("http://{}/v2/{repo}/manifests/{tag}", reg.addr))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A registry stand-in on loopback for what a real registry refuses to store: every
/// manifest request gets `manifest` (as `media_type`), blobs are served by digest.
fn fake_registry(manifest: Vec<u8>, media_type: &'static str, blobs: Vec<Vec<u8>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let content = Arc::new((manifest, blobs));
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let content = content.clone();
            std::thread::spawn(move || answer(conn, &content.0, media_type, &content.1));
        }
    });
    addr
}

fn answer(mut s: TcpStream, manifest: &[u8], media_type: &str, blobs: &[Vec<u8>]) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let mut first = text.lines().next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let blob = path
        .split_once("/blobs/")
        .and_then(|(_, d)| blobs.iter().find(|b| sha256(b) == d));
    let (status, ctype, body): (&str, &str, &[u8]) = if path == "/v2/" || path == "/v2" {
        ("200 OK", "application/json", b"{}")
    } else if path.contains("/manifests/") {
        ("200 OK", media_type, manifest)
    } else if let Some(b) = blob {
        ("200 OK", "application/octet-stream", b)
    } else {
        (
            "404 Not Found",
            "application/json",
            br#"{"errors":[{"code":"NOT_FOUND"}]}"#,
        )
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("200") && path != "/v2/" {
        head.push_str(&format!("Docker-Content-Digest: {}\r\n", sha256(body)));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = s.write_all(body);
    }
}

// 1. Docker schema 2
#[test]
fn docker_schema_2_manifest() {
    let e = or_skip!(env());
    let img = format!("{}/v2s2/busybox:1", e.reg.addr);
    skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("oci-archive:{}", busybox_archive().display()),
        &format!("docker://{img}"),
    ]);
    let (raw, m) = raw_manifest(&img);
    assert_eq!(m["mediaType"], DOCKER_MANIFEST, "{m}");
    assert_eq!(m["layers"][0]["mediaType"], DOCKER_LAYER_GZIP, "{m}");

    e.d.ok(&["pull", "-q", &img]);
    let i = inspect(&e.d, &[], &img);
    assert_eq!(i["Id"], m["config"]["digest"]);
    assert_eq!(i["Architecture"], "amd64");
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["Config"]["Cmd"], json!(["/bin/sh"]));
    assert_eq!(i["RootFS"]["Layers"], json!([busybox().diff_id()]));
    let want = format!("{}/v2s2/busybox@{}", e.reg.addr, sha256(&raw));
    assert!(
        i["RepoDigests"].as_array().unwrap().contains(&json!(want)),
        "{i}"
    );
    assert_eq!(e.d.ok(&["run", "--rm", &img, "echo", "ok"]), "ok\n");
}

// 2. zstd layers
#[test]
fn zstd_compressed_layers() {
    let _e = or_skip!(env());
    // A registry of its own: skopeo reuses a gzip blob it finds anywhere in the same registry
    // rather than recompress, so the shared one (which has busybox) would get gzip.
    let reg = or_skip!(Registry::start());
    let img = format!("{}/zstd/busybox:1", reg.addr);
    skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        "--dest-compress-format",
        "zstd",
        &format!("oci-archive:{}", busybox_archive().display()),
        &format!("docker://{img}"),
    ]);
    let (_, m) = raw_manifest(&img);
    assert_eq!(m["layers"][0]["mediaType"], OCI_LAYER_ZSTD, "{m}");
    let layer = m["layers"][0]["digest"].as_str().unwrap();

    // A clean root, so the layer is really unpacked (an equal chain would be reused).
    let d = Berthd::start("");
    d.ok(&["pull", "-q", &img]);
    let blob = std::fs::read(blob_path(&d, layer)).expect("the zstd blob is in the store");
    assert!(blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "not zstd");
    let i = inspect(&d, &[], &img);
    assert_eq!(i["RootFS"]["Layers"], json!([busybox().diff_id()]));
    assert_eq!(d.ok(&["run", "--rm", &img, "echo", "ok"]), "ok\n");
}

// 3. uncompressed layers
#[test]
fn uncompressed_layers() {
    let e = or_skip!(env());
    let bb = busybox();
    let layer = bb.layer_tar();
    assert_eq!(sha256(&layer), bb.diff_id());
    let mut l = Layout::new();
    let m = l.manifest(&bb.config, &[(OCI_LAYER, &layer)]);
    l.tag("1", &m);
    let img = format!("{}/plain/busybox:1", e.reg.addr);
    l.push("1", &img, false);
    let (raw, rm) = raw_manifest(&img);
    assert_eq!(sha256(&raw), m["digest"].as_str().unwrap());
    assert_eq!(rm["layers"][0]["mediaType"], OCI_LAYER, "{rm}");
    assert_eq!(rm["layers"][0]["digest"], json!(bb.diff_id()), "{rm}");

    let d = Berthd::start("");
    d.ok(&["pull", "-q", &img]);
    let blob = std::fs::read(blob_path(&d, &bb.diff_id())).expect("the layer is in the store");
    assert_eq!(&blob[257..262], b"ustar", "the stored layer is a plain tar");
    let i = inspect(&d, &[], &img);
    assert_eq!(i["RootFS"]["Layers"], json!([bb.diff_id()]));
    assert_eq!(d.ok(&["run", "--rm", &img, "echo", "ok"]), "ok\n");
}

// 4. an index with linux/arm64 first and linux/amd64 second
#[test]
fn an_index_gives_linux_amd64() {
    let e = or_skip!(env());
    let bb = busybox();
    let mut l = Layout::new();
    let arm_config = bb.config_for("linux", "arm64", None);
    let arm = l.manifest(&arm_config, &[(OCI_LAYER_GZIP, &bb.layer_gz)]);
    let amd = l.manifest(&bb.config, &[(OCI_LAYER_GZIP, &bb.layer_gz)]);
    let index = l.index(&[(arm, "linux", "arm64", None), (amd, "linux", "amd64", None)]);
    l.tag("1", &index);
    let img = format!("{}/multi/busybox:1", e.reg.addr);
    l.push("1", &img, true);
    let arm_img = format!("{}/multi/busybox:arm", e.reg.addr);
    l.push("1", &arm_img, true);
    let (raw, ri) = raw_manifest(&img);
    assert_eq!(sha256(&raw), index["digest"].as_str().unwrap());
    assert_eq!(ri["mediaType"], OCI_INDEX);
    let platforms: Vec<&Value> = ri["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["platform"]["architecture"])
        .collect();
    assert_eq!(platforms, [&json!("arm64"), &json!("amd64")]);

    e.d.ok(&["pull", "-q", &img]);
    let i = inspect(&e.d, &[], &img);
    assert_eq!(i["Architecture"], "amd64", "{i}");
    assert_eq!(i["Id"], json!(sha256(&bb.config)));
    let want = format!("{}/multi/busybox@{}", e.reg.addr, sha256(&raw));
    assert!(
        i["RepoDigests"].as_array().unwrap().contains(&json!(want)),
        "{i}"
    );
    assert_eq!(e.d.ok(&["run", "--rm", &img, "echo", "ok"]), "ok\n");

    // the choice is by platform, not by position: asking for arm64 gets the other one
    e.d.ok(&["pull", "-q", "--platform", "linux/arm64", &arm_img]);
    let i = inspect(&e.d, &[], &arm_img);
    assert_eq!(i["Architecture"], "arm64", "{i}");
    assert_eq!(i["Id"], json!(sha256(&arm_config)));
}

// 5. an index without linux/amd64
#[test]
fn an_index_without_linux_amd64_names_what_it_has() {
    let e = or_skip!(env());
    let bb = busybox();
    let mut l = Layout::new();
    let mut entries = Vec::new();
    for (os, arch, variant) in [
        ("linux", "arm64", None),
        ("linux", "arm", Some("v7")),
        ("windows", "amd64", None),
    ] {
        let c = bb.config_for(os, arch, variant);
        let m = l.manifest(&c, &[(OCI_LAYER_GZIP, &bb.layer_gz)]);
        entries.push((m, os, arch, variant));
    }
    let index = l.index(&entries);
    l.tag("1", &index);
    let img = format!("{}/noamd64/busybox:1", e.reg.addr);
    l.push("1", &img, true);
    assert_eq!(
        raw_manifest(&img).1["manifests"].as_array().unwrap().len(),
        3
    );

    let (code, err) = e.d.fails(&["pull", &img]);
    assert_eq!(code, 125, "{err}");
    for want in [
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
        "windows/amd64",
    ] {
        assert!(err.contains(want), "{want} is not named: {err}");
    }
    assert!(!e.d.ok(&["images"]).contains("noamd64"));
}

// 6. `docker save` archives
#[test]
fn import_a_docker_save_archive_and_run_it() {
    let e = or_skip!(env());
    let tmp = TempDir::new("berth-it-save");
    let archive = tmp.path().join("x.tar");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{}/busybox:latest", e.reg.addr),
        &format!("docker-archive:{}:saved/busybox:1", archive.display()),
    ]);
    let out = e.d.ok(&["image", "import", archive.to_str().unwrap()]);
    assert!(out.contains("saved/busybox:1"), "{out}");
    let i = inspect(&e.d, &[], "saved/busybox:1");
    assert_eq!(i["RootFS"]["Layers"], json!([busybox().diff_id()]));
    assert_eq!(
        e.d.ok(&["run", "--rm", "saved/busybox:1", "echo", "ok"]),
        "ok\n"
    );
}

#[test]
fn hostile_archives_are_refused() {
    let _e = or_skip!(env());
    let d = Berthd::start("");
    let tmp = TempDir::new("berth-it-hostile");
    let hex = random_hex();
    let layer = tar(&[file(&format!("hello-{hex}.txt"), b"hello\n")]);
    let config = config_of(&layer);
    let manifest = |tag: &str| {
        serde_json::to_vec(&json!([{
            "Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar"],
        }]))
        .unwrap()
    };
    let import = |name: &str, entries: &[Entry]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, tar(entries)).unwrap();
        d.berth(&["image", "import", p.to_str().unwrap()])
    };

    // as docker save writes it, the archive imports: the refusals below are for the hostile part
    let good = manifest("good/x:1");
    let o = import(
        "good.tar",
        &[
            file("manifest.json", &good),
            file("config.json", &config),
            file("layer.tar", &layer),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let passwd = std::fs::read("/etc/passwd").unwrap();
    let dotdot = format!("../../../../../../../../../../tmp/berth-evil-{hex}");
    let absolute = format!("/tmp/berth-evil-abs-{hex}");
    let target_dir = PathBuf::from(format!("/tmp/berth-evil-dir-{hex}"));
    std::fs::create_dir_all(&target_dir).unwrap();
    let _cleanup = TempDir(target_dir.clone());
    struct Hostile<'a> {
        name: &'a str,
        /// Entries after those of a valid image.
        extra: Vec<Entry<'a>>,
        /// What the error says.
        says: &'a str,
        /// Where the hostile entry would land.
        target: PathBuf,
    }
    let cases = [
        Hostile {
            name: "dotdot",
            extra: vec![file(&dotdot, b"pwned\n")],
            says: "escapes the archive",
            target: PathBuf::from(format!("/tmp/berth-evil-{hex}")),
        },
        Hostile {
            name: "absolute",
            extra: vec![file(&absolute, b"pwned\n")],
            says: "absolute path",
            target: PathBuf::from(&absolute),
        },
        Hostile {
            name: "symlink-dir",
            extra: vec![
                link("lnk", b'2', target_dir.to_str().unwrap()),
                file("lnk/pwned", b"pwned\n"),
            ],
            says: "through a symlink",
            target: target_dir.join("pwned"),
        },
    ];
    for c in &cases {
        let name = c.name;
        let m = manifest(&format!("evil/{name}:1"));
        let mut entries = vec![
            file("manifest.json", &m),
            file("config.json", &config),
            file("layer.tar", &layer),
        ];
        entries.extend(c.extra.iter().copied());
        let o = import(&format!("{name}.tar"), &entries);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: the import succeeded");
        assert_eq!(o.status.code(), Some(125), "{name}: {err}");
        assert!(
            err.contains("archive") && err.contains(c.says),
            "{name}: {err}"
        );
        assert!(
            !c.target.exists(),
            "{name}: {} was written",
            c.target.display()
        );
    }

    // a layer named through a link to a file outside the archive
    for (name, kind) in [("symlink", b'2'), ("hardlink", b'1')] {
        let m = manifest(&format!("evil/{name}:1"));
        let o = import(
            &format!("{name}.tar"),
            &[
                file("manifest.json", &m),
                file("config.json", &config),
                link("layer.tar", kind, "/etc/passwd"),
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: the import succeeded");
        assert!(
            err.contains("outside") || err.contains("absolute path"),
            "{name}: {err}"
        );
    }
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd);
    assert!(
        !blob_path(&d, &sha256(&passwd)).exists(),
        "/etc/passwd went into the content store"
    );
    let images = d.ok(&["images"]);
    assert!(images.contains("good/x"), "{images}");
    assert!(!images.contains("evil"), "{images}");
    // nothing is left of the failed imports
    let tmp_left: Vec<_> = std::fs::read_dir(d.root().join("image/tmp"))
        .expect("berth's folder for imports")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp_left.is_empty(), "{tmp_left:?}");
}

// 7. manifests that are not JSON, layers whose size is a lie
#[test]
fn a_manifest_that_is_not_json_is_refused() {
    let e = or_skip!(env());
    let bad = b"this is not a manifest {".to_vec();
    // a real registry validates what it stores; if it refuses, a stand-in serves the bytes
    let img = if put_manifest(&e.reg, "notjson/x", "1", OCI_MANIFEST, &bad) / 100 == 2 {
        format!("{}/notjson/x:1", e.reg.addr)
    } else {
        format!("{}/notjson/x:1", fake_registry(bad, OCI_MANIFEST, vec![]))
    };
    let (code, err) = e.d.fails(&["pull", &img]);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains("manifest") && err.contains("not valid JSON"),
        "{err}"
    );
    assert!(!e.d.ok(&["images"]).contains("notjson"));
    let (_, err) = e.d.fails(&["image", "inspect", &img]);
    assert!(err.contains("No such image"), "{err}");
}

#[test]
fn a_layer_size_that_lies_is_refused() {
    let e = or_skip!(env());
    let hex = random_hex();
    let layer = tar(&[file(
        &format!("liar-{hex}.txt"),
        b"the size of this layer is a lie\n",
    )]);
    let config = config_of(&layer);
    let repo = "liar/x";
    let layer_digest = push_blob(&e.reg, repo, &layer);
    let config_digest = push_blob(&e.reg, repo, &config);
    let manifest = |size: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": size}],
        }))
        .unwrap()
    };
    // A clean root: the layer must not be in the store from another pull.
    let d = Berthd::start("");
    for (tag, size) in [
        ("bigger", layer.len() + 512),
        ("smaller", layer.len() - 512),
    ] {
        let m = manifest(size);
        let img = if put_manifest(&e.reg, repo, tag, OCI_MANIFEST, &m) / 100 == 2 {
            format!("{}/{repo}:{tag}", e.reg.addr)
        } else {
            let fake = fake_registry(m, OCI_MANIFEST, vec![layer.clone(), config.clone()]);
            format!("{fake}/{repo}:{tag}")
        };
        let (code, err) = d.fails(&["pull", &img]);
        assert_eq!(code, 125, "{tag}: {err}");
        assert!(err.contains("size"), "{tag}: {err}");
        assert!(err.contains(&layer_digest), "{tag}: {err}");
        assert!(
            !blob_path(&d, &layer_digest).exists(),
            "{tag}: a blob of the wrong size became visible"
        );
        assert!(!d.ok(&["images"]).contains("liar"), "{tag}");
    }
    let ingest: Vec<_> = std::fs::read_dir(d.root().join("image/content/ingest"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(ingest.is_empty(), "leftovers in ingest: {ingest:?}");
    // the same layer with its true size pulls: the refusals were for the lie alone
    assert_eq!(
        put_manifest(&e.reg, repo, "honest", OCI_MANIFEST, &manifest(layer.len())) / 100,
        2
    );
    d.ok(&["pull", "-q", &format!("{}/{repo}:honest", e.reg.addr)]);
    assert!(blob_path(&d, &layer_digest).exists());
}

// 8. namespaces from the CLI
#[test]
fn namespaces_from_the_cli() {
    let e = or_skip!(env());
    e.reg.push_busybox("teamonly/busybox:1");
    let img = format!("{}/teamonly/busybox:1", e.reg.addr);
    e.d.ok(&["-n", "team-a", "pull", "-q", &img]);
    assert!(e
        .d
        .ok(&["-n", "team-a", "images"])
        .contains("teamonly/busybox"));
    assert!(!e.d.ok(&["images"]).contains("teamonly"));
    assert!(!e.d.ok(&["-n", "team-b", "images"]).contains("teamonly"));
    let (_, err) = e.d.fails(&["image", "inspect", &img]);
    assert!(err.contains("No such image"), "{err}");
    assert_eq!(
        inspect(&e.d, &["-n", "team-a"], &img)["Architecture"],
        "amd64"
    );
    assert_eq!(
        e.d.ok(&["-n", "team-a", "run", "--rm", &img, "echo", "ok"]),
        "ok\n"
    );
}
