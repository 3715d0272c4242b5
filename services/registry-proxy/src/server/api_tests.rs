//! The distribution API through its router, request by request as a client sends them.

use super::basic_auth::Htpasswd;
use super::*;
use crate::blobs::BlobStore;
use crate::cache::Cache;
use crate::credentials::Anonymous;
use base64::Engine as _;
use berth_core::config::Config;
use berth_core::media;
use berth_core::Digest;
use http::HeaderMap;
use tower::ServiceExt as _;

struct Fixture {
    dir: tempfile::TempDir,
    registry: Arc<Registry>,
    router: Router,
}

fn fixture(htpasswd: Option<Htpasswd>) -> Fixture {
    fixture_with(htpasswd, UploadLimits::default())
}

fn fixture_with(htpasswd: Option<Htpasswd>, limits: UploadLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(BlobStore::open(dir.path()).unwrap());
    let metadata = Metadata::open(&dir.path().join("metadata")).unwrap();
    let cache = Arc::new(Cache::new(blobs.clone(), metadata.clone()));
    let service = Arc::new(
        RegistryService::new(&Config::default(), Arc::new(Anonymous))
            .unwrap()
            .with_cache(cache),
    );
    let registry =
        Registry::new(blobs, metadata, service, htpasswd, None).with_upload_limits(limits);
    let registry = Arc::new(registry);
    Fixture {
        dir,
        router: router(registry.clone()),
        registry,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

impl Fixture {
    async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.to_vec())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A whole blob in one POST: the answer.
    async fn post_blob(&self, name: &str, data: &[u8]) -> Answer {
        let d = Digest::sha256_of(data);
        let uri = format!("/v2/{name}/blobs/uploads/?digest={d}");
        self.call("POST", &uri, &[], data).await
    }

    /// A whole blob in one POST, which must succeed.
    async fn push_blob(&self, name: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let a = self.post_blob(name, data).await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        d
    }

    fn stored_blobs(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("blobs/sha256"))
            .unwrap()
            .count()
    }
}

fn manifest(config: &Digest, layer: &Digest) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": media::OCI_LAYER_GZIP, "digest": layer.to_string(), "size": 11}]
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn base_says_the_api_version() {
    let f = fixture(None);
    let a = f.call("GET", "/v2/", &[], b"").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("docker-distribution-api-version"), "registry/2.0");
    let a = f.call("GET", "/v2/nothing/here", &[], b"").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.header("docker-distribution-api-version"), "registry/2.0");
    let a = f.call("GET", "/v2/Bad/manifests/x", &[], b"").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_REQUEST, "NAME_INVALID")
    );
}

#[tokio::test]
async fn chunked_upload_manifest_and_pull_back() {
    let f = fixture(None);
    let name = "team/app/web";
    // A session, two chunks, one out of order, then the closing PUT.
    let a = f
        .call("POST", &format!("/v2/{name}/blobs/uploads/"), &[], b"")
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let location = a.header("location").to_string();
    assert!(
        location.starts_with(&format!("/v2/{name}/blobs/uploads/")),
        "{location}"
    );
    assert_eq!(a.header("range"), "0-0");
    let a = f
        .call("PATCH", &location, &[("content-range", "0-5")], b"hello ")
        .await;
    assert_eq!((a.status, a.header("range")), (StatusCode::ACCEPTED, "0-5"));
    let a = f
        .call("PATCH", &location, &[("content-range", "0-4")], b"world")
        .await;
    assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(a.header("range"), "0-5");
    let a = f
        .call("PATCH", &location, &[("content-range", "6-20")], b"world")
        .await;
    assert_eq!(
        a.status,
        StatusCode::BAD_REQUEST,
        "length differs from the range"
    );
    let a = f
        .call("PATCH", &location, &[("content-range", "6-10")], b"world")
        .await;
    assert_eq!(
        (a.status, a.header("range")),
        (StatusCode::ACCEPTED, "0-10")
    );
    let a = f.call("GET", &location, &[], b"").await;
    assert_eq!(
        (a.status, a.header("range")),
        (StatusCode::NO_CONTENT, "0-10")
    );
    let layer = Digest::sha256_of(b"hello world");
    let a = f
        .call("PUT", &format!("{location}?digest={layer}"), &[], b"")
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.header("location"), format!("/v2/{name}/blobs/{layer}"));
    assert_eq!(a.header("docker-content-digest"), layer.to_string());
    let a = f.call("GET", &location, &[], b"").await;
    assert_eq!(a.code(), "BLOB_UPLOAD_UNKNOWN", "the session ended");

    // The blob, whole, by HEAD, and a range of it.
    let blob = format!("/v2/{name}/blobs/{layer}");
    let a = f.call("GET", &blob, &[], b"").await;
    assert_eq!(a.body, b"hello world");
    let a = f.call("HEAD", &blob, &[], b"").await;
    assert_eq!(
        (a.status, a.header("content-length")),
        (StatusCode::OK, "11")
    );
    assert!(a.body.is_empty());
    let a = f.call("GET", &blob, &[("range", "bytes=6-")], b"").await;
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(a.header("content-range"), "bytes 6-10/11");
    assert_eq!(a.body, b"world");

    // A manifest naming a blob not pushed is refused; with its config, it is taken.
    let config = Digest::sha256_of(b"{}");
    let body = manifest(&config, &layer);
    let ct = [("content-type", media::OCI_MANIFEST)];
    let a = f
        .call("PUT", &format!("/v2/{name}/manifests/v1"), &ct, &body)
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    f.push_blob(name, b"{}").await;
    let a = f
        .call("PUT", &format!("/v2/{name}/manifests/v1"), &ct, &body)
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let digest = Digest::sha256_of(&body);
    assert_eq!(a.header("docker-content-digest"), digest.to_string());
    assert_eq!(
        a.header("location"),
        format!("/v2/{name}/manifests/{digest}")
    );

    for reference in ["v1".to_string(), digest.to_string()] {
        let a = f
            .call(
                "GET",
                &format!("/v2/{name}/manifests/{reference}"),
                &[],
                b"",
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, body);
        assert_eq!(a.header("content-type"), media::OCI_MANIFEST);
        assert_eq!(a.header("docker-content-digest"), digest.to_string());
    }
    let a = f
        .call("HEAD", &format!("/v2/{name}/manifests/v1"), &[], b"")
        .await;
    assert_eq!(a.header("content-length"), body.len().to_string());

    // Pushing by digest checks the digest.
    let wrong = Digest::sha256_of(b"not it");
    let a = f
        .call("PUT", &format!("/v2/{name}/manifests/{wrong}"), &ct, &body)
        .await;
    assert_eq!(a.code(), "DIGEST_INVALID");
    let a = f
        .call("PUT", &format!("/v2/{name}/manifests/{digest}"), &ct, &body)
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let a = f
        .call("PUT", &format!("/v2/{name}/manifests/v2"), &ct, b"not json")
        .await;
    assert_eq!(a.code(), "MANIFEST_INVALID");

    // Tags and the catalog.
    f.call("PUT", &format!("/v2/{name}/manifests/latest"), &ct, &body)
        .await;
    let a = f
        .call("GET", &format!("/v2/{name}/tags/list"), &[], b"")
        .await;
    assert_eq!(
        a.json(),
        serde_json::json!({"name": name, "tags": ["latest", "v1"]})
    );
    let a = f.call("GET", "/v2/_catalog", &[], b"").await;
    assert_eq!(a.json(), serde_json::json!({"repositories": [name]}));
    let a = f.call("GET", "/v2/unknown/tags/list", &[], b"").await;
    assert_eq!(a.code(), "NAME_UNKNOWN");

    // Deleting a tag, then the manifest (and its other tags).
    let a = f
        .call("DELETE", &format!("/v2/{name}/manifests/v1"), &[], b"")
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let a = f
        .call("GET", &format!("/v2/{name}/manifests/v1"), &[], b"")
        .await;
    assert_eq!(a.code(), "MANIFEST_UNKNOWN");
    let a = f
        .call(
            "DELETE",
            &format!("/v2/{name}/manifests/{digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let a = f
        .call("GET", &format!("/v2/{name}/manifests/latest"), &[], b"")
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = f.call("DELETE", &blob, &[], b"").await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let a = f.call("GET", &blob, &[], b"").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_wrong_digest_stores_nothing() {
    let f = fixture(None);
    let before = f.stored_blobs();
    let claimed = Digest::sha256_of(b"what I claim");
    let a = f
        .call(
            "POST",
            &format!("/v2/r/blobs/uploads/?digest={claimed}"),
            &[],
            b"what I send",
        )
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let a = f.call("POST", "/v2/r/blobs/uploads/", &[], b"").await;
    let location = a.header("location").to_string();
    f.call("PATCH", &location, &[], b"what I send").await;
    let a = f
        .call("PUT", &format!("{location}?digest={claimed}"), &[], b"")
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let a = f
        .call("HEAD", &format!("/v2/r/blobs/{claimed}"), &[], b"")
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(f.stored_blobs(), before);
    let uploads = std::fs::read_dir(f.dir.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0, "nothing half-written is left");
    let a = f
        .call("POST", "/v2/r/blobs/uploads/?digest=sha256:zz", &[], b"x")
        .await;
    assert_eq!(a.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn mounts_and_cancels() {
    let f = fixture(None);
    let d = f.push_blob("src/repo", b"shared layer").await;
    let a = f
        .call(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
            &[],
            b"",
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.header("location"), format!("/v2/dst/blobs/{d}"));
    let a = f.call("GET", &format!("/v2/dst/blobs/{d}"), &[], b"").await;
    assert_eq!(a.body, b"shared layer");
    // Not mountable from a repository that lacks it: a session instead.
    let a = f
        .call(
            "POST",
            &format!("/v2/dst2/blobs/uploads/?mount={d}&from=nowhere"),
            &[],
            b"",
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let location = a.header("location").to_string();
    let a = f.call("DELETE", &location, &[], b"").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = f.call("DELETE", &location, &[], b"").await;
    assert_eq!(a.code(), "BLOB_UPLOAD_UNKNOWN");
    // A session is bound to its repository, and ids are checked.
    let a = f.call("POST", "/v2/one/blobs/uploads/", &[], b"").await;
    let id = a.header("docker-upload-uuid").to_string();
    let a = f
        .call("GET", &format!("/v2/two/blobs/uploads/{id}"), &[], b"")
        .await;
    assert_eq!(a.code(), "BLOB_UPLOAD_UNKNOWN");
    let a = f.call("GET", "/v2/one/blobs/uploads/..", &[], b"").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

impl Fixture {
    /// A new upload session of `name`: its answer.
    async fn start_upload(&self, name: &str) -> Answer {
        self.call("POST", &format!("/v2/{name}/blobs/uploads/"), &[], b"")
            .await
    }

    fn open_uploads(&self) -> usize {
        self.registry.metadata.upload_count()
    }
}

#[tokio::test]
async fn uploads_are_bounded_in_number_and_size() {
    let limits = UploadLimits {
        open: 2,
        size: 10,
        expiry: std::time::Duration::from_secs(3600),
    };
    let f = fixture_with(None, limits);
    let first = f.start_upload("app").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = f.start_upload("app").await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    let a = f.start_upload("other").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
    );
    assert!(a.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("max_uploads"));
    let a = f.post_blob("app", b"tiny").await;
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a whole-blob POST counts too"
    );
    assert_eq!(f.open_uploads(), 2);
    let a = f.call("DELETE", second.header("location"), &[], b"").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = f.post_blob("app", b"tiny").await;
    assert_eq!(a.status, StatusCode::CREATED, "a slot came free");
    assert_eq!(f.open_uploads(), 1, "the whole-blob POST ended its upload");

    // Bytes: 8 fit, 5 more do not, whether the request says how many or not.
    let location = first.header("location").to_string();
    let patch = |range: Option<&'static str>, body: &'static [u8]| {
        let (f, location) = (&f, location.clone());
        async move {
            let headers: Vec<(&str, &str)> =
                range.map(|r| ("content-range", r)).into_iter().collect();
            f.call("PATCH", &location, &headers, body).await
        }
    };
    let a = patch(Some("0-7"), b"12345678").await;
    assert_eq!((a.status, a.header("range")), (StatusCode::ACCEPTED, "0-7"));
    for range in [Some("8-12"), None] {
        let a = patch(range, b"9abcd").await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            "{range:?}"
        );
        let a = f.call("GET", &location, &[], b"").await;
        assert_eq!(a.header("range"), "0-7", "the refused bytes were dropped");
    }
    let a = f
        .call(
            "PUT",
            &format!("{location}?digest={}", Digest::sha256_of(b"12345678ab")),
            &[],
            b"ab",
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "up to the limit is fine");
    let a = f.post_blob("app", b"eleven byte").await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(f.open_uploads(), 0);
    let uploads = std::fs::read_dir(f.dir.path().join("uploads")).unwrap();
    assert_eq!(uploads.count(), 0, "nothing is left of the refused uploads");
}

#[tokio::test]
async fn stale_uploads_are_swept() {
    let fresh = fixture(None);
    let kept = fresh.start_upload("app").await;
    assert_eq!(blobs::sweep_uploads(&fresh.registry).unwrap(), 0);
    let a = fresh.call("GET", kept.header("location"), &[], b"").await;
    assert_eq!(
        a.status,
        StatusCode::NO_CONTENT,
        "an upload within its expiry stays"
    );

    // With no time to spare every upload is stale, but the one a request is writing to.
    let limits = UploadLimits {
        expiry: std::time::Duration::ZERO,
        ..UploadLimits::default()
    };
    let f = fixture_with(None, limits);
    let (busy, idle) = (f.start_upload("app").await, f.start_upload("app").await);
    let orphan = f.dir.path().join("uploads/left-by-a-crash");
    std::fs::write(&orphan, b"x").unwrap();
    let id = busy.header("docker-upload-uuid").to_string();
    let lock = f.registry.upload_lock(&id);
    let writing = lock.lock().await;
    assert_eq!(blobs::sweep_uploads(&f.registry).unwrap(), 2);
    assert!(!orphan.exists());
    let a = f.call("GET", idle.header("location"), &[], b"").await;
    assert_eq!(a.code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(f.open_uploads(), 1);
    drop(writing);
    let a = f.call("GET", busy.header("location"), &[], b"").await;
    assert_eq!(
        a.status,
        StatusCode::NO_CONTENT,
        "the busy one is still there"
    );
    assert_eq!(blobs::sweep_uploads(&f.registry).unwrap(), 1);
    assert_eq!(f.open_uploads(), 0);
}

#[tokio::test]
async fn catalog_and_tags_paginate() {
    let f = fixture(None);
    let config = f.push_blob("a", b"{}").await;
    let layer = Digest::sha256_of(b"l");
    for repo in ["a", "b/c", "d"] {
        f.push_blob(repo, b"{}").await;
        f.push_blob(repo, b"l").await;
        for tag in ["1", "2", "3"] {
            let a = f
                .call(
                    "PUT",
                    &format!("/v2/{repo}/manifests/{tag}"),
                    &[("content-type", media::OCI_MANIFEST)],
                    &manifest(&config, &layer),
                )
                .await;
            assert_eq!(a.status, StatusCode::CREATED);
        }
    }
    let a = f.call("GET", "/v2/_catalog?n=2", &[], b"").await;
    assert_eq!(a.json()["repositories"], serde_json::json!(["a", "b/c"]));
    assert_eq!(
        a.header("link"),
        "</v2/_catalog?n=2&last=b/c>; rel=\"next\""
    );
    let a = f.call("GET", "/v2/_catalog?n=2&last=b/c", &[], b"").await;
    assert_eq!(a.json()["repositories"], serde_json::json!(["d"]));
    assert_eq!(a.header("link"), "");
    let a = f
        .call("GET", "/v2/b/c/tags/list?n=1&last=1", &[], b"")
        .await;
    assert_eq!(a.json()["tags"], serde_json::json!(["2"]));
    assert!(a.header("link").contains("last=2"));
    let a = f.call("GET", "/v2/_catalog?n=x", &[], b"").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn basic_auth_guards_everything() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let f = fixture(Some(Htpasswd::parse(&format!("ci:{hash}\n")).unwrap()));
    let a = f.call("GET", "/v2/", &[], b"").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("www-authenticate"), "Basic realm=\"berth\"");
    assert_eq!(a.code(), "UNAUTHORIZED");
    let a = f.call("GET", "/v2/_catalog", &[], b"").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:pw")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:nope")
    );
    let a = f.call("GET", "/v2/", &[("authorization", &bad)], b"").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = f
        .call("GET", "/v2/", &[("authorization", &good)], b"")
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = f
        .call("GET", "/v2/_catalog", &[("authorization", &good)], b"")
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

/// Our own server on a loopback port, standing in for the upstream registry of a mirror.
struct Upstream {
    /// Its `host:port`, the mirror's `?ns=`.
    ns: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: std::thread::JoinHandle<()>,
}

impl Upstream {
    fn serve(f: &Fixture) -> Upstream {
        // On a runtime of its own, so stopping it closes its kept-alive connections too.
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = f.router.clone();
        let server = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                tokio::select! {
                    _ = std::future::IntoFuture::into_future(axum::serve(listener, app)) => {}
                    _ = stopped => {}
                }
            });
        });
        let ns = addr_rx.recv().unwrap().to_string();
        Upstream { ns, stop, server }
    }

    fn stop(self) {
        self.stop.send(()).unwrap();
        self.server.join().unwrap();
    }
}

/// `config` and `layer` pushed to `name` with a manifest tagged `1.0`; returns the manifest.
async fn push_image(f: &Fixture, name: &str, config: &[u8], layer: &[u8]) -> Vec<u8> {
    let config = f.push_blob(name, config).await;
    let layer = f.push_blob(name, layer).await;
    let body = manifest(&config, &layer);
    let a = f
        .call(
            "PUT",
            &format!("/v2/{name}/manifests/1.0"),
            &[("content-type", media::OCI_MANIFEST)],
            &body,
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    body
}

#[tokio::test]
async fn mirror_fetches_upstream_once_then_serves_from_its_cache() {
    let upstream = fixture(None);
    let body = push_image(&upstream, "lib/app", b"{}", b"hello world").await;
    let (config, layer) = (Digest::sha256_of(b"{}"), Digest::sha256_of(b"hello world"));
    let server = Upstream::serve(&upstream);
    let ns = server.ns.clone();

    let mirror = fixture(None);
    let digest = Digest::sha256_of(&body);
    let a = mirror
        .call(
            "GET",
            &format!("/v2/lib/app/manifests/1.0?ns={ns}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.body, body);
    assert_eq!(a.header("docker-content-digest"), digest.to_string());
    assert_eq!(a.header("content-type"), media::OCI_MANIFEST);
    let a = mirror
        .call(
            "GET",
            &format!("/v2/lib/app/blobs/{layer}?ns={ns}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(a.body, b"hello world");
    assert_eq!(a.header("content-length"), "11");
    let a = mirror
        .call(
            "HEAD",
            &format!("/v2/lib/app/blobs/{config}?ns={ns}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(
        (a.status, a.header("content-length")),
        (StatusCode::OK, "2")
    );
    let a = mirror
        .call(
            "GET",
            &format!("/v2/lib/app/blobs/{}?ns={ns}", Digest::sha256_of(b"no")),
            &[],
            b"",
        )
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    let a = mirror
        .call(
            "PUT",
            &format!("/v2/lib/app/manifests/x?ns={ns}"),
            &[],
            &body,
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "a mirror is read-only"
    );
    // The mirror's own registry does not list what it caches.
    let a = mirror.call("GET", "/v2/_catalog", &[], b"").await;
    assert_eq!(a.json()["repositories"], serde_json::json!([]));

    // Upstream gone: the tag's last digest, the manifest and the blobs come from the cache.
    server.stop();
    for _ in 0..100 {
        if mirror.stored_blobs() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let a = mirror
        .call(
            "GET",
            &format!("/v2/lib/app/manifests/1.0?ns={ns}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.body, body);
    let a = mirror
        .call(
            "GET",
            &format!("/v2/lib/app/blobs/{layer}?ns={ns}"),
            &[("range", "bytes=0-4")],
            b"",
        )
        .await;
    assert_eq!(
        (a.status, a.body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &b"hello"[..])
    );
    let a = mirror
        .call(
            "GET",
            &format!("/v2/lib/app/manifests/2.0?ns={ns}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::BAD_GATEWAY,
        "an unknown tag needs upstream"
    );
}

#[tokio::test]
async fn mirror_mode_names_only_the_registries_it_mirrors() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(BlobStore::open(dir.path()).unwrap());
    let metadata = Metadata::open(&dir.path().join("metadata")).unwrap();
    let service = Arc::new(RegistryService::new(&Config::default(), Arc::new(Anonymous)).unwrap());
    let registry = Registry::new(blobs, metadata, service, None, None)
        .with_mirror_of(Some(vec!["127.0.0.1:1".to_string()]));
    let registry = Arc::new(registry);
    let f = Fixture {
        dir,
        router: router(registry.clone()),
        registry,
    };
    let a = f
        .call("GET", "/v2/lib/x/manifests/1?ns=169.254.169.254", &[], b"")
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::FORBIDDEN, "DENIED")
    );
    // A registry it mirrors is asked (here: nothing listens there, so not DENIED but a failure
    // to reach it).
    let a = f
        .call("GET", "/v2/lib/x/manifests/1?ns=127.0.0.1:1", &[], b"")
        .await;
    assert_ne!(a.code(), "DENIED");
}

/// Waits (bounded by a count, not a clock) until the mirror stored `n` blobs.
async fn until_stored(f: &Fixture, n: usize) {
    for _ in 0..1000 {
        if f.stored_blobs() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the mirror never stored {n} blobs");
}

#[tokio::test]
async fn mirror_serves_a_digest_only_to_a_repository_that_holds_it() {
    let upstream = fixture(None);
    let body = push_image(&upstream, "lib/app", b"{}", b"hello world").await;
    let (manifest, layer) = (Digest::sha256_of(&body), Digest::sha256_of(b"hello world"));
    upstream.push_blob("lib/other", b"something else").await;
    let server = Upstream::serve(&upstream);
    let ns = server.ns.clone();
    let mirror = fixture(None);
    let get = |method: &'static str, path: String| {
        let mirror = &mirror;
        async move { mirror.call(method, &path, &[], b"").await }
    };

    // What was pushed to the mirror's own registry is not served through ?ns= at all.
    let secret = mirror.push_blob("private/app", b"a secret layer").await;
    for name in ["private/app", "lib/app"] {
        let a = get("GET", format!("/v2/{name}/blobs/{secret}?ns={ns}")).await;
        let body = String::from_utf8_lossy(&a.body);
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{name}: {body}");
        assert_eq!(a.code(), "BLOB_UNKNOWN");
    }

    // lib/app through the mirror: cached for lib/app.
    let a = get("GET", format!("/v2/lib/app/manifests/1.0?ns={ns}")).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = get("GET", format!("/v2/lib/app/blobs/{layer}?ns={ns}")).await;
    assert_eq!(a.body, b"hello world");
    until_stored(&mirror, 3).await;

    // Another repository asks for the same digests: upstream says lib/other has none of them.
    for method in ["GET", "HEAD"] {
        let a = get(method, format!("/v2/lib/other/blobs/{layer}?ns={ns}")).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} blob");
        let a = get(
            method,
            format!("/v2/lib/other/manifests/{manifest}?ns={ns}"),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} manifest");
    }
    let a = get("GET", format!("/v2/lib/other/blobs/{layer}?ns={ns}")).await;
    assert_eq!(a.code(), "BLOB_UNKNOWN");

    // Once upstream holds it in lib/other too, lib/other gets it (upstream's bytes).
    let a = upstream
        .call(
            "POST",
            &format!("/v2/lib/other/blobs/uploads/?mount={layer}&from=lib/app"),
            &[],
            b"",
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let a = get("GET", format!("/v2/lib/other/blobs/{layer}?ns={ns}")).await;
    assert_eq!(
        (a.status, a.body.as_slice()),
        (StatusCode::OK, &b"hello world"[..])
    );

    // Upstream gone: what each repository was served stays served; nothing else is.
    server.stop();
    let a = get("GET", format!("/v2/lib/app/manifests/{manifest}?ns={ns}")).await;
    assert_eq!((a.status, a.body), (StatusCode::OK, body));
    let a = get("GET", format!("/v2/lib/other/blobs/{layer}?ns={ns}")).await;
    assert_eq!(a.status, StatusCode::OK, "linked when the relay completed");
    let a = get("GET", format!("/v2/lib/third/blobs/{layer}?ns={ns}")).await;
    assert_eq!(
        a.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let a = get("GET", format!("/v2/lib/third/manifests/{manifest}?ns={ns}")).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
}
