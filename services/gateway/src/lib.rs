//! The Docker Engine API (version 1.41, Docker 20.10's) over HTTP/1.1 on a unix socket, so
//! that the `docker` CLI and other Docker clients drive berth unchanged.
//!
//! The gateway is a gRPC client of berth's services exactly as the `berth` CLI is: it imports
//! no service crate, reaches the image and runtime services through [`Services`]' channels and
//! keeps its objects in berth namespace `default`. Docker's JSON for berth's objects comes from
//! `berth-docker`, the crate the CLI shows the same views with.
//!
//! - [`router`] is the whole API as an axum service: [`version`] checks the `/v1.NN/` prefix of
//!   a request and stamps every answer with Docker's headers; [`error::ApiError`] turns gRPC
//!   statuses into Docker's `{"message": …}` answers.
//! - [`serve`] serves it on a unix socket until a shutdown future ends.
//!
//! This is the first slice of issue 14: `/_ping`, `/version`, `/info` and the image
//! endpoints that need no streaming (list with the `reference` and `dangling` filters,
//! inspect, history, tag, delete).
//!
//! A container's streams: `streams` hijacks the connection for `attach` (and exec's start)
//! and relays it to Tasks.Attach/Exec, raw with a TTY or in Docker's multiplexed frames, with
//! detach keys; `logs` serves Tasks.Logs; `exec` keeps Docker's exec instances (in
//! `state::Local`, bounded) between their create and start.

use std::path::PathBuf;
use std::sync::Arc;
use tonic::transport::Channel;

mod archive;
mod auth;
mod build;
mod commit;
mod container_fs;
mod containers;
pub mod error;
mod events;
mod exec;
mod images;
mod import;
mod logs;
mod networks;
mod pull;
mod push;
mod request;
mod state;
mod stream;
mod streams;
mod system;
mod usage;
pub mod version;
mod volumes;

/// What the gateway answers from: the channels to the services, and the facts of the berthd
/// that hosts it that Docker's `/info` shows.
#[derive(Debug, Clone)]
pub struct Backends {
    /// The image service.
    pub image: Channel,
    /// The runtime service (Containers, Tasks, Networks, Volumes).
    pub runtime: Channel,
    /// The build service.
    pub build: Channel,
    /// The registry service (logins).
    pub registry: Channel,
    /// The events service.
    pub events: Channel,
    /// Any berthd (its Version service).
    pub version: Channel,
    /// berth's persistent root (Docker's `DockerRootDir`).
    pub root: PathBuf,
    /// The snapshotter images are unpacked with (Docker's storage `Driver`).
    pub snapshotter: String,
}

/// The handlers' state: the backends, and what the gateway itself keeps between requests.
#[derive(Debug, Clone)]
pub struct Services {
    backends: Arc<Backends>,
    pub(crate) local: Arc<state::Local>,
}

impl std::ops::Deref for Services {
    type Target = Backends;
    fn deref(&self) -> &Backends {
        &self.backends
    }
}

/// The berth namespace the gateway's objects live in (the CLI's default).
pub const NAMESPACE: &str = berth_core::grpc::DEFAULT_NAMESPACE;

impl Services {
    pub fn new(backends: Backends) -> Services {
        Services {
            backends: Arc::new(backends),
            local: Arc::default(),
        }
    }

    fn req<T>(&self, m: T) -> tonic::Request<T> {
        berth_core::grpc::request(NAMESPACE, m)
    }
}

/// The Docker Engine API served from `services`: every area's routes (each module's
/// `routes`), then Docker's version check and headers around them.
pub fn router(services: Services) -> axum::Router {
    let api = axum::Router::new()
        .merge(system::routes())
        .merge(images::routes())
        .merge(containers::routes())
        .merge(container_fs::routes())
        .merge(networks::routes())
        .merge(volumes::routes())
        .merge(events::routes())
        .merge(usage::routes())
        .merge(streams::routes())
        .merge(logs::routes())
        .merge(exec::routes())
        .fallback(error::page_not_found)
        .method_not_allowed_fallback(error::page_not_found)
        .with_state(services);
    axum::Router::new()
        .fallback_service(api)
        .layer(axum::middleware::from_fn(version::negotiate))
}

/// Serves the API on `listener` until `shutdown` ends.
pub async fn serve(
    listener: tokio::net::UnixListener,
    services: Services,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(services))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    /// Services that are never reached: the routes below answer without them.
    pub(crate) fn nowhere() -> Services {
        let c = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        Services::new(Backends {
            image: c.clone(),
            runtime: c.clone(),
            build: c.clone(),
            registry: c.clone(),
            events: c.clone(),
            version: c,
            root: "/var/lib/berth".into(),
            snapshotter: "overlayfs".into(),
        })
    }

    async fn call(method: &str, uri: &str) -> (u16, http::HeaderMap, String) {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = router(nowhere()).oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status.as_u16(),
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn ping_versioned_or_not_with_dockers_headers() {
        for uri in ["/_ping", "/v1.41/_ping", "/v1.24/_ping"] {
            let (status, h, body) = call("GET", uri).await;
            assert_eq!((status, body.as_str()), (200, "OK"), "{uri}");
            assert_eq!(h["api-version"], "1.41");
            assert_eq!(h["ostype"], "linux");
            assert_eq!(h["docker-experimental"], "false");
            assert_eq!(h["builder-version"], "1");
            assert_eq!(h["pragma"], "no-cache");
            assert!(h["server"].to_str().unwrap().starts_with("berth/"));
        }
        assert_eq!(call("HEAD", "/_ping").await.0, 200);
    }

    #[tokio::test]
    async fn refusals_in_dockers_shape() {
        let (status, h, body) = call("GET", "/v1.99/version").await;
        assert_eq!(status, 400);
        assert_eq!(h["api-version"], "1.41");
        assert_eq!(
            body.trim(),
            r#"{"message":"client version 1.99 is too new. Maximum supported API version is 1.41"}"#
        );
        let (status, _, body) = call("GET", "/v1.41/no/such/route").await;
        assert_eq!(
            (status, body.trim()),
            (404, r#"{"message":"page not found"}"#)
        );
        let (status, _, _) = call(
            "GET",
            "/images/json?filters=%7B%22label%22%3A%5B%22a%22%5D%7D",
        )
        .await;
        assert_eq!(status, 400);
        let (status, _, body) = call("GET", "/images/%ff/json").await;
        assert_eq!(status, 400);
        assert!(body.starts_with(r#"{"message":"#), "{body}");
        let (status, _, _) = call("POST", "/images/busybox/tag").await;
        assert_eq!(status, 400, "a tag needs a repo");
    }
}
