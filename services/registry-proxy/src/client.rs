//! A distribution-API client for one registry host: resolve a reference to its manifest
//! descriptor, fetch manifests and blobs as streams.
//!
//! Each request goes to the host's mirrors first (containerd's convention:
//! `MIRROR/v2/<path>/…?ns=<host>`), then upstream; for an insecure registry upstream is plain
//! HTTP on loopback, and elsewhere HTTPS without certificate checks with plain HTTP as the
//! fallback, as Docker does. Requests start anonymous and answer a 401 challenge once
//! (Bearer token or Basic), caching what worked per scope.

use crate::auth::{parse_challenges, AuthCache, Challenge, TokenResponse};
use crate::credentials::{Credential, CredentialStore};
use crate::error::{describe_transport, Error};
use base64::Engine as _;
use berth_core::config::{is_loopback_host, Config};
use berth_core::media::{self, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE};
use berth_core::{Digest, Reference};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode, Url};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long to wait for a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response may go without a byte before the transfer is given up. Blob bodies
/// have no total timeout: a large layer on a slow link is fine as long as it moves.
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));
/// Error bodies are read only this far, for their message.
const MAX_ERROR_BODY: usize = 16 << 10;

/// The HTTP clients every registry shares: one that verifies TLS and one for insecure
/// registries that does not, each also without a read timeout for requests that carry a
/// blob's bytes. Connections are pooled per client.
#[derive(Debug, Clone)]
pub struct HttpClients {
    verified: reqwest::Client,
    unverified: reqwest::Client,
    verified_upload: reqwest::Client,
    unverified_upload: reqwest::Client,
}

impl HttpClients {
    pub fn new() -> Result<HttpClients, Error> {
        // reqwest's read timeout runs from the start of a request to its answer, which for an
        // upload includes sending the body: uploads watch their own progress instead
        // (`crate::push`).
        let build = |verify: bool, read_timeout: bool| {
            let mut b = reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(CONNECT_TIMEOUT)
                .tls_danger_accept_invalid_certs(!verify);
            if read_timeout {
                b = b.read_timeout(READ_IDLE_TIMEOUT);
            }
            b.build().map_err(|e| Error::HttpClient(e.to_string()))
        };
        Ok(HttpClients {
            verified: build(true, true)?,
            unverified: build(false, true)?,
            verified_upload: build(true, false)?,
            unverified_upload: build(false, false)?,
        })
    }

    fn pick(&self, verify: bool) -> (reqwest::Client, reqwest::Client) {
        if verify {
            (self.verified.clone(), self.verified_upload.clone())
        } else {
            (self.unverified.clone(), self.unverified_upload.clone())
        }
    }
}

/// What a manifest (or index) is: the answer to [`RegistryClient::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// Which of a repository's two stores to fetch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    Blob,
}

impl Kind {
    fn segment(self) -> &'static str {
        match self {
            Kind::Manifest => "manifests",
            Kind::Blob => "blobs",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Manifest => "manifest",
            Kind::Blob => "blob",
        })
    }
}

/// A fetched manifest or blob, as it arrives. Unverified: see [`crate::verify`].
pub struct Content {
    /// The Content-Length, when the registry sent one.
    pub total: Option<u64>,
    /// Where it came from, for messages (`127.0.0.1:5000`, or a mirror).
    pub source: String,
    pub stream: BoxStream<'static, Result<Bytes, Error>>,
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Content")
            .field("total", &self.total)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// One place to send a registry's requests to: a mirror, or the registry itself over one
/// scheme.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `scheme://host[:port][/prefix]`, no trailing slash.
    pub(crate) base: Url,
    http: reqwest::Client,
    /// The same, without a read timeout: for requests that carry a blob.
    pub(crate) upload: reqwest::Client,
    /// The registry a mirror stands in for: sent as `?ns=`.
    mirror_of: Option<String>,
    /// For messages: `127.0.0.1:5000`, `registry-1.docker.io`, `m:5001 (mirror of docker.io)`.
    pub(crate) name: String,
    /// Whose credentials to send, and what `berth login` needs: `docker.io`, `m:5001`.
    pub(crate) login_host: String,
}

impl Endpoint {
    pub(crate) fn url(&self, repository: &str, kind: Kind, reference: &str) -> Url {
        self.api_url(&format!("{repository}/{}/{reference}", kind.segment()))
    }

    /// `BASE/v2/<rest>` (`rest` may be empty: the API root), with `?ns=` for a mirror.
    pub(crate) fn api_url(&self, rest: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}/v2/{rest}"));
        url.set_query(None);
        if let Some(ns) = &self.mirror_of {
            url.query_pairs_mut().append_pair("ns", ns);
        }
        url
    }

    /// Whether `url` is on this endpoint's scheme, host and port: only there do our
    /// credentials go (an upload `Location` may point elsewhere).
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        self.base.origin() == url.origin()
    }
}

/// One request of the distribution API, as data, so that it can go out again after a 401.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    pub url: Url,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    /// A whole body (a manifest); empty bodies still send `Content-Length: 0`.
    pub body: Option<Bytes>,
}

impl Call {
    pub fn new(method: Method, url: Url) -> Call {
        Call {
            method,
            url,
            accept: None,
            content_type: None,
            body: None,
        }
    }

    /// The request on `client`, with `authorization` when given.
    pub fn builder(
        &self,
        client: &reqwest::Client,
        authorization: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut rb = client.request(self.method.clone(), self.url.clone());
        if let Some(a) = &self.accept {
            rb = rb.header(ACCEPT, a);
        }
        if let Some(t) = &self.content_type {
            rb = rb.header(CONTENT_TYPE, t);
        }
        if let Some(a) = authorization {
            rb = rb.header(AUTHORIZATION, a);
        }
        if let Some(b) = &self.body {
            rb = rb.header(CONTENT_LENGTH, b.len()).body(b.clone());
        } else if matches!(self.method, Method::PUT | Method::POST | Method::PATCH) {
            rb = rb.header(CONTENT_LENGTH, 0);
        }
        rb
    }
}

/// `host:port` of a URL, as people write registry hosts.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// The repository scope a pull asks tokens for.
fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The repository scope a push asks tokens for (a push reads too: HEAD, mounts).
pub(crate) fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

/// Where the registry of a reference's domain answers: Docker Hub's API is not on docker.io.
pub fn api_host(domain: &str) -> &str {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        d => d,
    }
}

/// A registry host's client. Cheap to share (`Arc`); it keeps the tokens it obtained.
pub struct RegistryClient {
    host: String,
    mirrors: Vec<Endpoint>,
    upstream: Vec<Endpoint>,
    /// Which upstream endpoint answered last (HTTPS or HTTP for an insecure registry), so
    /// later requests start there.
    preferred: Mutex<usize>,
    pub(crate) credentials: Arc<dyn CredentialStore>,
    auth: AuthCache,
    /// The last challenge each endpoint sent, so that a request whose body cannot be sent
    /// twice (an upload) goes out authorized the first time.
    challenges: Mutex<HashMap<String, Vec<Challenge>>>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("host", &self.host)
            .field(
                "mirrors",
                &self
                    .mirrors
                    .iter()
                    .map(|e| e.base.as_str())
                    .collect::<Vec<_>>(),
            )
            .field(
                "upstream",
                &self
                    .upstream
                    .iter()
                    .map(|e| e.base.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// The client for `host` (a reference's domain: `docker.io`, `127.0.0.1:5000`) under
    /// berthd's registry settings.
    pub fn new(
        host: &str,
        config: &Config,
        http: &HttpClients,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<RegistryClient, Error> {
        let settings = config.registry(host);
        let api = api_host(host);
        let upstream_at = |scheme: &str, verify: bool| -> Result<Endpoint, Error> {
            let base = Url::parse(&format!("{scheme}://{api}")).map_err(|e| {
                Error::InvalidRequest(format!("registry host {host:?} is not a valid host: {e}"))
            })?;
            let (http, upload) = http.pick(verify);
            Ok(Endpoint {
                base,
                http,
                upload,
                mirror_of: None,
                name: api.to_string(),
                login_host: host.to_string(),
            })
        };
        // An insecure registry's token realm may have an unverifiable certificate too, so
        // all its endpoints use the unverified client.
        let upstream = if !settings.insecure {
            vec![upstream_at("https", true)?]
        } else if is_loopback_host(host) {
            vec![upstream_at("http", false)?]
        } else {
            vec![upstream_at("https", false)?, upstream_at("http", false)?]
        };
        let mirrors = settings
            .mirrors
            .iter()
            .map(|m| mirror_endpoint(host, m, config, http))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RegistryClient {
            host: host.to_string(),
            mirrors,
            upstream,
            preferred: Mutex::new(0),
            credentials,
            auth: AuthCache::default(),
            challenges: Mutex::new(HashMap::new()),
        })
    }

    #[cfg(test)]
    pub(crate) fn endpoint_for_tests(&self) -> Endpoint {
        self.upstream[0].clone()
    }

    /// The registry host this client serves.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether this client sends the credentials of `login_host` anywhere (its registry or
    /// one of its mirrors), so a login there must drop its tokens.
    pub fn answers_to(&self, login_host: &str) -> bool {
        self.upstream
            .iter()
            .chain(&self.mirrors)
            .any(|e| e.login_host == login_host)
    }

    /// The descriptor of the manifest or index a reference names. For a digest reference the
    /// digest is the reference's own.
    pub async fn resolve(&self, reference: &Reference) -> Result<Descriptor, Error> {
        self.across_endpoints(|ep| async move { self.resolve_at(&ep, reference).await })
            .await
    }

    /// A manifest or blob of `repository` (its tag or digest is ignored) by digest, streamed.
    /// `media_type`, when known, is added to the manifest `Accept` header.
    pub async fn fetch(
        &self,
        repository: &Reference,
        kind: Kind,
        digest: &Digest,
        media_type: Option<&str>,
    ) -> Result<Content, Error> {
        self.across_endpoints(|ep| async move {
            self.fetch_at(&ep, repository, kind, digest, media_type)
                .await
        })
        .await
    }

    /// Every place to try, in order: mirrors as configured, then upstream (the one that
    /// answered last first).
    fn endpoints(&self) -> Vec<(Option<usize>, &Endpoint)> {
        let preferred = *self.preferred.lock().unwrap_or_else(|p| p.into_inner());
        let mut order: Vec<(Option<usize>, &Endpoint)> =
            self.mirrors.iter().map(|m| (None, m)).collect();
        if let Some(p) = self.upstream.get(preferred) {
            order.push((Some(preferred), p));
        }
        order.extend(
            self.upstream
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != preferred)
                .map(|(i, e)| (Some(i), e)),
        );
        order
    }

    /// Runs `op` against the mirrors (any failure moves on) and then upstream (only a
    /// failure to reach it moves on, from HTTPS to plain HTTP).
    async fn across_endpoints<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        self.across(self.endpoints(), op).await
    }

    /// Runs `op` against the registry itself, never a mirror: for pushes and logins.
    pub(crate) async fn across_upstream<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let order = self
            .endpoints()
            .into_iter()
            .filter(|(index, _)| index.is_some())
            .collect();
        self.across(order, op).await
    }

    async fn across<T, F, Fut>(
        &self,
        order: Vec<(Option<usize>, &Endpoint)>,
        op: F,
    ) -> Result<T, Error>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let upstream_count = self.upstream.len();
        let mut upstream_tried = 0;
        let mut last = None;
        for (index, ep) in order {
            match op(ep.clone()).await {
                Ok(v) => {
                    if let Some(i) = index {
                        *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) = i;
                    }
                    return Ok(v);
                }
                Err(e) if index.is_none() => {
                    tracing::warn!(mirror = %ep.base, error = %e, "mirror failed; trying the next place");
                }
                Err(e) => {
                    upstream_tried += 1;
                    if !e.is_transport() || upstream_tried == upstream_count {
                        return Err(e);
                    }
                    tracing::info!(endpoint = %ep.base, error = %e, "registry not reachable this way; trying plain HTTP");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unreachable {
            host: self.host.clone(),
            reason: "no endpoint configured".into(),
        }))
    }

    async fn resolve_at(&self, ep: &Endpoint, reference: &Reference) -> Result<Descriptor, Error> {
        let target = match (reference.digest(), reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        };
        let subject = reference.familiar();
        let url = ep.url(reference.path(), Kind::Manifest, &target);
        let scope = pull_scope(reference.path());

        let (resp, with_credentials) = self
            .send(ep, Method::HEAD, &url, Some(MANIFEST_ACCEPT), &scope)
            .await?;
        let status = resp.status();
        if status.is_success() {
            if let Some(d) = descriptor_from_headers(resp.headers(), reference.digest()) {
                return accept_manifest(d, &subject);
            }
        } else if matches!(
            status,
            StatusCode::NOT_FOUND
                | StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::TOO_MANY_REQUESTS
        ) {
            // These statuses are answers, not a lack of HEAD support: an error, no GET.
            check_status(resp, ep, &subject, with_credentials).await?;
        }
        // HEAD said too little (no digest or type) or is not supported: GET the manifest.
        let (resp, with_credentials) = self
            .send(ep, Method::GET, &url, Some(MANIFEST_ACCEPT), &scope)
            .await?;
        let resp = check_status(resp, ep, &subject, with_credentials).await?;
        let header_digest =
            header(resp.headers(), "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        let content_type = header(resp.headers(), CONTENT_TYPE.as_str()).map(bare_media_type);
        let body = read_limited(resp, &subject, ep).await?;
        let computed = Digest::sha256_of(&body);
        let digest = match (reference.digest(), header_digest) {
            (Some(want), _) => {
                let mut v = crate::verify::Verifier::new(crate::verify::Expected {
                    digest: want.clone(),
                    size: None,
                    limit: None,
                    subject: format!("manifest {want}"),
                    host: ep.name.clone(),
                });
                v.update(&body)?;
                v.finish()?;
                want.clone()
            }
            (None, Some(h)) if h.algorithm() == computed.algorithm() && h != computed => {
                return Err(Error::DigestMismatch {
                    subject: format!("manifest {h} ({subject})"),
                    host: ep.name.clone(),
                    got: computed.to_string(),
                })
            }
            (None, Some(h)) => h,
            (None, None) => computed,
        };
        let media_type = match content_type {
            Some(t) if media::is_manifest(&t) || media::is_index(&t) => t,
            other => media_type_of_body(&body).or(other).unwrap_or_default(),
        };
        accept_manifest(
            Descriptor {
                media_type,
                digest,
                size: body.len() as u64,
            },
            &subject,
        )
    }

    async fn fetch_at(
        &self,
        ep: &Endpoint,
        repository: &Reference,
        kind: Kind,
        digest: &Digest,
        media_type: Option<&str>,
    ) -> Result<Content, Error> {
        let subject = format!("{kind} {digest} of {}", repository.familiar_repository());
        let url = ep.url(repository.path(), kind, &digest.to_string());
        let accept = match (kind, media_type) {
            (Kind::Blob, _) => None,
            (Kind::Manifest, Some(t)) if !t.is_empty() && !MANIFEST_ACCEPT.contains(t) => {
                Some(format!("{t}, {MANIFEST_ACCEPT}"))
            }
            (Kind::Manifest, _) => Some(MANIFEST_ACCEPT.to_string()),
        };
        let scope = pull_scope(repository.path());
        let (resp, with_credentials) = self
            .send(ep, Method::GET, &url, accept.as_deref(), &scope)
            .await?;
        let resp = check_status(resp, ep, &subject, with_credentials).await?;
        let total = content_length(resp.headers());
        if kind == Kind::Manifest {
            if let Some(n) = total.filter(|n| *n > MAX_MANIFEST_SIZE) {
                return Err(Error::ManifestTooLarge { subject, size: n });
            }
        }
        let source = ep.name.clone();
        let host = ep.name.clone();
        let login_host = ep.login_host.clone();
        let what = format!("{kind} {digest}");
        let stream = resp
            .bytes_stream()
            .map(move |r| {
                r.map_err(|e| Error::Interrupted {
                    subject: what.clone(),
                    host: host.clone(),
                    reason: describe_transport(&e, &login_host, CONNECT_TIMEOUT.as_secs()),
                })
            })
            .boxed();
        Ok(Content {
            total,
            source,
            stream,
        })
    }

    /// Sends a request, answering one 401 challenge. Returns the response and whether
    /// credentials went with it (a 401 then means they were refused).
    async fn send(
        &self,
        ep: &Endpoint,
        method: Method,
        url: &Url,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<(Response, bool), Error> {
        let mut call = Call::new(method, url.clone());
        call.accept = accept.map(str::to_string);
        self.send_call(ep, &call, scope).await
    }

    /// [`send`](Self::send) for any [`Call`]. Our `Authorization` goes only to the
    /// endpoint's own origin.
    pub(crate) async fn send_call(
        &self,
        ep: &Endpoint,
        call: &Call,
        scope: &str,
    ) -> Result<(Response, bool), Error> {
        if !ep.same_origin(&call.url) {
            return Ok((request(ep, call, None).await?, false));
        }
        let cached = self.auth.get(ep.base.as_str(), scope);
        let resp = request(ep, call, cached.as_deref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok((resp, cached.is_some()));
        }
        if cached.is_some() {
            self.auth.forget(ep.base.as_str(), scope);
        }
        let challenges = challenges_of(&resp);
        self.challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ep.base.to_string(), challenges.clone());
        let credential = self.credentials.get(&ep.login_host);
        tracing::debug!(
            endpoint = %ep.base,
            challenges = ?challenges.iter().map(|c| &c.scheme).collect::<Vec<_>>(),
            credentials = credential.is_some(),
            "registry asks for authentication"
        );
        let Some((authorization, lifetime)) =
            authorize(ep, &challenges, scope, credential.as_ref()).await?
        else {
            return Ok((resp, false));
        };
        let with_credentials = credential.is_some();
        let retry = request(ep, call, Some(&authorization)).await?;
        if !matches!(
            retry.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            self.auth
                .put(ep.base.as_str(), scope, authorization, lifetime);
        }
        Ok((retry, with_credentials))
    }

    /// The `Authorization` for a request that cannot be repeated after a 401: the cached
    /// one, else the answer to the endpoint's last challenge (a fresh token when the cached
    /// one expired). Also whether credentials are behind it.
    pub(crate) async fn authorization(
        &self,
        ep: &Endpoint,
        scope: &str,
    ) -> Result<(Option<String>, bool), Error> {
        let credential = self.credentials.get(&ep.login_host);
        if let Some(cached) = self.auth.get(ep.base.as_str(), scope) {
            return Ok((Some(cached), credential.is_some()));
        }
        let challenges = self
            .challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ep.base.as_str())
            .cloned();
        let Some(challenges) = challenges else {
            return Ok((None, false));
        };
        match authorize(ep, &challenges, scope, credential.as_ref()).await? {
            Some((value, lifetime)) => {
                self.auth
                    .put(ep.base.as_str(), scope, value.clone(), lifetime);
                Ok((Some(value), credential.is_some()))
            }
            None => Ok((None, false)),
        }
    }
}

/// The challenges of a 401 answer's `WWW-Authenticate` headers.
pub(crate) fn challenges_of(resp: &Response) -> Vec<Challenge> {
    resp.headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

fn mirror_endpoint(
    host: &str,
    mirror: &str,
    config: &Config,
    http: &HttpClients,
) -> Result<Endpoint, Error> {
    let invalid = |reason: String| Error::InvalidMirror {
        host: host.to_string(),
        mirror: mirror.to_string(),
        reason,
    };
    let text = if mirror.contains("://") {
        mirror.to_string()
    } else {
        format!("https://{mirror}")
    };
    let mut base = Url::parse(&text).map_err(|e| invalid(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(invalid(
            "use http://HOST[:PORT] or https://HOST[:PORT]".into(),
        ));
    }
    let path = base.path().trim_end_matches('/');
    let path = path.strip_suffix("/v2").unwrap_or(path).to_string();
    base.set_path(&path);
    base.set_query(None);
    let mirror_host = authority(&base);
    let verify = !(base.scheme() == "https" && config.registry(&mirror_host).insecure);
    let (http, upload) = http.pick(verify);
    Ok(Endpoint {
        http,
        upload,
        mirror_of: Some(host.to_string()),
        name: format!("{mirror_host} (mirror of {host})"),
        login_host: mirror_host,
        base,
    })
}

pub(crate) async fn request(
    ep: &Endpoint,
    call: &Call,
    authorization: Option<&str>,
) -> Result<Response, Error> {
    let resp = call
        .builder(&ep.http, authorization)
        .send()
        .await
        .map_err(|e| unreachable(ep, &e))?;
    tracing::debug!(method = %call.method, url = %call.url, status = resp.status().as_u16(), "registry request");
    Ok(resp)
}

/// A request that got no answer.
pub(crate) fn unreachable(ep: &Endpoint, e: &reqwest::Error) -> Error {
    Error::Unreachable {
        host: ep.name.clone(),
        reason: describe_transport(e, &ep.login_host, CONNECT_TIMEOUT.as_secs()),
    }
}

/// The `Authorization` value that answers a challenge, and how long it may be reused; `None`
/// when nothing we have answers it (no credentials for Basic, an unknown scheme).
pub(crate) async fn authorize(
    ep: &Endpoint,
    challenges: &[Challenge],
    scope: &str,
    credential: Option<&Credential>,
) -> Result<Option<(String, Option<Duration>)>, Error> {
    if let Some(bearer) = challenges
        .iter()
        .find(|c| c.scheme == "bearer" && c.param("realm").is_some())
    {
        let token = fetch_token(ep, bearer, scope, credential).await?;
        return Ok(Some((format!("Bearer {}", token.0), Some(token.1))));
    }
    if challenges.iter().any(|c| c.scheme == "basic") {
        return Ok(credential.map(|c| (basic(c), None)));
    }
    Ok(None)
}

pub(crate) fn basic(c: &Credential) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Asks a Bearer challenge's realm for a token (Docker's token spec), with Basic
/// credentials when there are some and anonymously otherwise.
pub(crate) async fn fetch_token(
    ep: &Endpoint,
    challenge: &Challenge,
    scope: &str,
    credential: Option<&Credential>,
) -> Result<(String, Duration), Error> {
    let subject = format!("a token for {scope}");
    let realm = challenge.param("realm").unwrap_or_default();
    let mut url = Url::parse(realm).map_err(|e| Error::InvalidResponse {
        subject: subject.clone(),
        host: ep.name.clone(),
        reason: format!("the token realm {realm:?} is not a URL: {e}"),
    })?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(service) = challenge.param("service") {
            q.append_pair("service", service);
        }
        let scopes = challenge.param("scope").unwrap_or(scope);
        for s in scopes.split(' ').filter(|s| !s.is_empty()) {
            q.append_pair("scope", s);
        }
    }
    let authorization = credential.map(basic);
    let token_ep = Endpoint {
        name: authority(&url),
        ..ep.clone()
    };
    let resp = request(
        &token_ep,
        &Call::new(Method::GET, url.clone()),
        authorization.as_deref(),
    )
    .await?;
    let status = resp.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        let detail = error_detail(resp).await;
        return Err(if credential.is_some() {
            Error::BadCredentials {
                subject,
                host: ep.login_host.clone(),
                detail,
            }
        } else {
            Error::Unauthorized {
                subject,
                host: ep.login_host.clone(),
                detail,
            }
        });
    }
    let resp = check_status(resp, &token_ep, &subject, credential.is_some()).await?;
    let body = read_limited(resp, &subject, &token_ep).await?;
    let token: TokenResponse =
        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
            subject: subject.clone(),
            host: token_ep.name.clone(),
            reason: format!("the token answer is not JSON: {e}"),
        })?;
    let value = token.token().ok_or_else(|| Error::InvalidResponse {
        subject,
        host: token_ep.name.clone(),
        reason: "the token answer has no token".into(),
    })?;
    Ok((value.to_string(), token.lifetime()))
}

/// Turns an HTTP failure into an [`Error`] that says what to do.
pub(crate) async fn check_status(
    resp: Response,
    ep: &Endpoint,
    subject: &str,
    with_credentials: bool,
) -> Result<Response, Error> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let subject = subject.to_string();
    let host = ep.login_host.clone();
    let detail = error_detail(resp).await;
    Err(match status {
        StatusCode::NOT_FOUND => Error::NotFound { subject },
        StatusCode::UNAUTHORIZED if with_credentials => Error::BadCredentials {
            subject,
            host,
            detail,
        },
        StatusCode::UNAUTHORIZED => Error::Unauthorized {
            subject,
            host,
            detail,
        },
        StatusCode::FORBIDDEN => Error::Denied {
            subject,
            host,
            detail,
        },
        StatusCode::TOO_MANY_REQUESTS => Error::TooManyRequests {
            subject,
            host,
            detail,
        },
        s if s.is_server_error() => Error::Server {
            subject,
            host: ep.name.clone(),
            status: s.as_u16(),
            detail,
        },
        s => Error::Unexpected {
            subject,
            host: ep.name.clone(),
            status: s.as_u16(),
            detail,
        },
    })
}

/// `: <message>` from a registry's error body (`{"errors":[{"code","message"}]}`), or its
/// first line of text; empty when there is nothing useful.
pub(crate) async fn error_detail(resp: Response) -> String {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    detail_of_body(&body)
}

fn detail_of_body(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{} ({})", e.message, e.code),
                (true, false) => e.message.clone(),
                _ => e.code.clone(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return format!(" ({})", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(l) if !l.starts_with('<') => {
            format!(" ({})", l.chars().take(200).collect::<String>())
        }
        _ => String::new(),
    }
}

/// Reads a whole (small) body: a manifest or a token, refusing more than the manifest limit.
pub(crate) async fn read_limited(
    resp: Response,
    subject: &str,
    ep: &Endpoint,
) -> Result<Vec<u8>, Error> {
    if let Some(n) = content_length(resp.headers()).filter(|n| *n > MAX_MANIFEST_SIZE) {
        return Err(Error::ManifestTooLarge {
            subject: subject.to_string(),
            size: n,
        });
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Interrupted {
            subject: subject.to_string(),
            host: ep.name.clone(),
            reason: describe_transport(&e, &ep.login_host, CONNECT_TIMEOUT.as_secs()),
        })?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::ManifestTooLarge {
                subject: subject.to_string(),
                size: body.len() as u64,
            });
        }
    }
    Ok(body)
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok())
}

/// `application/json; charset=utf-8` → `application/json`.
fn bare_media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A descriptor from a HEAD answer, when it says enough: a manifest media type, a digest
/// (the header's, or the reference's own) and a length.
fn descriptor_from_headers(
    headers: &HeaderMap,
    reference_digest: Option<&Digest>,
) -> Option<Descriptor> {
    let media_type = bare_media_type(header(headers, CONTENT_TYPE.as_str())?);
    if !(media::is_manifest(&media_type) || media::is_index(&media_type)) {
        return None;
    }
    let digest = match reference_digest {
        Some(d) => d.clone(),
        None => header(headers, "docker-content-digest")?.parse().ok()?,
    };
    let size = content_length(headers)?;
    Some(Descriptor {
        media_type,
        digest,
        size,
    })
}

/// The media type a manifest declares in its body; for an OCI manifest without
/// `mediaType`, what its shape says.
pub(crate) fn media_type_of_body(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(t) = v.get("mediaType").and_then(|t| t.as_str()) {
        return Some(t.to_string());
    }
    if v.get("manifests").is_some() {
        Some(media::OCI_INDEX.to_string())
    } else if v.get("config").is_some() && v.get("layers").is_some() {
        Some(media::OCI_MANIFEST.to_string())
    } else {
        None
    }
}

fn accept_manifest(d: Descriptor, subject: &str) -> Result<Descriptor, Error> {
    if !(media::is_manifest(&d.media_type) || media::is_index(&d.media_type)) {
        return Err(Error::UnsupportedMediaType {
            subject: subject.to_string(),
            media_type: d.media_type,
        });
    }
    if d.size > MAX_MANIFEST_SIZE {
        return Err(Error::ManifestTooLarge {
            subject: subject.to_string(),
            size: d.size,
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Anonymous;

    fn client(host: &str, config: &str) -> RegistryClient {
        let config = Config::parse(config).unwrap();
        RegistryClient::new(
            host,
            &config,
            &HttpClients::new().unwrap(),
            Arc::new(Anonymous),
        )
        .unwrap()
    }

    fn urls(c: &RegistryClient) -> Vec<String> {
        c.endpoints()
            .iter()
            .map(|(_, e)| {
                e.url("library/busybox", Kind::Manifest, "latest")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn builds_distribution_urls() {
        assert_eq!(
            urls(&client("docker.io", "")),
            ["https://registry-1.docker.io/v2/library/busybox/manifests/latest"]
        );
        assert_eq!(
            urls(&client("127.0.0.1:5000", "")),
            ["http://127.0.0.1:5000/v2/library/busybox/manifests/latest"]
        );
        let c = client("quay.io", "");
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(
            c.upstream[0]
                .url("a/b/c", Kind::Blob, &d.to_string())
                .as_str(),
            format!("https://quay.io/v2/a/b/c/blobs/{d}")
        );
    }

    #[test]
    fn insecure_registries_try_https_then_http() {
        let c = client(
            "reg.example:5000",
            "[registries.\"reg.example:5000\"]\ninsecure = true\n",
        );
        assert_eq!(
            urls(&c),
            [
                "https://reg.example:5000/v2/library/busybox/manifests/latest",
                "http://reg.example:5000/v2/library/busybox/manifests/latest"
            ]
        );
        // After plain HTTP worked, it goes first.
        *c.preferred.lock().unwrap() = 1;
        assert!(urls(&c)[0].starts_with("http://"));
        assert_eq!(urls(&c).len(), 2);
    }

    #[tokio::test]
    async fn pushes_and_logins_never_go_to_mirrors() {
        let c = client(
            "reg.example:5000",
            "[registries.\"reg.example:5000\"]\ninsecure = true\nmirrors = [\"http://127.0.0.1:5001\"]\n",
        );
        let tried = Mutex::new(Vec::new());
        let r: Result<(), Error> = c
            .across_upstream(|ep| {
                tried.lock().unwrap().push(ep.base.to_string());
                async {
                    Err(Error::Unreachable {
                        host: "reg.example:5000".into(),
                        reason: "test".into(),
                    })
                }
            })
            .await;
        assert!(matches!(r, Err(Error::Unreachable { .. })));
        // The registry itself, over HTTPS then plain HTTP as it is insecure: no mirror.
        assert_eq!(
            *tried.lock().unwrap(),
            ["https://reg.example:5000/", "http://reg.example:5000/"]
        );
        assert!(c.answers_to("127.0.0.1:5001") && c.answers_to("reg.example:5000"));
        assert!(!c.answers_to("other.example"));
    }

    #[test]
    fn mirrors_come_first_in_order_with_ns() {
        let c = client(
            "docker.io",
            r#"[registries."docker.io"]
mirrors = ["http://127.0.0.1:5001", "mirror.example/v2/", "https://m.example/prefix"]
"#,
        );
        assert_eq!(
            urls(&c),
            [
                "http://127.0.0.1:5001/v2/library/busybox/manifests/latest?ns=docker.io",
                "https://mirror.example/v2/library/busybox/manifests/latest?ns=docker.io",
                "https://m.example/prefix/v2/library/busybox/manifests/latest?ns=docker.io",
                "https://registry-1.docker.io/v2/library/busybox/manifests/latest",
            ]
        );
        assert_eq!(c.mirrors[0].login_host, "127.0.0.1:5001");
        assert_eq!(c.mirrors[0].name, "127.0.0.1:5001 (mirror of docker.io)");
        let bad = RegistryClient::new(
            "docker.io",
            &Config::parse("[registries.\"docker.io\"]\nmirrors = [\"ftp://x\"]\n").unwrap(),
            &HttpClients::new().unwrap(),
            Arc::new(Anonymous),
        );
        assert!(matches!(bad, Err(Error::InvalidMirror { .. })));
    }

    #[test]
    fn head_answers_make_descriptors() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, media::OCI_MANIFEST.parse().unwrap());
        h.insert(CONTENT_LENGTH, "528".parse().unwrap());
        assert_eq!(
            descriptor_from_headers(&h, None),
            None,
            "no digest: GET instead"
        );
        let d = Digest::sha256_of(b"x");
        h.insert("docker-content-digest", d.to_string().parse().unwrap());
        let desc = descriptor_from_headers(&h, None).unwrap();
        assert_eq!(
            (desc.media_type.as_str(), desc.size),
            (media::OCI_MANIFEST, 528)
        );
        h.insert(
            CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(descriptor_from_headers(&h, None), None);
    }

    #[test]
    fn registry_error_bodies_become_details() {
        assert_eq!(
            detail_of_body(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ),
            " (manifest unknown (MANIFEST_UNKNOWN))"
        );
        assert_eq!(detail_of_body(b""), "");
        assert_eq!(detail_of_body(b"<html>"), "");
        assert_eq!(detail_of_body(b"\nrate limited\n"), " (rate limited)");
    }

    #[test]
    fn body_media_types() {
        assert_eq!(
            media_type_of_body(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(media::OCI_INDEX)
        );
        assert_eq!(
            media_type_of_body(
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#
            )
            .as_deref(),
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws")
        );
        let e = accept_manifest(
            Descriptor {
                media_type: "text/html".into(),
                digest: Digest::sha256_of(b""),
                size: 1,
            },
            "x:1",
        )
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }
}
