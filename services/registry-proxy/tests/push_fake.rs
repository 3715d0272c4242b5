//! Uploads against a scripted registry, for what `docker-registry` does not show: upload
//! `Location`s in every form (absolute path, relative path, absolute URL, another host),
//! each carrying its own query, and what is sent (or not) for a blob that does not match.

mod common;

use berth_api::registry::v1::{push_blob_request, PushBlobHeader, PushBlobRequest};
use berth_registry_proxy::DockerConfig;
use common::{descriptor, sha256, Service};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tonic::Code;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// `u:p`, as the fake registry wants it.
const AUTH: &str = "Basic dTpw";

/// A request the fake saw.
#[derive(Debug, Clone)]
struct Seen {
    server: &'static str,
    method: String,
    target: String,
    authorized: bool,
    content_range: Option<String>,
    body: usize,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// The bytes uploaded so far.
    data: Vec<u8>,
}

struct Fake {
    registry: String,
    state: Arc<Mutex<State>>,
}

impl Fake {
    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

/// A registry (Basic auth on every request) and a storage host without auth. Repository
/// `rel` keeps uploads on the registry with Locations that change form at every step;
/// `far` sends them to the storage host.
async fn start_fake() -> Fake {
    let registry = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let storage = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (
        registry.local_addr().unwrap().to_string(),
        storage.local_addr().unwrap().to_string(),
    );
    let state = Arc::new(Mutex::new(State::default()));
    for (name, listener) in [("registry", registry), ("storage", storage)] {
        let (state, addrs) = (state.clone(), addrs.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (state, addrs) = (state.clone(), addrs.clone());
                tokio::spawn(async move { serve(name, stream, &addrs, &state).await });
            }
        });
    }
    Fake {
        registry: addrs.0,
        state,
    }
}

async fn serve(
    server: &'static str,
    stream: tokio::net::TcpStream,
    (registry, storage): &(String, String),
    state: &Mutex<State>,
) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    if stream.read_line(&mut line).await.is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let (mut authorized, mut length, mut content_range) = (false, 0, None);
    loop {
        let mut h = String::new();
        if stream.read_line(&mut h).await.is_err() || h.trim().is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "authorization" => authorized = v.trim() == AUTH,
            "content-length" => length = v.trim().parse().unwrap_or(0),
            "content-range" => content_range = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    if stream.read_exact(&mut body).await.is_err() {
        // Broken off before the end: nothing to answer.
        state.lock().unwrap().seen.push(Seen {
            server,
            method: format!("{method} (broken off)"),
            target,
            authorized,
            content_range,
            body: 0,
        });
        return;
    }
    let (status, headers) = {
        let mut st = state.lock().unwrap();
        st.seen.push(Seen {
            server,
            method: method.clone(),
            target: target.clone(),
            authorized,
            content_range,
            body: body.len(),
        });
        answer(
            server, &method, &target, authorized, body, registry, storage, &mut st,
        )
    };
    let head =
        format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n");
    let _ = stream.get_mut().write_all(head.as_bytes()).await;
    let _ = stream.get_mut().shutdown().await;
}

#[allow(clippy::too_many_arguments)]
fn answer(
    server: &str,
    method: &str,
    target: &str,
    authorized: bool,
    body: Vec<u8>,
    registry: &str,
    storage: &str,
    st: &mut State,
) -> (&'static str, String) {
    if server == "registry" && !authorized {
        return (
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"fake\"\r\n".into(),
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let step: usize = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("_state="))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match method {
        "POST" if path == "/v2/rel/blobs/uploads/" => {
            st.data.clear();
            // An absolute path.
            (
                "202 Accepted",
                "Location: /v2/rel/blobs/uploads/u1?_state=0\r\n".into(),
            )
        }
        "POST" if path == "/v2/far/blobs/uploads/" => {
            st.data.clear();
            (
                "202 Accepted",
                format!("Location: http://{storage}/uploads/u1?_state=0\r\n"),
            )
        }
        "PATCH" => {
            st.data.extend_from_slice(&body);
            let next = step + 1;
            // A relative path, then an absolute URL, by turns.
            let location = if step.is_multiple_of(2) {
                format!("u1?_state={next}")
            } else {
                let host = if server == "registry" {
                    registry
                } else {
                    storage
                };
                let dir = path.rsplit_once('/').unwrap().0;
                format!("http://{host}{dir}/u1?_state={next}")
            };
            (
                "202 Accepted",
                format!("Location: {location}\r\nRange: 0-{}\r\n", st.data.len() - 1),
            )
        }
        "PUT" => {
            st.data.extend_from_slice(&body);
            let digest = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("digest="))
                .unwrap_or_default()
                .replace("%3A", ":");
            if digest == sha256(&st.data) {
                (
                    "201 Created",
                    format!("Docker-Content-Digest: {digest}\r\n"),
                )
            } else {
                ("400 Bad Request", String::new())
            }
        }
        "DELETE" => ("204 No Content", String::new()),
        _ => ("404 Not Found", String::new()),
    }
}

async fn service(fake: &Fake) -> (Service, tempfile::TempDir) {
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"dTpw"}}}}}}"#, fake.registry),
    )
    .unwrap();
    let svc = Service::start("", Arc::new(DockerConfig::in_dir(docker.path()))).await;
    (svc, docker)
}

async fn push(
    svc: &Service,
    repository: &str,
    digest: &str,
    data: &[u8],
    chunk_size: i64,
) -> Result<(i64, i32), tonic::Status> {
    let mut messages = vec![PushBlobRequest {
        item: Some(push_blob_request::Item::Header(PushBlobHeader {
            reference: repository.to_string(),
            descriptor: Some(descriptor(LAYER, digest, data.len() as i64)),
            chunk_size,
            auth: None,
        })),
    }];
    for piece in data.chunks(7001) {
        messages.push(PushBlobRequest {
            item: Some(push_blob_request::Item::Data(piece.to_vec())),
        });
    }
    let r = svc
        .client
        .clone()
        .push_blob(tokio_stream::iter(messages))
        .await?
        .into_inner();
    Ok((r.size, r.chunks))
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_follow_every_location_with_its_query() {
    let fake = start_fake().await;
    let (svc, _docker) = service(&fake).await;
    let blob = data(100_000);
    let digest = sha256(&blob);
    let r = push(
        &svc,
        &format!("{}/rel", fake.registry),
        &digest,
        &blob,
        30_000,
    )
    .await
    .unwrap();
    assert_eq!(r, (100_000, 4));
    assert_eq!(fake.state.lock().unwrap().data, blob);

    let seen = fake.seen();
    let sent: Vec<(&str, &str, Option<&str>, usize)> = seen
        .iter()
        .filter(|s| s.authorized)
        .map(|s| {
            (
                s.method.as_str(),
                s.target.as_str(),
                s.content_range.as_deref(),
                s.body,
            )
        })
        .collect();
    let hex = digest.trim_start_matches("sha256:");
    let put = format!("/v2/rel/blobs/uploads/u1?_state=4&digest=sha256%3A{hex}");
    assert_eq!(
        sent,
        [
            ("POST", "/v2/rel/blobs/uploads/", None, 0),
            (
                "PATCH",
                "/v2/rel/blobs/uploads/u1?_state=0",
                Some("0-29999"),
                30_000
            ),
            (
                "PATCH",
                "/v2/rel/blobs/uploads/u1?_state=1",
                Some("30000-59999"),
                30_000
            ),
            (
                "PATCH",
                "/v2/rel/blobs/uploads/u1?_state=2",
                Some("60000-89999"),
                30_000
            ),
            (
                "PATCH",
                "/v2/rel/blobs/uploads/u1?_state=3",
                Some("90000-99999"),
                10_000
            ),
            ("PUT", put.as_str(), None, 0),
        ]
    );
    // One 401 (the POST), after which every request went out authorized the first time.
    assert_eq!(seen.iter().filter(|s| !s.authorized).count(), 1, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monolithic_upload_keeps_the_location_query() {
    let fake = start_fake().await;
    let (svc, _docker) = service(&fake).await;
    let blob = data(1000);
    let digest = sha256(&blob);
    let r = push(&svc, &format!("{}/rel", fake.registry), &digest, &blob, 0)
        .await
        .unwrap();
    assert_eq!(r, (1000, 1));
    let last = fake.seen().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.target.as_str(), last.body),
        (
            "PUT",
            format!(
                "/v2/rel/blobs/uploads/u1?_state=0&digest=sha256%3A{}",
                digest.trim_start_matches("sha256:")
            )
            .as_str(),
            1000
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_on_another_host_get_no_credentials() {
    let fake = start_fake().await;
    let (svc, _docker) = service(&fake).await;
    let blob = data(50_000);
    let r = push(
        &svc,
        &format!("{}/far", fake.registry),
        &sha256(&blob),
        &blob,
        20_000,
    )
    .await
    .unwrap();
    assert_eq!(r, (50_000, 3));
    let seen = fake.seen();
    let on_storage: Vec<&Seen> = seen.iter().filter(|s| s.server == "storage").collect();
    assert_eq!(on_storage.len(), 4, "3 chunks and the PUT: {seen:?}");
    assert!(
        on_storage.iter().all(|s| !s.authorized),
        "the registry's credentials stay with the registry: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_blob_is_never_completed() {
    let fake = start_fake().await;
    let (svc, _docker) = service(&fake).await;
    let blob = data(100_000);
    let mut other = blob.clone();
    other[99_999] ^= 1;
    // In chunks: the last chunk is broken off, no PUT, the upload deleted.
    let e = push(
        &svc,
        &format!("{}/rel", fake.registry),
        &sha256(&blob),
        &other,
        30_000,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(&sha256(&other)), "{}", e.message());
    let seen = fake.seen();
    assert!(!seen.iter().any(|s| s.method == "PUT"), "{seen:?}");
    let patches = seen.iter().filter(|s| s.method == "PATCH").count();
    assert_eq!(patches, 3, "the fourth chunk never completed: {seen:?}");
    let delete = seen
        .iter()
        .find(|s| s.method == "DELETE")
        .expect("a DELETE");
    assert_eq!(delete.target, "/v2/rel/blobs/uploads/u1?_state=3");

    // In one PUT: broken off before its end, then deleted.
    let fake2 = start_fake().await;
    let (svc, _docker) = service(&fake2).await;
    let e = push(
        &svc,
        &format!("{}/rel", fake2.registry),
        &sha256(&blob),
        &other,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let seen = fake2.seen();
    assert!(
        !seen.iter().any(|s| s.method == "PUT"),
        "the PUT never completed: {seen:?}"
    );
    assert!(seen.iter().any(|s| s.method == "DELETE"), "{seen:?}");
}
