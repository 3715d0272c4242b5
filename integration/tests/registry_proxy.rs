//! The registry-proxy as a registry of its own, as a pull-through cache and as a mirror, with
//! the real clients: skopeo, curl, `berth pull` and `berth run` (and docker, when there).
//!
//! Each test starts berthd with `[registry_proxy] listen` on a free loopback port; upstream,
//! where there is one, is Debian's docker-registry.

use berth_integration::{
    busybox_archive, free_port, have, or_skip, Berthd, Dockerd, Registry, TempDir,
};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// berthd serving the distribution API; returns it and `127.0.0.1:PORT`.
fn proxy(extra: &str) -> (Berthd, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Berthd::start(&format!("[registry_proxy]\nlisten = \"{addr}\"\n{extra}"));
    (d, addr)
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo")
}

fn skopeo_ok(args: &[&str]) -> String {
    let o = skopeo(args);
    assert!(
        o.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// skopeo pushes the test busybox archive to `docker://DEST`.
fn push(dest: &str, creds: Option<&str>) -> Output {
    let src = format!("oci-archive:{}", busybox_archive().display());
    let dest = format!("docker://{dest}");
    let mut args = vec!["copy", "-q", "--dest-tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--dest-creds", c]);
    }
    args.extend([src.as_str(), dest.as_str()]);
    skopeo(&args)
}

/// An HTTP answer: status, headers (lowercased names) and body.
struct Http {
    status: u16,
    headers: String,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// curl with `args`, answering status, headers and body.
fn curl(args: &[&str]) -> Http {
    let dir = TempDir::new("berth-it-curl");
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let o = Command::new("curl")
        .args(["-s", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    Http {
        status: String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
    }
}

fn tools(list: &[&str]) -> bool {
    for t in list {
        if !have(t) {
            berth_integration::skip(format!("{t} is not installed"));
            return false;
        }
    }
    true
}

fn blob_files(d: &Berthd) -> usize {
    std::fs::read_dir(d.root().join("registry-proxy/blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[test]
fn skopeo_pushes_in_berth_pulls_and_runs() {
    if !tools(&["skopeo", "curl", "umoci"]) {
        return;
    }
    let (d, addr) = proxy("");
    let v2 = curl(&[&format!("http://{addr}/v2/")]);
    assert_eq!(v2.status, 200);
    assert_eq!(
        v2.header("docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );

    let o = push(&format!("{addr}/team/tools/busybox:1.0"), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = push(&format!("{addr}/team/tools/busybox:latest"), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // What skopeo reads back is what it pushed, byte for byte (the same manifest digest).
    let source = skopeo_ok(&[
        "inspect",
        "--format",
        "{{.Digest}}",
        &format!("oci-archive:{}", busybox_archive().display()),
    ]);
    let image = format!("docker://{addr}/team/tools/busybox:1.0");
    let pushed = skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &image,
    ]);
    assert_eq!(pushed.trim(), source.trim());
    let tags = skopeo_ok(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{addr}/team/tools/busybox"),
    ]);
    let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1.0", "latest"]));
    let out = TempDir::new("berth-it-copy-out");
    skopeo_ok(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &image,
        &format!("oci:{}:copy", out.path().display()),
    ]);
    let copied = skopeo_ok(&[
        "inspect",
        "--format",
        "{{.Digest}}",
        &format!("oci:{}:copy", out.path().display()),
    ]);
    assert_eq!(copied.trim(), source.trim());

    let catalog = curl(&[&format!("http://{addr}/v2/_catalog")]);
    assert_eq!(catalog.body, r#"{"repositories":["team/tools/busybox"]}"#);
    let list = curl(&[&format!(
        "http://{addr}/v2/team/tools/busybox/tags/list?n=1"
    )]);
    assert!(list.body.contains(r#""tags":["1.0"]"#), "{}", list.body);
    assert!(list.header("link").unwrap_or_default().contains("last=1.0"));

    // berth pulls from the registry its own berthd serves, and runs it.
    let reference = format!("{addr}/team/tools/busybox:1.0");
    d.ok(&["pull", "-q", &reference]);
    assert_eq!(
        d.ok(&["run", "--rm", &reference, "echo", "from the proxy"]),
        "from the proxy\n"
    );

    // Deleting the manifest by digest removes both tags.
    let deleted = curl(&[
        "-X",
        "DELETE",
        &format!(
            "http://{addr}/v2/team/tools/busybox/manifests/{}",
            source.trim()
        ),
    ]);
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    let gone = skopeo(&["inspect", "--tls-verify=false", &image]);
    assert!(!gone.status.success(), "the manifest is deleted");
    let list = curl(&[&format!("http://{addr}/v2/team/tools/busybox/tags/list")]);
    assert!(list.body.contains(r#""tags":[]"#), "{}", list.body);
    let missing = curl(&[&format!(
        "http://{addr}/v2/team/tools/busybox/manifests/1.0"
    )]);
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("MANIFEST_UNKNOWN"),
        "{}",
        missing.body
    );
}

#[test]
fn a_push_with_the_wrong_digest_is_refused() {
    if !tools(&["curl"]) {
        return;
    }
    let (d, addr) = proxy("");
    let claimed = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; // "hello"
    let r = curl(&[
        "-X",
        "POST",
        "--data-binary",
        "not hello",
        &format!("http://{addr}/v2/r/blobs/uploads/?digest={claimed}"),
    ]);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("DIGEST_INVALID"), "{}", r.body);
    // A chunked upload closed with the wrong digest too.
    let start = curl(&["-X", "POST", &format!("http://{addr}/v2/r/blobs/uploads/")]);
    assert_eq!(start.status, 202);
    let location = start.header("location").unwrap();
    let patch = curl(&[
        "-X",
        "PATCH",
        "--data-binary",
        "not hello",
        "-H",
        "Content-Range: 0-8",
        &format!("http://{addr}{location}"),
    ]);
    assert_eq!(patch.status, 202);
    assert_eq!(patch.header("range").as_deref(), Some("0-8"));
    let put = curl(&[
        "-X",
        "PUT",
        &format!("http://{addr}{location}?digest={claimed}"),
    ]);
    assert_eq!(put.status, 400);
    assert!(put.body.contains("DIGEST_INVALID"), "{}", put.body);
    let head = curl(&["-I", &format!("http://{addr}/v2/r/blobs/{claimed}")]);
    assert_eq!(head.status, 404);
    assert_eq!(blob_files(&d), 0, "nothing was stored");
    // The right bytes under the same digest are taken.
    let ok = curl(&[
        "-X",
        "POST",
        "--data-binary",
        "hello",
        &format!("http://{addr}/v2/r/blobs/uploads/?digest={claimed}"),
    ]);
    assert_eq!(ok.status, 201, "{}", ok.body);
    let head = curl(&["-I", &format!("http://{addr}/v2/r/blobs/{claimed}")]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").as_deref(), Some("5"));
    let range = curl(&[
        "-H",
        "Range: bytes=1-3",
        &format!("http://{addr}/v2/r/blobs/{claimed}"),
    ]);
    assert_eq!((range.status, range.body.as_str()), (206, "ell"));
}

#[test]
fn basic_auth_when_an_htpasswd_is_configured() {
    if !tools(&["skopeo", "curl", "umoci"]) {
        return;
    }
    let secrets = TempDir::new("berth-it-htpasswd");
    let htpasswd = secrets.path().join("htpasswd");
    let hash = bcrypt::hash("s3cret", 5).unwrap();
    std::fs::write(&htpasswd, format!("# test users\nci:{hash}\n")).unwrap();
    let (_d, addr) = proxy(&format!("htpasswd = \"{}\"\n", htpasswd.display()));

    let anon = curl(&[&format!("http://{addr}/v2/")]);
    assert_eq!(anon.status, 401);
    assert_eq!(
        anon.header("www-authenticate").as_deref(),
        Some("Basic realm=\"berth\"")
    );
    assert!(anon.body.contains("UNAUTHORIZED"), "{}", anon.body);
    let wrong = curl(&["-u", "ci:wrong", &format!("http://{addr}/v2/")]);
    assert_eq!(wrong.status, 401);
    assert_eq!(
        curl(&["-u", "ci:s3cret", &format!("http://{addr}/v2/")]).status,
        200
    );

    let dest = format!("{addr}/private/busybox:1");
    let o = push(&dest, None);
    assert!(!o.status.success(), "a push without credentials is refused");
    let o = push(&dest, Some("ci:wrong"));
    assert!(
        !o.status.success(),
        "a push with a wrong password is refused"
    );
    let o = push(&dest, Some("ci:s3cret"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let image = format!("docker://{dest}");
    assert!(!skopeo(&["inspect", "--tls-verify=false", &image])
        .status
        .success());
    skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "ci:s3cret",
        &image,
    ]);

    // berthd's registry service answers the Basic challenge with the stored credentials.
    let config_dir = TempDir::new("berth-it-docker-config");
    let auth = base64_encode(b"ci:s3cret");
    std::fs::write(
        config_dir.path().join("config.json"),
        format!(r#"{{"auths":{{"{addr}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let anonymous = Berthd::start("");
    let (_, err) = anonymous.fails(&["pull", "-q", &dest]);
    assert!(err.contains("log in"), "{err}");
    let with_login = Berthd::start_with_env(
        "",
        &[("DOCKER_CONFIG", config_dir.path().to_str().unwrap())],
    );
    with_login.ok(&["pull", "-q", &dest]);
    assert_eq!(with_login.ok(&["run", "--rm", &dest, "echo", "ok"]), "ok\n");
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn pulls_through_the_cache_while_upstream_is_down() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("cached/busybox:1");
    let image = format!("{}/cached/busybox:1", reg.addr);

    // A's registry service pulls from upstream and keeps what it fetched.
    let a = Berthd::start("[registry_proxy]\ncache = true\n");
    let started = Instant::now();
    a.ok(&["pull", "-q", &image]);
    let cold = started.elapsed();
    let cached = blob_files(&a);
    assert!(
        cached >= 3,
        "manifest, config and layer are cached: {cached}"
    );
    let head = curl(&[
        "-I",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{}/v2/cached/busybox/manifests/1", reg.addr),
    ]);
    let digest = head.header("docker-content-digest").unwrap_or_default();

    // Upstream goes away; B (own root, no registry service of its own) pulls through A.
    drop(reg);
    let a_sock = format!("unix://{}", a.sock.display());
    let b = Berthd::start_with(
        &format!("[services]\nregistry = \"{a_sock}\"\n"),
        &[],
        &["--service", "image,snapshot,runtime,events"],
    );
    let started = Instant::now();
    b.ok(&["pull", "-q", &image]);
    let warm = started.elapsed();
    assert_eq!(
        b.ok(&["run", "--rm", &image, "echo", "served from the cache"]),
        "served from the cache\n"
    );
    eprintln!(
        "pull of busybox: {cold:?} from upstream into A's cache, {warm:?} from A's cache with upstream down"
    );
    assert_eq!(blob_files(&a), cached, "nothing new was fetched");
    assert!(
        a.log().contains("last resolved to"),
        "the tag came from the remembered digest"
    );
    // By digest too.
    assert!(digest.starts_with("sha256:"), "{}", head.headers);
    {
        let pinned = format!("{}@{digest}", image.trim_end_matches(":1"));
        let c = Berthd::start_with(
            &format!("[services]\nregistry = \"{a_sock}\"\n"),
            &[],
            &["--service", "image,snapshot,runtime,events"],
        );
        c.ok(&["pull", "-q", &pinned]);
    }
    // A tag never resolved while upstream was up cannot be answered.
    let other = image.replace(":1", ":2");
    let (_, err) = b.fails(&["pull", "-q", &other]);
    assert!(
        err.contains("cannot reach") || err.contains("connection refused"),
        "{err}"
    );
}

#[test]
fn serves_as_a_mirror_with_ns() {
    if !tools(&["curl"]) {
        return;
    }
    let reg = or_skip!(Registry::start());
    reg.push_busybox("mirrored/busybox:1");
    let (p, mirror) = proxy("");
    let mirror_config = format!(
        "[registries.\"{}\"]\nmirrors = [\"http://{mirror}\"]\n",
        reg.addr
    );
    let image = format!("{}/mirrored/busybox:1", reg.addr);

    // The convention itself, by hand.
    let direct = curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!(
            "http://{mirror}/v2/mirrored/busybox/manifests/1?ns={}",
            reg.addr
        ),
    ]);
    assert_eq!(direct.status, 200, "{}", direct.body);
    assert!(direct.header("docker-content-digest").is_some());

    // A client with the mirror configured pulls through it: the blobs land in P's cache.
    let c = Berthd::start(&mirror_config);
    c.ok(&["pull", "-q", &image]);
    assert!(blob_files(&p) >= 3, "the mirror cached what it served");
    assert!(!c.log().contains("mirror failed"), "{}", c.log());

    // Upstream down: a new client still pulls, from the mirror alone, and runs it.
    drop(reg);
    let d = Berthd::start(&mirror_config);
    d.ok(&["pull", "-q", &image]);
    assert_eq!(
        d.ok(&["run", "--rm", &image, "echo", "mirrored"]),
        "mirrored\n"
    );
    // The mirror's own registry does not list what it only caches.
    let catalog = curl(&[&format!("http://{mirror}/v2/_catalog")]);
    assert_eq!(catalog.body, r#"{"repositories":[]}"#);
}

#[test]
fn a_mirror_that_is_down_falls_back_to_upstream() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("fallback/busybox:1");
    let dead = format!("127.0.0.1:{}", free_port());
    let c = Berthd::start(&format!(
        "[registries.\"{}\"]\nmirrors = [\"http://{dead}\"]\n",
        reg.addr
    ));
    let image = format!("{}/fallback/busybox:1", reg.addr);
    let started = Instant::now();
    c.ok(&["pull", "-q", &image]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a refused connection falls back at once"
    );
    assert_eq!(
        c.ok(&["run", "--rm", &image, "echo", "fallback"]),
        "fallback\n"
    );
    assert!(
        c.log().contains("mirror failed"),
        "the mirror was tried first: {}",
        c.log()
    );
}

#[test]
fn the_docker_cli_pushes_to_and_pulls_from_it() {
    if !tools(&["docker", "dockerd", "containerd", "skopeo", "umoci", "tar"]) {
        return;
    }
    let (d, addr) = proxy("");
    let o = push(&format!("{addr}/dk/busybox:1"), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let docker = or_skip!(Dockerd::start());

    // docker pulls what skopeo pushed, then pushes it under another name: the layer is
    // mounted across repositories, the config and manifest uploaded.
    docker.ok(&["pull", "-q", &format!("{addr}/dk/busybox:1")]);
    docker.ok(&[
        "tag",
        &format!("{addr}/dk/busybox:1"),
        &format!("{addr}/dk/again:2"),
    ]);
    let pushed = docker.ok(&["push", &format!("{addr}/dk/again:2")]);
    assert!(pushed.contains("Mounted from dk/busybox"), "{pushed}");

    // A new image's layer goes up in docker's chunked upload.
    let content = TempDir::new("berth-it-docker-import");
    std::fs::write(content.path().join("data"), vec![42u8; 3 << 20]).unwrap();
    let fresh = format!("{addr}/dk/fresh:1");
    let tarball = content.path().join("layer.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(content.path())
        .arg("data")
        .status()
        .unwrap();
    assert!(st.success());
    docker.ok(&["import", tarball.to_str().unwrap(), &fresh]);
    let pushed = docker.ok(&["push", &fresh]);
    assert!(pushed.contains("Pushed"), "{pushed}");
    docker.ok(&["rmi", &fresh]);
    docker.ok(&["pull", "-q", &fresh]);

    // berth reads what docker pushed (Docker schema 2), and runs it.
    let again = format!("{addr}/dk/again:2");
    d.ok(&["pull", "-q", &again]);
    assert_eq!(
        d.ok(&["run", "--rm", &again, "echo", "pushed by docker"]),
        "pushed by docker\n"
    );
    d.ok(&["pull", "-q", &fresh]);
    let catalog = curl(&[&format!("http://{addr}/v2/_catalog")]);
    assert_eq!(
        catalog.body,
        r#"{"repositories":["dk/again","dk/busybox","dk/fresh"]}"#
    );
}

#[test]
fn a_cross_repository_read_through_the_mirror_is_refused() {
    if !have("curl") || !have("skopeo") {
        return berth_integration::skip("curl or skopeo is missing");
    }
    let reg = or_skip!(Registry::start());
    reg.push_busybox("team/private:1");
    let (p, mirror) = proxy("");
    let ns = reg.addr.clone();
    let get = |method: &str, path: &str| {
        let url = format!("http://{mirror}/v2/{path}?ns={ns}");
        let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
        // curl -X HEAD would wait for the body a HEAD answer announces.
        let method = if method == "HEAD" { "-I" } else { "-XGET" };
        curl(&[method, "-H", accept, &url])
    };

    // team/private through the mirror: its manifest and layer are cached for team/private.
    let m = get("GET", "team/private/manifests/1");
    assert_eq!(m.status, 200, "{}", m.body);
    let digest = m.header("docker-content-digest").expect("a digest");
    let manifest: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let b = get("GET", &format!("team/private/blobs/{layer}"));
    assert_eq!(b.status, 200, "{}", b.body);
    let cached = std::time::Instant::now();
    while blob_files(&p) < 2 {
        assert!(cached.elapsed() < Duration::from_secs(60), "nothing cached");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The same digests under a name upstream never gave them: refused, HEAD or GET.
    for method in ["GET", "HEAD"] {
        let a = get(method, &format!("someone/else/blobs/{layer}"));
        assert_eq!(a.status, 404, "{method} of a cached layer: {}", a.body);
        let a = get(method, &format!("someone/else/manifests/{digest}"));
        assert_eq!(a.status, 404, "{method} of a cached manifest: {}", a.body);
    }
    let a = get("GET", &format!("someone/else/blobs/{layer}"));
    assert!(!a.body.contains("ustar"), "no layer bytes: {}", a.body);

    // Upstream down: team/private still gets what it was served; no other name gets it.
    drop(reg);
    let a = get("GET", &format!("team/private/manifests/{digest}"));
    assert_eq!(a.status, 200, "{}", a.body);
    let a = get("HEAD", &format!("team/private/blobs/{layer}"));
    assert_eq!(a.status, 200);
    for name in ["someone/else", "team/private-not"] {
        let a = get("GET", &format!("{name}/blobs/{layer}"));
        assert_ne!(a.status, 200, "{name}: {}", a.body);
        let a = get("GET", &format!("{name}/manifests/{digest}"));
        assert_ne!(a.status, 200, "{name}: {}", a.body);
    }
}

#[test]
fn uploads_are_limited_and_swept_while_serving() {
    if !have("curl") {
        return berth_integration::skip("curl is missing");
    }
    let start = |addr: &str| {
        curl(&[
            "-X",
            "POST",
            &format!("http://{addr}/v2/app/blobs/uploads/"),
        ])
    };
    let (_p, addr) = proxy("max_uploads = 1\nmax_upload_size = 16\n");
    let first = start(&addr);
    assert_eq!(first.status, 202, "{}", first.body);
    let location = first.header("location").expect("a Location");
    let a = start(&addr);
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body.contains("TOOMANYREQUESTS"), "{}", a.body);
    let a = curl(&[
        "-X",
        "PATCH",
        "--data-binary",
        "seventeen bytes!!",
        &format!("http://{addr}{location}"),
    ]);
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.body.contains("SIZE_INVALID"), "{}", a.body);

    // An upload nobody writes to is removed while berthd runs, and frees its place.
    let (_q, addr) = proxy("max_uploads = 1\nupload_expiry = 1\n");
    let idle = start(&addr);
    assert_eq!(idle.status, 202, "{}", idle.body);
    let location = idle.header("location").expect("a Location");
    let waited = Instant::now();
    loop {
        let a = curl(&[&format!("http://{addr}{location}")]);
        if a.status == 404 {
            assert!(a.body.contains("BLOB_UPLOAD_UNKNOWN"), "{}", a.body);
            break;
        }
        assert_eq!(a.status, 204, "{}", a.body);
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "the idle upload was never swept"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(start(&addr).status, 202, "its place is free again");
}
