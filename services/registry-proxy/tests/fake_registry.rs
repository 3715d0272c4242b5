//! What a real `docker-registry` cannot easily show: the Bearer token flow (Docker Hub's),
//! oversized manifests and failing servers, against a small scripted HTTP server.

mod common;

use berth_registry_proxy::credentials::Anonymous;
use berth_registry_proxy::DockerConfig;
use common::{descriptor, sha256, Service};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::Code;

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
const TOKEN: &str = "tok-123";

/// What the fake registry saw.
#[derive(Default)]
struct Seen {
    token_requests: Vec<(String, Option<String>)>,
    requests: Vec<String>,
}

struct Fake {
    addr: String,
    seen: Arc<Mutex<Seen>>,
}

/// A registry that wants a Bearer token from its own `/token` and serves `app:latest`;
/// `oversized/…` claims a 5 MiB manifest and `broken/…` fails with 503.
async fn fake_registry(require_user: Option<&'static str>) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (addr2, seen2) = (addr.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (addr, seen) = (addr2.clone(), seen2.clone());
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let target = parts.next().unwrap_or_default().to_string();
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    stream.read_line(&mut h).await.unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let auth = headers.get("authorization").cloned();
                let (status, extra, body) =
                    answer(&addr, &method, &target, auth, require_user, &seen);
                let head =
                    format!(
                    "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n",
                    if extra.contains("Content-Length") { 0 } else { body.len() }
                )
                    .replace("Content-Length: 0\r\n", "");
                let mut out = head.into_bytes();
                if method != "HEAD" {
                    out.extend_from_slice(body.as_bytes());
                }
                let _ = stream.get_mut().write_all(&out).await;
                let _ = stream.get_mut().shutdown().await;
            });
        }
    });
    Fake { addr, seen }
}

fn answer(
    addr: &str,
    method: &str,
    target: &str,
    auth: Option<String>,
    require_user: Option<&str>,
    seen: &Mutex<Seen>,
) -> (&'static str, String, String) {
    let mut seen = seen.lock().unwrap();
    if target.starts_with("/token?") {
        seen.token_requests.push((target.to_string(), auth.clone()));
        let ok = match require_user {
            None => true,
            Some(u) => auth.is_some_and(|a| {
                use base64::Engine as _;
                let want = base64::engine::general_purpose::STANDARD.encode(u);
                a == format!("Basic {want}")
            }),
        };
        return if ok {
            (
                "200 OK",
                String::new(),
                format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#),
            )
        } else {
            (
                "401 Unauthorized",
                String::new(),
                r#"{"details":"incorrect username or password"}"#.into(),
            )
        };
    }
    seen.requests.push(format!("{method} {target}"));
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\",scope=\"repository:{}:pull\"\r\n",
            target.split('/').nth(2).unwrap_or_default()
        );
        return (
            "401 Unauthorized",
            challenge,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.into(),
        );
    }
    let digest = sha256(MANIFEST.as_bytes());
    match target {
        "/v2/app/manifests/latest" => (
            "200 OK",
            format!("Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {digest}\r\n"),
            MANIFEST.to_string(),
        ),
        t if t == format!("/v2/app/manifests/{digest}") => (
            "200 OK",
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".into(),
            MANIFEST.to_string(),
        ),
        "/v2/oversized/manifests/latest" => (
            "200 OK",
            format!("Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {digest}\r\nContent-Length: 5242880\r\n"),
            String::new(),
        ),
        t if t.starts_with("/v2/broken/") => ("503 Service Unavailable", String::new(), "backend down".into()),
        _ => ("404 Not Found", String::new(), r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#.into()),
    }
}

#[tokio::test]
async fn bearer_tokens_are_fetched_once_and_reused() {
    let fake = fake_registry(None).await;
    let svc = Service::start("", Arc::new(Anonymous)).await;
    let reference = format!("{}/app:latest", fake.addr);

    let resolved = svc.resolve(&reference).await.unwrap();
    let manifest = resolved.descriptor.unwrap();
    assert_eq!(manifest.digest, sha256(MANIFEST.as_bytes()));
    assert_eq!(manifest.size, MANIFEST.len() as i64);
    let (data, total) = svc.fetch(&reference, &manifest, true).await.unwrap();
    assert_eq!(data, MANIFEST.as_bytes());
    assert_eq!(total, MANIFEST.len() as i64);
    svc.resolve(&reference).await.unwrap();

    let seen = fake.seen.lock().unwrap();
    assert_eq!(
        seen.token_requests.len(),
        1,
        "one token, cached: {:?}",
        seen.requests
    );
    let (query, auth) = &seen.token_requests[0];
    assert_eq!(query, "/token?service=fake&scope=repository%3Aapp%3Apull");
    assert_eq!(auth, &None, "anonymous without credentials");
    // One 401, then authorized requests only.
    assert_eq!(seen.requests.len(), 4, "{:?}", seen.requests);
}

#[tokio::test]
async fn bearer_tokens_are_asked_for_with_credentials() {
    let fake = fake_registry(Some("me:pw")).await;
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"bWU6cHc="}}}}}}"#, fake.addr),
    )
    .unwrap();
    let svc = Service::start("", Arc::new(DockerConfig::in_dir(docker.path()))).await;
    svc.resolve(&format!("{}/app", fake.addr)).await.unwrap();

    // Without them, the token endpoint refuses: Unauthenticated, with what to do.
    let svc = Service::start("", Arc::new(Anonymous)).await;
    let err = svc
        .resolve(&format!("{}/app", fake.addr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("berth login {}", fake.addr)),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn oversized_manifests_and_failing_servers() {
    let fake = fake_registry(None).await;
    let svc = Service::start("", Arc::new(Anonymous)).await;

    let err = svc
        .resolve(&format!("{}/oversized:latest", fake.addr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        format!(
            "manifest of {}/oversized:latest is 5242880 bytes, more than the 4 MiB limit",
            fake.addr
        )
    );

    let big = descriptor(berth_core::media::OCI_MANIFEST, &sha256(b"x"), 5 << 20);
    let err = svc
        .fetch(&format!("{}/app", fake.addr), &big, true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    let err = svc
        .resolve(&format!("{}/broken:latest", fake.addr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("failed with HTTP 503"),
        "{}",
        err.message()
    );
}
