//! The proxy's own registry over HTTP: the OCI distribution API (Docker's registry API v2)
//! on the address `[registry_proxy] listen` names, and nowhere else.
//!
//! - [`manifests`]: manifests by tag or digest (GET, HEAD, PUT, DELETE), tag lists and the
//!   catalog.
//! - [`blobs`]: blobs (GET with ranges, HEAD, DELETE) and uploads (POST monolithic or
//!   session, cross-repository mount, PATCH chunks, PUT to close, GET status, DELETE),
//!   bounded in number and size, the stale ones swept while serving ([`UploadLimits`]).
//! - [`mirror`]: the same manifest and blob reads with `?ns=REGISTRY` (containerd's mirror
//!   convention) are served from the pull-through cache when `REGISTRY` served that digest
//!   for that repository before, else fetched from `REGISTRY` through the proxy's
//!   [`RegistryService`], which decides whether the repository holds it.
//! - [`basic_auth`]: optional Basic authentication from an htpasswd file.
//!
//! Blobs and manifests live in the same [`BlobStore`] as the cache; which repository holds
//! what, and tags, are in [`Metadata`]. Repository names may have any number of `/`-separated
//! components, so routing reads the path from its end (`…/manifests/<ref>`,
//! `…/blobs/uploads/<id>`).

pub mod basic_auth;
mod blobs;
mod errors;
mod manifests;
mod mirror;

use crate::blobs::BlobStore;
use crate::metadata::Metadata;
use crate::service::RegistryService;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use basic_auth::Htpasswd;
pub use blobs::UploadLimits;
use errors::{ApiError, ApiResult};
use http::{header, HeaderValue, Method, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const API_VERSION: &str = "Docker-Distribution-API-Version";

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct Registry {
    pub blobs: Arc<BlobStore>,
    pub metadata: Metadata,
    /// Fetches upstream for `?ns=` requests, through the pull-through cache.
    pub service: Arc<RegistryService>,
    pub htpasswd: Option<Arc<Htpasswd>>,
    pub realm: String,
    /// One lock per upload session, so two PATCHes of one session never interleave (nor a
    /// PATCH and the sweep). Held, the map also admits one new upload at a time.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    limits: UploadLimits,
    /// The registries `?ns=` may name; None: any.
    mirror_of: Option<Vec<String>>,
}

impl Registry {
    pub fn new(
        blobs: Arc<BlobStore>,
        metadata: Metadata,
        service: Arc<RegistryService>,
        htpasswd: Option<Htpasswd>,
        realm: Option<String>,
    ) -> Registry {
        Registry {
            blobs,
            metadata,
            service,
            htpasswd: htpasswd.map(Arc::new),
            realm: realm.unwrap_or_else(|| "berth".to_string()),
            uploads: Mutex::new(HashMap::new()),
            limits: UploadLimits::default(),
            mirror_of: None,
        }
    }

    /// Bounds uploads by `limits` (default: `[registry_proxy]`'s defaults).
    pub fn with_upload_limits(mut self, limits: UploadLimits) -> Registry {
        self.limits = limits;
        self
    }

    /// Limits mirror mode (`?ns=`) to these registries (None: any).
    pub fn with_mirror_of(mut self, registries: Option<Vec<String>>) -> Registry {
        self.mirror_of = registries;
        self
    }

    fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn forget_upload_lock(&self, id: &str) {
        let mut locks = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        locks.remove(id);
    }
}

/// The router of the distribution API.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*path}", any(dispatch))
        .layer(middleware::from_fn_with_state(
            registry.clone(),
            authenticate,
        ))
        .layer(middleware::map_response(api_version))
        .with_state(registry)
}

/// Binds `listen` now (so a bad address fails berthd's start) and serves in the background.
pub fn spawn(listen: &str, registry: Arc<Registry>) -> Result<SocketAddr, crate::Error> {
    let fail = |reason: String| {
        crate::Error::Store(format!(
            "cannot serve the registry on {listen:?} ([registry_proxy] listen): {reason}"
        ))
    };
    let listener = std::net::TcpListener::bind(listen).map_err(|e| fail(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| fail(e.to_string()))?;
    if !addr.ip().is_loopback() && registry.htpasswd.is_none() {
        tracing::warn!(
            %addr,
            "the registry is served beyond loopback without authentication: anyone who reaches {addr} can push, delete and read every repository; set [registry_proxy] htpasswd, or listen on 127.0.0.1"
        );
    }
    tracing::info!(%addr, auth = registry.htpasswd.is_some(), "serving the distribution API");
    tokio::spawn(sweep_uploads(registry.clone()));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(registry)).await {
            tracing::error!(error = %e, "the registry's HTTP server stopped");
        }
    });
    Ok(addr)
}

/// Sweeps stale uploads now and then, for as long as berthd runs: a quarter of the expiry
/// apart (at least a second, at most ten minutes), so none outlives it by much.
async fn sweep_uploads(registry: Arc<Registry>) {
    let period = (registry.limits.expiry / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(600),
    );
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let r = registry.clone();
        match tokio::task::spawn_blocking(move || blobs::sweep_uploads(&r)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "stale uploads swept"),
            Ok(Err(e)) => tracing::warn!(error = %e.message, "sweeping stale uploads failed"),
            Err(e) => tracing::warn!(error = %e, "sweeping stale uploads failed"),
        }
    }
}

async fn api_version(mut r: Response) -> Response {
    r.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    r
}

async fn authenticate(State(registry): State<Arc<Registry>>, req: Request, next: Next) -> Response {
    if let Some(htpasswd) = &registry.htpasswd {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !htpasswd.allows(authorization).await {
            let challenge = format!("Basic realm=\"{}\"", registry.realm.replace('"', "'"));
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            )
            .header(header::WWW_AUTHENTICATE, &challenge)
            .into_response();
        }
    }
    next.run(req).await
}

/// `GET /v2/`: the API is here (and the credentials, if any, are good).
async fn base(method: Method) -> Response {
    match method {
        Method::GET | Method::HEAD => (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            "{}",
        )
            .into_response(),
        _ => ApiError::unsupported("GET /v2/ only").into_response(),
    }
}

/// What a path under `/v2/` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    Uploads { name: String },
    Upload { name: String, id: String },
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        if path == "_catalog" {
            return Some(Route::Catalog);
        }
        let parts: Vec<&str> = path.split('/').collect();
        let n = parts.len();
        let name = |k: usize| parts[..n - k].join("/");
        let at = |i: usize| parts[n - i];
        if n >= 4 && at(3) == "blobs" && at(2) == "uploads" {
            let id = at(1);
            return Some(if id.is_empty() {
                Route::Uploads { name: name(3) }
            } else {
                Route::Upload {
                    name: name(3),
                    id: id.to_string(),
                }
            });
        }
        if n < 3 {
            return None;
        }
        match (at(2), at(1)) {
            ("blobs", "uploads") => Some(Route::Uploads { name: name(2) }),
            ("blobs", d) => Some(Route::Blob {
                name: name(2),
                digest: d.to_string(),
            }),
            ("manifests", r) => Some(Route::Manifest {
                name: name(2),
                reference: r.to_string(),
            }),
            ("tags", "list") => Some(Route::Tags { name: name(2) }),
            _ => None,
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name }
            | Route::Upload { name, .. } => Some(name),
        }
    }
}

/// The spec's repository name: `/`-separated components of `[a-z0-9]+` joined by `.`, `_`,
/// `__` or dashes, 255 characters at most.
fn valid_name(name: &str) -> bool {
    name.len() <= 255 && !name.is_empty() && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// The query of a request, as name → value.
type Params = HashMap<String, String>;

async fn dispatch(State(registry): State<Arc<Registry>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().strip_prefix("/v2/").unwrap_or_default();
    let Some(route) = Route::parse(path) else {
        return ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such endpoint")
            .into_response();
    };
    if let Some(name) = route.name().filter(|n| !valid_name(n)) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
        )
        .detail(serde_json::json!({ "name": name }))
        .into_response();
    }
    let params: Params = Query::<Params>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let result = handle(&registry, route, &method, params, req).await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    registry: &Arc<Registry>,
    route: Route,
    method: &Method,
    params: Params,
    req: Request,
) -> ApiResult<Response> {
    let ns = params.get("ns").filter(|ns| !ns.is_empty()).cloned();
    let read = matches!(*method, Method::GET | Method::HEAD);
    let head = *method == Method::HEAD;
    if let (Some(ns), Some(allowed)) = (&ns, &registry.mirror_of) {
        if !allowed.iter().any(|r| r == ns) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!("this registry does not mirror {ns} ([registry_proxy] mirror_of)"),
            ));
        }
    }
    if ns.is_some() && !matches!(route, Route::Manifest { .. } | Route::Blob { .. }) {
        return Err(ApiError::unsupported(
            "a mirror (?ns=) serves manifests and blobs only, read-only",
        ));
    }
    match route {
        Route::Catalog if read => manifests::catalog(registry, &params),
        Route::Tags { name } if read => manifests::tags(registry, &name, &params),
        Route::Manifest { name, reference } => match (ns, method.clone()) {
            (Some(ns), _) if read => mirror::manifest(registry, &ns, &name, &reference, head).await,
            (None, _) if read => manifests::get(registry, &name, &reference, head).await,
            (None, Method::PUT) => manifests::put(registry, &name, &reference, req).await,
            (None, Method::DELETE) => manifests::delete(registry, &name, &reference),
            _ => Err(ApiError::unsupported("a mirror (?ns=) is read-only")),
        },
        Route::Blob { name, digest } => match (ns, method.clone()) {
            (Some(ns), _) if read => {
                mirror::blob(registry, &ns, &name, &digest, head, req.headers()).await
            }
            (None, _) if read => blobs::get(registry, &name, &digest, head, req.headers()).await,
            (None, Method::DELETE) => blobs::delete(registry, &name, &digest),
            _ => Err(ApiError::unsupported("a mirror (?ns=) is read-only")),
        },
        Route::Uploads { name } if *method == Method::POST => {
            blobs::start_upload(registry, &name, &params, req).await
        }
        Route::Upload { name, id } => match *method {
            Method::GET => blobs::upload_status(registry, &name, &id),
            Method::PATCH => blobs::patch_upload(registry, &name, &id, req).await,
            Method::PUT => blobs::finish_upload(registry, &name, &id, &params, req).await,
            Method::DELETE => blobs::cancel_upload(registry, &name, &id),
            _ => Err(ApiError::unsupported("method not allowed on an upload")),
        },
        _ => Err(ApiError::unsupported("method not allowed here")),
    }
}

/// A response with a status, headers and a body.
fn respond(status: StatusCode, headers: &[(&str, String)], body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

#[cfg(test)]
mod api_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn route(p: &str) -> Option<Route> {
        Route::parse(p)
    }

    #[test]
    fn routes_names_with_slashes() {
        let n = |s: &str| s.to_string();
        assert_eq!(route("_catalog"), Some(Route::Catalog));
        assert_eq!(
            route("a/b/c/manifests/latest"),
            Some(Route::Manifest {
                name: n("a/b/c"),
                reference: n("latest")
            })
        );
        assert_eq!(
            route("a/blobs/manifests/v1"),
            Some(Route::Manifest {
                name: n("a/blobs"),
                reference: n("v1")
            })
        );
        assert_eq!(
            route("x/y/blobs/sha256:ab"),
            Some(Route::Blob {
                name: n("x/y"),
                digest: n("sha256:ab")
            })
        );
        assert_eq!(
            route("x/y/blobs/uploads/"),
            Some(Route::Uploads { name: n("x/y") })
        );
        assert_eq!(
            route("x/blobs/uploads"),
            Some(Route::Uploads { name: n("x") })
        );
        assert_eq!(
            route("x/blobs/blobs/uploads/id-1"),
            Some(Route::Upload {
                name: n("x/blobs"),
                id: n("id-1")
            })
        );
        assert_eq!(route("a/b/tags/list"), Some(Route::Tags { name: n("a/b") }));
        assert_eq!(route("manifests/latest"), None);
        assert_eq!(route("a/tags/other"), None);
    }

    #[test]
    fn repository_names_follow_the_spec() {
        for good in ["a", "a/b/c", "a.b", "a_b", "a__b", "a--b", "x0/y-1.z"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "-a", "a-", "a..b", "a___b", "a_.b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"a".repeat(256)));
    }
}
