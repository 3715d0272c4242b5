//! The push side of berthd's Registry service and logins, over gRPC against real
//! `docker-registry` instances: an open one, one with htpasswd Basic auth, and one with
//! Bearer tokens from a small token server written here (RS256 JWTs signed with a key made
//! by `openssl` for the test, its certificate in the registry's `rootcertbundle`).

use base64::Engine as _;
use berth_api::registry::v1::registry_client::RegistryClient;
use berth_api::registry::v1::{
    push_blob_request, CheckBlobRequest, CheckBlobResponse, LoginRequest, LogoutRequest,
    PushBlobHeader, PushBlobRequest, PushBlobResponse, PushManifestRequest,
};
use berth_api::types::v1::Descriptor;
use berth_integration::{free_port, have, spawn_tied, Berthd, TempDir};
use sha2::Digest as _;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;
use tonic::Code;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn tools(needed: &[&str]) -> bool {
    let missing: Vec<&str> = needed.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    berth_integration::skip(format!(
        "{} not installed (apt-get install docker-registry skopeo openssl curl)",
        missing.join(", ")
    ));
    false
}

// ---------------------------------------------------------------------------------------
// A docker-registry with the auth section a test wants, logging requests to a file.

struct TestRegistry {
    addr: String,
    dir: TempDir,
    _child: KillOnDrop,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl TestRegistry {
    fn start(auth: &str) -> TestRegistry {
        TestRegistry::start_in(TempDir::new("berth-it-push-registry"), auth)
    }

    fn start_in(dir: TempDir, auth: &str) -> TestRegistry {
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = KillOnDrop(spawn_tied(cmd).expect("start docker-registry"));
        let reg = TestRegistry {
            addr,
            dir,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !matches!(reg.http("GET", "/v2/", None).as_str(), "200" | "401") {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// A registry that wants `user`/`password` over htpasswd Basic auth.
    fn with_htpasswd(user: &str, password: &str) -> TestRegistry {
        let dir = TempDir::new("berth-it-push-registry");
        let file = dir.path().join("htpasswd");
        let hash = bcrypt::hash(password, 5).unwrap();
        std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            file.display()
        );
        TestRegistry::start_in(dir, &auth)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The status of a request with curl (`-u user:pass` when given), as text.
    fn http(&self, method: &str, path: &str, creds: Option<&str>) -> String {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method]);
        if method == "HEAD" {
            cmd.arg("-I");
        }
        if let Some(c) = creds {
            cmd.args(["-u", c]);
        }
        let out = cmd
            .arg(format!("http://{}{path}", self.addr))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A blob's bytes by plain GET (an open registry).
    fn get_blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sf", "-L"])
            .arg(format!("http://{}/v2/{repo}/blobs/{digest}", self.addr))
            .output()
            .expect("curl");
        assert!(out.status.success(), "GET blob {digest} of {repo} failed");
        out.stdout
    }

    /// Whether the registry's storage holds a blob's data under `digest`.
    fn stores(&self, digest: &str) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join(format!(
                "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
                &hex[..2]
            ))
            .exists()
    }

    /// The access log lines of requests of `method` to a path starting with `prefix`.
    fn access(&self, method: &str, prefix: &str) -> Vec<String> {
        let needle = format!("\"{method} {prefix}");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// How many requests of `method` to a path starting with `prefix` the access log shows.
    fn requests(&self, method: &str, prefix: &str) -> usize {
        self.access(method, prefix).len()
    }

    /// How many of them the registry answered with `status`.
    fn answered(&self, method: &str, prefix: &str, status: u16) -> usize {
        let code = format!("HTTP/1.1\" {status} ");
        self.access(method, prefix)
            .iter()
            .filter(|l| l.contains(&code))
            .count()
    }
}

fn skopeo_inspect(reference: &str, creds: Option<&str>, raw: bool) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]);
    if raw {
        cmd.arg("--raw");
    }
    if let Some(c) = creds {
        cmd.arg(format!("--creds={c}"));
    } else {
        cmd.arg("--no-creds");
    }
    let out = cmd
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

// ---------------------------------------------------------------------------------------
// Test content and gRPC helpers.

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` bytes that do not compress and differ per `seed`.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn desc(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: sha256(data),
        size: data.len() as i64,
        annotations: Default::default(),
    }
}

/// An image: a config, one layer, and the manifest naming them.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

fn image(layer: Vec<u8>) -> Image {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        sha256(&layer)
    )
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(&layer), "size": layer.len()}],
    });
    Image {
        config,
        layer,
        manifest: serde_json::to_vec(&manifest).unwrap(),
    }
}

async fn connect(d: &Berthd) -> RegistryClient<Channel> {
    let channel = berth_core::grpc::channel(&format!("unix://{}", d.sock.display())).unwrap();
    RegistryClient::new(channel)
}

/// A berthd that hosts only the Registry service, keeping credentials in `docker_config`.
fn berthd(docker_config: &Path) -> Berthd {
    Berthd::start_with(
        "",
        &[("DOCKER_CONFIG", docker_config.to_str().unwrap())],
        &["--service", "registry"],
    )
}

/// Pushes `data` as the blob `descriptor` names, in gRPC messages of an odd size so that
/// they straddle the chunks.
async fn push_blob(
    c: &mut RegistryClient<Channel>,
    repository: &str,
    descriptor: Descriptor,
    data: &[u8],
    chunk_size: i64,
) -> Result<PushBlobResponse, tonic::Status> {
    let mut messages = vec![PushBlobRequest {
        item: Some(push_blob_request::Item::Header(PushBlobHeader {
            reference: repository.to_string(),
            descriptor: Some(descriptor),
            chunk_size,
            auth: None,
        })),
    }];
    for piece in data.chunks(100_003) {
        messages.push(PushBlobRequest {
            item: Some(push_blob_request::Item::Data(piece.to_vec())),
        });
    }
    Ok(c.push_blob(tokio_stream::iter(messages))
        .await?
        .into_inner())
}

async fn check_blob(
    c: &mut RegistryClient<Channel>,
    repository: &str,
    descriptor: Descriptor,
    mount_from: &[&str],
) -> Result<CheckBlobResponse, tonic::Status> {
    Ok(c.check_blob(CheckBlobRequest {
        reference: repository.to_string(),
        descriptor: Some(descriptor),
        mount_from: mount_from.iter().map(|s| s.to_string()).collect(),
        auth: None,
    })
    .await?
    .into_inner())
}

async fn push_manifest(
    c: &mut RegistryClient<Channel>,
    reference: &str,
    manifest: &[u8],
) -> Result<String, tonic::Status> {
    Ok(c.push_manifest(PushManifestRequest {
        reference: reference.to_string(),
        media_type: OCI_MANIFEST.into(),
        manifest: manifest.to_vec(),
        auth: None,
    })
    .await?
    .into_inner()
    .digest)
}

/// Pushes a whole image (config monolithic, layer in chunks of `chunk`) and its manifest
/// under `reference` (`host/repo:tag`).
async fn push_image(
    c: &mut RegistryClient<Channel>,
    reference: &str,
    img: &Image,
    chunk: i64,
) -> Result<String, tonic::Status> {
    let repository = reference.rsplit_once(':').unwrap().0;
    push_blob(c, repository, desc(OCI_CONFIG, &img.config), &img.config, 0).await?;
    push_blob(
        c,
        repository,
        desc(OCI_LAYER, &img.layer),
        &img.layer,
        chunk,
    )
    .await?;
    push_manifest(c, reference, &img.manifest).await
}

async fn login(
    c: &mut RegistryClient<Channel>,
    registry: &str,
    user: &str,
    password: &str,
) -> Result<String, tonic::Status> {
    Ok(c.login(LoginRequest {
        registry: registry.into(),
        username: user.into(),
        password: password.into(),
    })
    .await?
    .into_inner()
    .message)
}

async fn logout(c: &mut RegistryClient<Channel>, registry: &str) -> bool {
    c.logout(LogoutRequest {
        registry: registry.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .removed
}

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

// ---------------------------------------------------------------------------------------
// An open registry: blobs in one request and in chunks, manifests, CheckBlob and mounts,
// bytes that do not match their digest.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_blobs_and_manifests_and_mounts() {
    if !tools(&["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let reg = TestRegistry::start("");
    let docker = TempDir::new("berth-it-docker-config");
    let d = berthd(docker.path());
    let mut c = connect(&d).await;
    let repo = format!("{}/app", reg.addr);

    // The config in one PUT, the layer (300 KiB) in 64 KiB PATCH chunks.
    let img = image(noise(300 << 10, 1));
    let r = push_blob(&mut c, &repo, desc(OCI_CONFIG, &img.config), &img.config, 0)
        .await
        .unwrap();
    assert_eq!((r.size, r.chunks), (img.config.len() as i64, 1));
    assert_eq!(reg.requests("PATCH", "/v2/app/blobs/uploads/"), 0);
    let r = push_blob(
        &mut c,
        &repo,
        desc(OCI_LAYER, &img.layer),
        &img.layer,
        64 << 10,
    )
    .await
    .unwrap();
    assert_eq!((r.size, r.chunks), (img.layer.len() as i64, 5));
    assert_eq!(
        reg.requests("PATCH", "/v2/app/blobs/uploads/"),
        5,
        "the registry saw the chunks: {}",
        reg.log()
    );
    assert_eq!(reg.get_blob("app", &sha256(&img.layer)), img.layer);
    assert_eq!(reg.get_blob("app", &sha256(&img.config)), img.config);

    // The manifest by tag: skopeo sees the image.
    let digest = push_manifest(&mut c, &format!("{repo}:v1"), &img.manifest)
        .await
        .unwrap();
    assert_eq!(digest, sha256(&img.manifest));
    let raw = skopeo_inspect(&format!("{repo}:v1"), None, true).unwrap();
    assert_eq!(raw, img.manifest);
    let inspected: serde_json::Value =
        serde_json::from_slice(&skopeo_inspect(&format!("{repo}:v1"), None, false).unwrap())
            .unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(inspected["Layers"][0], sha256(&img.layer).as_str());

    // By digest only: the repository alone.
    let img2 = image(noise(1000, 2));
    push_blob(
        &mut c,
        &repo,
        desc(OCI_CONFIG, &img2.config),
        &img2.config,
        0,
    )
    .await
    .unwrap();
    push_blob(&mut c, &repo, desc(OCI_LAYER, &img2.layer), &img2.layer, 0)
        .await
        .unwrap();
    let digest2 = push_manifest(&mut c, &repo, &img2.manifest).await.unwrap();
    assert_eq!(digest2, sha256(&img2.manifest));
    assert_eq!(
        skopeo_inspect(&format!("{repo}@{digest2}"), None, true).unwrap(),
        img2.manifest
    );

    // A manifest naming a blob the repository lacks is refused.
    let orphan = image(noise(10, 3));
    let e = push_manifest(&mut c, &format!("{repo}:orphan"), &orphan.manifest)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("BLOB_UNKNOWN"), "{}", e.message());

    // A blob larger than the default chunk size (16 MiB) goes in chunks of it.
    let big = noise((16 << 20) + 12345, 4);
    let r = push_blob(&mut c, &repo, desc(OCI_LAYER, &big), &big, 0)
        .await
        .unwrap();
    assert_eq!((r.size, r.chunks), (big.len() as i64, 2));
    assert_eq!(sha256(&reg.get_blob("app", &sha256(&big))), sha256(&big));

    // CheckBlob: there, absent, mounted from another repository of the same registry.
    let layer = desc(OCI_LAYER, &img.layer);
    let r = check_blob(&mut c, &repo, layer.clone(), &[]).await.unwrap();
    assert!(r.exists && r.mounted_from.is_empty(), "{r:?}");
    let other = format!("{}/other/app", reg.addr);
    let r = check_blob(&mut c, &other, layer.clone(), &[])
        .await
        .unwrap();
    assert!(!r.exists && r.mounted_from.is_empty(), "{r:?}");
    // The source that lacks it makes the registry open an upload instead, which is
    // cancelled; busybox is on another registry and not asked.
    let r = check_blob(
        &mut c,
        &other,
        layer.clone(),
        &[
            &format!("{}/nothing-here", reg.addr),
            "docker.io/library/busybox",
            &repo,
        ],
    )
    .await
    .unwrap();
    assert_eq!((r.exists, r.mounted_from.as_str()), (false, repo.as_str()));
    assert_eq!(
        reg.requests("POST", "/v2/other/app/blobs/uploads/?mount="),
        2
    );
    assert_eq!(
        reg.answered("DELETE", "/v2/other/app/blobs/uploads/", 204),
        1
    );
    let r = check_blob(&mut c, &other, layer.clone(), &[])
        .await
        .unwrap();
    assert!(r.exists, "mounted, so there now: {r:?}");
    assert_eq!(reg.get_blob("other/app", &layer.digest), img.layer);
    // A blob the source lacks: the registry opens an upload instead, which is cancelled.
    let absent = noise(100, 5);
    let r = check_blob(&mut c, &other, desc(OCI_LAYER, &absent), &[&repo])
        .await
        .unwrap();
    assert!(!r.exists && r.mounted_from.is_empty(), "{r:?}");
    assert_eq!(
        reg.answered("DELETE", "/v2/other/app/blobs/uploads/", 204),
        2
    );

    // Bytes that are not the blob the descriptor names: refused, in one PUT and in chunks,
    // and nothing under either digest.
    for chunk in [0, 64 << 10] {
        let claimed = noise(200 << 10, 10 + chunk as u64);
        let sent = noise(200 << 10, 20 + chunk as u64);
        let e = push_blob(&mut c, &repo, desc(OCI_LAYER, &claimed), &sent, chunk)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("refused") && e.message().contains(&sha256(&sent)),
            "{}",
            e.message()
        );
        for digest in [sha256(&claimed), sha256(&sent)] {
            assert_eq!(
                reg.http("HEAD", &format!("/v2/app/blobs/{digest}"), None),
                "404"
            );
            assert!(!reg.stores(&digest), "{digest} must not be stored");
        }
        // Chunks: the closing PUT never went out. One PUT: it was broken off, never done.
        let hex = sha256(&claimed).trim_start_matches("sha256:").to_string();
        let closing: Vec<String> = reg
            .access("PUT", "/v2/app/blobs/uploads/")
            .into_iter()
            .filter(|l| l.contains(&hex))
            .collect();
        if chunk == 0 {
            assert!(
                closing.iter().all(|l| !l.contains("\" 201 ")),
                "{closing:?}"
            );
        } else {
            assert!(closing.is_empty(), "{closing:?}");
        }
    }
    // Fewer bytes than the descriptor says.
    let short = noise(5000, 30);
    let mut d_short = desc(OCI_LAYER, &short);
    d_short.size += 1;
    let e = push_blob(&mut c, &repo, d_short, &short, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("5000 bytes"), "{}", e.message());
    assert!(!reg.stores(&sha256(&short)));
    // Every refused upload was deleted (404: the registry had dropped it already).
    assert_eq!(
        reg.answered("DELETE", "/v2/app/blobs/uploads/", 204)
            + reg.answered("DELETE", "/v2/app/blobs/uploads/", 404),
        3,
        "{:?}",
        reg.access("DELETE", "/v2/app/blobs/uploads/")
    );

    // Bad requests.
    let e = push_blob(&mut c, "Not A Repo", desc(OCI_LAYER, b"x"), b"x", 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c
        .push_blob(tokio_stream::iter(vec![PushBlobRequest {
            item: Some(push_blob_request::Item::Data(b"no header".to_vec())),
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A registry that is down: Unavailable, naming it.
    let down = format!("127.0.0.1:{}", free_port());
    let e = check_blob(&mut c, &format!("{down}/app"), layer, &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains(&down), "{}", e.message());
    let e = login(&mut c, &down, "u", "p").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

// ---------------------------------------------------------------------------------------
// htpasswd Basic auth: push without login fails clearly; login checks the password and
// stores it Docker's way; logout forgets it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_login_push_and_logout() {
    if !tools(&["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let reg = TestRegistry::with_htpasswd("alice", "s3cret:pw");
    let docker = TempDir::new("berth-it-docker-config");
    // A config.json from elsewhere: its other keys and entries must survive.
    let docker_dir = docker.path().join("nested/.docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(
        docker_dir.join("config.json"),
        r#"{"auths":{"other.example":{"auth":"dTpw"}},"psFormat":"table {{.ID}}","credHelpers":{"gcr.io":"gcloud"}}"#,
    )
    .unwrap();
    let d = berthd(&docker_dir);
    let mut c = connect(&d).await;
    let host = reg.addr.clone();
    let repo = format!("{host}/private");
    let img = image(noise(150 << 10, 40));

    // Without a login: Unauthenticated, saying how to log in.
    let e = check_blob(&mut c, &repo, desc(OCI_LAYER, &img.layer), &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        e.message().contains(&format!("berth login {host}")),
        "{}",
        e.message()
    );
    let e = push_blob(&mut c, &repo, desc(OCI_LAYER, &img.layer), &img.layer, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        e.message().contains(&format!("berth login {host}")),
        "{}",
        e.message()
    );

    // A wrong password: refused, nothing stored.
    let before = std::fs::read(docker_dir.join("config.json")).unwrap();
    let e = login(&mut c, &host, "alice", "wrong").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        e.message().contains(&format!(
            "login to {host} failed: wrong user name or password"
        )),
        "{}",
        e.message()
    );
    assert_eq!(
        std::fs::read(docker_dir.join("config.json")).unwrap(),
        before
    );

    // The right one: stored as Docker does, the rest of the file kept, mode 0600.
    let message = login(&mut c, &format!("http://{host}/"), "alice", "s3cret:pw")
        .await
        .unwrap();
    assert!(message.contains("config.json"), "{message}");
    let conf = config_json(&docker_dir);
    assert_eq!(conf["auths"][&host]["auth"], basic("alice", "s3cret:pw"));
    assert_eq!(conf["auths"]["other.example"]["auth"], "dTpw");
    assert_eq!(conf["psFormat"], "table {{.ID}}");
    assert_eq!(conf["credHelpers"]["gcr.io"], "gcloud");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(docker_dir.join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Now the push works, in chunks too.
    let digest = push_image(&mut c, &format!("{repo}:v1"), &img, 32 << 10)
        .await
        .unwrap();
    assert_eq!(digest, sha256(&img.manifest));
    let raw = skopeo_inspect(&format!("{repo}:v1"), Some("alice:s3cret:pw"), true).unwrap();
    assert_eq!(raw, img.manifest);
    let r = check_blob(&mut c, &repo, desc(OCI_LAYER, &img.layer), &[])
        .await
        .unwrap();
    assert!(r.exists);

    // Logout forgets the credentials, and the connection's authorization with them.
    assert!(logout(&mut c, &host).await);
    assert!(!logout(&mut c, &host).await, "nothing left to remove");
    let conf = config_json(&docker_dir);
    assert!(conf["auths"].get(&host).is_none(), "{conf}");
    assert_eq!(conf["auths"]["other.example"]["auth"], "dTpw");
    let e = push_manifest(&mut c, &format!("{repo}:v2"), &img.manifest)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // Credentials stored while berthd runs (by `docker login`, say) are used at once.
    std::fs::write(
        docker_dir.join("config.json"),
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            basic("alice", "s3cret:pw")
        ),
    )
    .unwrap();
    push_manifest(&mut c, &format!("{repo}:v2"), &img.manifest)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Bearer tokens: a token server that signs RS256 JWTs for docker-registry's `token` auth.

/// (query, Basic user) of every token request.
type Seen = Mutex<Vec<(String, Option<String>)>>;

struct TokenServer {
    realm: String,
    seen: Arc<Seen>,
}

/// Who may do what: user -> (password, actions on any repository).
type Users = HashMap<&'static str, (&'static str, &'static [&'static str])>;

struct Signer {
    key: PathBuf,
    /// The certificate, DER in standard base64, for the `x5c` header.
    x5c: String,
}

impl Signer {
    fn new(dir: &Path) -> Signer {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        let st = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=berth-test-token-issuer"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,digitalSignature,keyCertSign"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(st.success(), "openssl req failed");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(der.status.success());
        Signer {
            key,
            x5c: base64::engine::general_purpose::STANDARD.encode(der.stdout),
        }
    }

    fn jwt(&self, claims: &serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl dgst");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "signing failed");
        format!("{input}.{}", b64(&out.stdout))
    }
}

const SERVICE: &str = "berth-test-registry";
const ISSUER: &str = "berth-test-issuer";

impl TokenServer {
    /// Issues tokens for `users` given as Basic credentials (a wrong password: 401), and
    /// pull-only tokens to anonymous callers.
    fn start(signer: Signer, users: Users) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let shared = Arc::new((signer, users));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, shared) = (seen2.clone(), shared.clone());
                std::thread::spawn(move || {
                    answer_token_request(stream, &seen, &shared.0, &shared.1)
                });
            }
        });
        TokenServer { realm, seen }
    }
}

/// One token request: a token for the scopes asked, with the actions the caller may have.
fn answer_token_request(
    mut stream: std::net::TcpStream,
    seen: &Seen,
    signer: &Signer,
    users: &Users,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let query = target
        .split_once('?')
        .map(|q| q.1)
        .unwrap_or("")
        .to_string();
    let user = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let jti = {
        let mut seen = seen.lock().unwrap();
        seen.push((query.clone(), user.as_ref().map(|u| u.0.clone())));
        seen.len()
    };
    let reply = |stream: &mut std::net::TcpStream, status: &str, body: &str| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.flush();
    };
    let allowed: &[&str] = match &user {
        None => &["pull"],
        Some((u, p)) => match users.get(u.as_str()) {
            Some((pw, actions)) if pw == p => actions,
            _ => {
                let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}"#;
                return reply(&mut stream, "401 Unauthorized", body);
            }
        },
    };
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let granted: Vec<&str> = actions.split(',').filter(|a| allowed.contains(a)).collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": granted}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user.as_ref().map(|u| u.0.as_str()).unwrap_or(""),
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{jti}"),
        "access": access,
    });
    let body = serde_json::json!({"token": signer.jwt(&claims), "expires_in": 300}).to_string();
    reply(&mut stream, "200 OK", &body);
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_login_push_and_logout() {
    if !tools(&["docker-registry", "skopeo", "curl", "openssl"]) {
        return;
    }
    let keys = TempDir::new("berth-it-token-keys");
    let signer = Signer::new(keys.path());
    let users: Users = HashMap::from([
        ("alice", ("wonderland", &["pull", "push"][..])),
        ("reader", ("books", &["pull"][..])),
    ]);
    let tokens = TokenServer::start(signer, users);
    let reg = TestRegistry::start(&format!(
        "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        tokens.realm,
        keys.path().join("token.crt").display()
    ));
    let docker = TempDir::new("berth-it-docker-config");
    let d = berthd(docker.path());
    let mut c = connect(&d).await;
    let host = reg.addr.clone();
    let repo = format!("{host}/team/app");
    let img = image(noise(200 << 10, 50));

    // Anonymous: a pull-only token; checking works, pushing is denied with a way out.
    let r = check_blob(&mut c, &repo, desc(OCI_LAYER, &img.layer), &[])
        .await
        .unwrap();
    assert!(!r.exists, "{r:?}");
    let e = push_blob(&mut c, &repo, desc(OCI_LAYER, &img.layer), &img.layer, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("anonymous users")
            && e.message().contains(&format!("berth login {host}")),
        "{}",
        e.message()
    );
    assert!(
        tokens
            .seen
            .lock()
            .unwrap()
            .iter()
            // Either order: the scope may come from the registry's challenge, which lists the
            // actions in no fixed order.
            .any(|(q, u)| u.is_none()
                && (q.contains("repository%3Ateam%2Fapp%3Apull%2Cpush")
                    || q.contains("repository%3Ateam%2Fapp%3Apush%2Cpull"))),
        "the token was asked for pull and push: {:?}",
        tokens.seen.lock().unwrap()
    );

    // A wrong password: the token server answers 401.
    let e = login(&mut c, &host, "alice", "looking-glass")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        e.message().contains(&format!(
            "login to {host} failed: wrong user name or password"
        )),
        "{}",
        e.message()
    );
    assert!(
        !docker.path().join("config.json").exists(),
        "nothing stored"
    );

    // A user who may only pull: logged in, still denied, now as an account.
    login(&mut c, &host, "reader", "books").await.unwrap();
    let e = push_blob(&mut c, &repo, desc(OCI_LAYER, &img.layer), &img.layer, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("the account stored for it"),
        "{}",
        e.message()
    );

    // A user who may push: everything goes up, chunked too.
    let before = tokens.seen.lock().unwrap().len();
    login(&mut c, &host, "alice", "wonderland").await.unwrap();
    assert!(
        tokens.seen.lock().unwrap()[before..]
            .iter()
            .any(|(_, u)| u.as_deref() == Some("alice")),
        "the login asked the token server with the credentials"
    );
    assert_eq!(
        config_json(docker.path())["auths"][&host]["auth"],
        basic("alice", "wonderland")
    );
    let digest = push_image(&mut c, &format!("{repo}:v1"), &img, 64 << 10)
        .await
        .unwrap();
    assert_eq!(digest, sha256(&img.manifest));
    let raw = skopeo_inspect(&format!("{repo}:v1"), Some("alice:wonderland"), true).unwrap();
    assert_eq!(raw, img.manifest);
    // A mount needs pull on the source and push on the target, in one token.
    let copy = format!("{host}/team/copy");
    let r = check_blob(&mut c, &copy, desc(OCI_LAYER, &img.layer), &[&repo])
        .await
        .unwrap();
    assert_eq!(r.mounted_from, repo, "{r:?}");

    // Logout drops the stored credentials and the tokens obtained with them.
    assert!(logout(&mut c, &host).await);
    let img2 = image(noise(100, 51));
    let e = push_blob(
        &mut c,
        &repo,
        desc(OCI_CONFIG, &img2.config),
        &img2.config,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("anonymous users"), "{}", e.message());
}

/// `berth login`/`logout`/`pull`/`push` from the CLI against an htpasswd registry.
#[test]
fn the_cli_logs_in_pulls_pushes_and_logs_out() {
    if !tools(&["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let reg = TestRegistry::with_htpasswd("bob", "pa ss");
    let st = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            "bob:pa ss",
        ])
        .arg(format!(
            "oci-archive:{}",
            berth_integration::busybox_archive().display()
        ))
        .arg(format!("docker://{}/team/busybox:1", reg.addr))
        .status()
        .unwrap();
    assert!(st.success());
    let docker = TempDir::new("berth-it-cli-login");
    let d = Berthd::start_with_env("", &[("DOCKER_CONFIG", docker.path().to_str().unwrap())]);
    let img = format!("{}/team/busybox:1", reg.addr);
    let login = |password: &str| {
        let mut child = d
            .cmd()
            .args(["login", "-u", "bob", "--password-stdin", &reg.addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };

    let (code, err) = d.fails(&["pull", &img]);
    assert_eq!(code, 125);
    assert!(err.contains(&format!("berth login {}", reg.addr)), "{err}");

    let o = login("wrong");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("wrong user name or password"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!docker.path().join("config.json").exists());

    let o = login("pa ss");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Login Succeeded"));
    d.ok(&["pull", "-q", &img]);
    let pushed = format!("{}/team/copy:2", reg.addr);
    d.ok(&["tag", &img, &pushed]);
    d.ok(&["push", &pushed]);
    skopeo_inspect(&pushed, Some("bob:pa ss"), true).expect("skopeo reads what berth pushed");

    let out = d.ok(&["logout", &reg.addr]);
    assert!(out.contains("Removing login credentials"), "{out}");
    d.ok(&["rmi", &pushed, &img]);
    let (code, _) = d.fails(&["pull", &pushed]);
    assert_eq!(code, 125);
    assert!(d.ok(&["logout", &reg.addr]).contains("Not logged in"));
}
