//! The `berth.registry.v1.Registry` gRPC service: a thin shell over [`RegistryService`]'s
//! `resolve` and `fetch`, which in-process callers can use directly.

use crate::cache::{Cache, Reuse, Want};
use crate::client::{Descriptor, HttpClients, Kind, RegistryClient};
use crate::credentials::{of_request, with_request_credential, Credential, CredentialStore};
use crate::error::Error;
use crate::login::{login_host, LoginCheck};
use crate::push::{BlobPresence, Pushed, DEFAULT_CHUNK_SIZE};
use crate::verify::{verified, Expected};
use berth_api::registry::v1 as rpc;
use berth_api::registry::v1::push_blob_request::Item as PushItem;
use berth_api::registry::v1::registry_server::Registry;
use berth_api::registry::v1::{FetchRequest, FetchResponse, ResolveRequest, ResolveResponse};
use berth_api::types::v1 as types;
use berth_core::config::Config;
use berth_core::media::MAX_MANIFEST_SIZE;
use berth_core::{Digest, Reference};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

/// gRPC messages stay well under tonic's 4 MiB default limit.
const MAX_CHUNK: usize = 1 << 20;

/// Resolves and fetches from any registry, one [`RegistryClient`] per host (kept, with its
/// tokens, for the life of the service).
pub struct RegistryService {
    config: Arc<Config>,
    http: HttpClients,
    credentials: Arc<dyn CredentialStore>,
    clients: Mutex<HashMap<String, Arc<RegistryClient>>>,
    /// The pull-through cache, when the service has a store.
    cache: Option<Arc<Cache>>,
}

impl std::fmt::Debug for RegistryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryService")
            .field(
                "registries",
                &self.config.registries.keys().collect::<Vec<_>>(),
            )
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// A fetch under way: its length when known and its verified bytes.
pub struct Fetched {
    /// The Content-Length, else the descriptor's size, when either is known.
    pub total: Option<u64>,
    pub stream: BoxStream<'static, Result<Bytes, Error>>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl RegistryService {
    pub fn new(
        config: &Config,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<RegistryService, Error> {
        Ok(RegistryService {
            config: Arc::new(config.clone()),
            http: HttpClients::new()?,
            credentials,
            clients: Mutex::new(HashMap::new()),
            cache: None,
        })
    }

    /// The service with a pull-through cache: fetches by digest are served from it when they
    /// can be and stored in it when they come from upstream, and tags resolved upstream are
    /// remembered for when upstream cannot be reached.
    pub fn with_cache(mut self, cache: Arc<Cache>) -> RegistryService {
        self.cache = Some(cache);
        self
    }

    pub fn cache(&self) -> Option<&Arc<Cache>> {
        self.cache.as_ref()
    }

    /// The client for a registry host, made on first use; a request that brought its own
    /// credentials ([`crate::credentials::REQUEST_CREDENTIAL`]) gets a client of its own.
    pub fn client(&self, host: &str) -> Result<Arc<RegistryClient>, Error> {
        if let Ok(c) = crate::credentials::REQUEST_CREDENTIAL.try_with(Clone::clone) {
            let store = Arc::new(crate::credentials::ForOneRequest(c));
            return Ok(Arc::new(RegistryClient::new(
                host,
                &self.config,
                &self.http,
                store,
            )?));
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let c = Arc::new(RegistryClient::new(
            host,
            &self.config,
            &self.http,
            self.credentials.clone(),
        )?);
        clients.insert(host.to_string(), c.clone());
        Ok(c)
    }

    /// A reference (as a person writes it) to its normalized form and manifest descriptor.
    ///
    /// With a cache, a digest whose manifest is cached is answered without asking upstream,
    /// and a tag is asked upstream; when upstream cannot answer (unreachable, failing, rate
    /// limiting) the digest the tag last resolved to is used, if that manifest is cached.
    pub async fn resolve(&self, reference: &str) -> Result<(Reference, Descriptor), Error> {
        self.resolve_with(reference, Reuse::Any).await
    }

    /// [`resolve`](Self::resolve), answering a digest from the cache only as `reuse` allows.
    pub async fn resolve_with(
        &self,
        reference: &str,
        reuse: Reuse,
    ) -> Result<(Reference, Descriptor), Error> {
        let reference = Reference::parse(reference)?;
        let Some(cache) = &self.cache else {
            let descriptor = self.client(reference.domain())?.resolve(&reference).await?;
            return Ok((reference, descriptor));
        };
        let cached = match (reference.digest(), reuse) {
            (Some(d), Reuse::Any) => cache.manifest(d),
            (Some(d), Reuse::Linked) if cache.served(&reference.repository(), d)? => {
                cache.manifest(d)
            }
            _ => None,
        };
        if let Some(d) = cached {
            return Ok((reference, d));
        }
        match self.client(reference.domain())?.resolve(&reference).await {
            Ok(descriptor) => {
                cache.remember(&reference, &descriptor);
                Ok((reference, descriptor))
            }
            Err(e) if upstream_unavailable(&e) => match cache.remembered(&reference) {
                Some(descriptor) => {
                    tracing::warn!(
                        %reference,
                        digest = %descriptor.digest,
                        error = %e,
                        "upstream cannot resolve the tag; using the digest it last resolved to"
                    );
                    Ok((reference, descriptor))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Streams the manifest or blob `descriptor` names from `repository`, verified as it
    /// streams: the stream ends with [`Error::DigestMismatch`] or [`Error::SizeMismatch`]
    /// instead of its last bytes when the content is not what the descriptor says.
    pub async fn fetch(
        &self,
        repository: &str,
        descriptor: &types::Descriptor,
        manifest: bool,
    ) -> Result<Fetched, Error> {
        self.fetch_with(repository, descriptor, manifest, Reuse::Any)
            .await
    }

    /// [`fetch`](Self::fetch), answering from the cache only as `reuse` allows.
    pub async fn fetch_with(
        &self,
        repository: &str,
        descriptor: &types::Descriptor,
        manifest: bool,
        reuse: Reuse,
    ) -> Result<Fetched, Error> {
        let repository = Reference::parse_name_only(repository)?;
        if descriptor.digest.is_empty() {
            return Err(Error::InvalidRequest(
                "the descriptor to fetch has no digest".into(),
            ));
        }
        let digest: Digest = descriptor.digest.parse()?;
        let kind = if manifest { Kind::Manifest } else { Kind::Blob };
        let size = u64::try_from(descriptor.size).ok().filter(|s| *s > 0);
        if manifest {
            if let Some(size) = size.filter(|s| *s > MAX_MANIFEST_SIZE) {
                return Err(Error::ManifestTooLarge {
                    subject: format!("{kind} {digest} of {}", repository.familiar_repository()),
                    size,
                });
            }
        }
        let media_type = Some(descriptor.media_type.as_str()).filter(|t| !t.is_empty());
        if let Some(cache) = &self.cache {
            let want = Want {
                digest: digest.clone(),
                size,
                limit: manifest.then_some(MAX_MANIFEST_SIZE),
                subject: format!("{kind} {digest}"),
                media_type: media_type.filter(|_| manifest).map(str::to_string),
                repository: repository.repository(),
                reuse,
            };
            let client = self.client(repository.domain())?;
            let open = || client.fetch(&repository, kind, &digest, media_type);
            return cache.fetch(&want, open).await;
        }
        let content = self
            .client(repository.domain())?
            .fetch(&repository, kind, &digest, media_type)
            .await?;
        let expected = Expected {
            subject: format!("{kind} {digest}"),
            host: content.source.clone(),
            digest,
            size,
            limit: manifest.then_some(MAX_MANIFEST_SIZE),
        };
        Ok(Fetched {
            total: content.total.or(size),
            stream: verified(content.stream, expected).boxed(),
        })
    }
}

/// Failures that say nothing about the content, only that upstream cannot answer now.
fn upstream_unavailable(e: &Error) -> bool {
    matches!(
        e,
        Error::Unreachable { .. }
            | Error::Server { .. }
            | Error::Interrupted { .. }
            | Error::TooManyRequests { .. }
    )
}

fn to_proto(d: &Descriptor) -> types::Descriptor {
    types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        annotations: Default::default(),
    }
}

/// Logs a failed RPC at a level that matches whose fault it is, and turns it into a status.
fn fail(e: Error) -> Status {
    match e.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => {
            tracing::info!(error = %e, "failed")
        }
        _ => tracing::warn!(error = %e, "failed"),
    }
    e.into()
}

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn resolve(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<ResolveResponse>, Status> {
        let namespace = berth_core::grpc::namespace(&request)?;
        let ResolveRequest { reference, auth } = request.into_inner();
        let span = tracing::info_span!("registry.resolve", %namespace, %reference);
        async {
            let credential = of_request(auth.as_ref()).map_err(fail)?;
            let (name, descriptor) =
                with_request_credential(credential, RegistryService::resolve(self, &reference))
                    .await
                    .map_err(fail)?;
            tracing::info!(
                name = %name,
                digest = %descriptor.digest,
                media_type = %descriptor.media_type,
                size = descriptor.size,
                "resolved"
            );
            Ok(Response::new(ResolveResponse {
                name: name.to_string(),
                descriptor: Some(to_proto(&descriptor)),
            }))
        }
        .instrument(span)
        .await
    }

    type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchResponse, Status>> + Send>>;

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let namespace = berth_core::grpc::namespace(&request)?;
        let FetchRequest {
            reference,
            descriptor,
            manifest,
            auth,
        } = request.into_inner();
        let credential = of_request(auth.as_ref()).map_err(fail)?;
        let descriptor = descriptor.unwrap_or_default();
        let span = tracing::info_span!(
            "registry.fetch",
            %namespace,
            %reference,
            digest = %descriptor.digest,
            manifest
        );
        let fetched = with_request_credential(
            credential,
            RegistryService::fetch(self, &reference, &descriptor, manifest),
        )
        .instrument(span.clone())
        .await
        .map_err(|e| span.in_scope(|| fail(e)))?;

        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(pump(fetched, tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn check_blob(
        &self,
        request: Request<rpc::CheckBlobRequest>,
    ) -> Result<Response<rpc::CheckBlobResponse>, Status> {
        let namespace = berth_core::grpc::namespace(&request)?;
        let rpc::CheckBlobRequest {
            reference,
            descriptor,
            mount_from,
            auth,
        } = request.into_inner();
        let descriptor = descriptor.unwrap_or_default();
        let span = tracing::info_span!(
            "registry.check_blob",
            %namespace,
            %reference,
            digest = %descriptor.digest
        );
        async {
            let credential = of_request(auth.as_ref()).map_err(fail)?;
            let presence = with_request_credential(
                credential,
                RegistryService::check_blob(self, &reference, &descriptor, &mount_from),
            )
            .await
            .map_err(fail)?;
            tracing::debug!(?presence, "checked");
            Ok(Response::new(match presence {
                BlobPresence::Exists => rpc::CheckBlobResponse {
                    exists: true,
                    mounted_from: String::new(),
                },
                BlobPresence::Mounted(from) => rpc::CheckBlobResponse {
                    exists: false,
                    mounted_from: from,
                },
                BlobPresence::Missing => rpc::CheckBlobResponse::default(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn push_blob(
        &self,
        request: Request<tonic::Streaming<rpc::PushBlobRequest>>,
    ) -> Result<Response<rpc::PushBlobResponse>, Status> {
        let namespace = berth_core::grpc::namespace(&request)?;
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(rpc::PushBlobRequest {
                item: Some(PushItem::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "PushBlob: the first message must be the header (repository and descriptor), then the bytes",
                ))
            }
        };
        let descriptor = header.descriptor.unwrap_or_default();
        let span = tracing::info_span!(
            "registry.push_blob",
            %namespace,
            reference = %header.reference,
            digest = %descriptor.digest,
            size = descriptor.size
        );
        let subject = format!("blob {}", descriptor.digest);
        let data = stream.map(move |message| match message {
            Ok(rpc::PushBlobRequest {
                item: Some(PushItem::Data(d)),
            }) => Ok(Bytes::from(d)),
            Ok(rpc::PushBlobRequest { item: None }) => Ok(Bytes::new()),
            Ok(rpc::PushBlobRequest {
                item: Some(PushItem::Header(_)),
            }) => Err(Error::InvalidRequest(
                "PushBlob: a second header; send one header, then the bytes".into(),
            )),
            Err(status) => Err(Error::SourceFailed {
                subject: subject.clone(),
                reason: status.message().to_string(),
            }),
        });
        async {
            let credential = of_request(header.auth.as_ref()).map_err(fail)?;
            let pushed = with_request_credential(
                credential,
                RegistryService::push_blob(
                    self,
                    &header.reference,
                    &descriptor,
                    header.chunk_size,
                    data,
                ),
            )
            .await
            .map_err(fail)?;
            tracing::info!(size = pushed.size, chunks = pushed.chunks, "pushed");
            Ok(Response::new(rpc::PushBlobResponse {
                size: i64::try_from(pushed.size).unwrap_or(i64::MAX),
                chunks: i32::try_from(pushed.chunks).unwrap_or(i32::MAX),
            }))
        }
        .instrument(span)
        .await
    }

    async fn push_manifest(
        &self,
        request: Request<rpc::PushManifestRequest>,
    ) -> Result<Response<rpc::PushManifestResponse>, Status> {
        let namespace = berth_core::grpc::namespace(&request)?;
        let rpc::PushManifestRequest {
            reference,
            media_type,
            manifest,
            auth,
        } = request.into_inner();
        let span =
            tracing::info_span!("registry.push_manifest", %namespace, %reference, %media_type);
        async {
            let credential = of_request(auth.as_ref()).map_err(fail)?;
            let digest = with_request_credential(
                credential,
                RegistryService::push_manifest(self, &reference, &media_type, manifest.into()),
            )
            .await
            .map_err(fail)?;
            tracing::info!(%digest, "pushed");
            Ok(Response::new(rpc::PushManifestResponse {
                digest: digest.to_string(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn login(
        &self,
        request: Request<rpc::LoginRequest>,
    ) -> Result<Response<rpc::LoginResponse>, Status> {
        let namespace = berth_core::grpc::namespace(&request)?;
        let rpc::LoginRequest {
            registry,
            username,
            password,
        } = request.into_inner();
        let span = tracing::info_span!("registry.login", %namespace, %registry, %username);
        async {
            let message = RegistryService::login(self, &registry, &username, &password)
                .await
                .map_err(fail)?;
            tracing::info!("logged in");
            Ok(Response::new(rpc::LoginResponse { message }))
        }
        .instrument(span)
        .await
    }

    async fn logout(
        &self,
        request: Request<rpc::LogoutRequest>,
    ) -> Result<Response<rpc::LogoutResponse>, Status> {
        let namespace = berth_core::grpc::namespace(&request)?;
        let registry = request.into_inner().registry;
        let span = tracing::info_span!("registry.logout", %namespace, %registry);
        span.in_scope(|| {
            let removed = RegistryService::logout(self, &registry).map_err(fail)?;
            tracing::info!(removed, "logged out");
            Ok(Response::new(rpc::LogoutResponse { removed }))
        })
    }
}

/// The push side and logins, for in-process callers as for the RPCs.
impl RegistryService {
    /// Whether `repository` holds the blob `descriptor` names, else whether one of
    /// `mount_from` (full repository names) lent it by a cross-repository mount.
    pub async fn check_blob(
        &self,
        repository: &str,
        descriptor: &types::Descriptor,
        mount_from: &[String],
    ) -> Result<BlobPresence, Error> {
        let repository = Reference::parse_name_only(repository)?;
        let digest = digest_of(descriptor)?;
        let from = mount_from
            .iter()
            .map(|m| Reference::parse_name_only(m))
            .collect::<Result<Vec<_>, _>>()?;
        self.client(repository.domain())?
            .check_blob(&repository, &digest, &from)
            .await
    }

    /// Uploads the blob `descriptor` names from `data`, in chunks of `chunk_size` bytes
    /// when it is larger (0: [`DEFAULT_CHUNK_SIZE`]).
    pub async fn push_blob<S>(
        &self,
        repository: &str,
        descriptor: &types::Descriptor,
        chunk_size: i64,
        data: S,
    ) -> Result<Pushed, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send + Unpin,
    {
        let repository = Reference::parse_name_only(repository)?;
        let digest = digest_of(descriptor)?;
        let size = u64::try_from(descriptor.size).map_err(|_| {
            Error::InvalidRequest(format!(
                "the descriptor of {digest} has a negative size ({})",
                descriptor.size
            ))
        })?;
        let chunk_size = match u64::try_from(chunk_size) {
            Ok(0) => DEFAULT_CHUNK_SIZE,
            Ok(n) => n,
            Err(_) => {
                return Err(Error::InvalidRequest(format!(
                    "chunk size {chunk_size} is negative; 0 means the default"
                )))
            }
        };
        self.client(repository.domain())?
            .push_blob(&repository, &digest, size, chunk_size, data)
            .await
    }

    /// Puts a manifest under `reference`'s tag, else under its digest; returns the digest.
    pub async fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        manifest: Bytes,
    ) -> Result<Digest, Error> {
        // No default tag: a repository alone pushes by digest.
        let reference = Reference::parse_name_only(reference)?;
        if media_type.is_empty() {
            return Err(Error::InvalidRequest(
                "the manifest to push has no media type".into(),
            ));
        }
        self.client(reference.domain())?
            .push_manifest(&reference, media_type, manifest)
            .await
    }

    /// Checks the credentials against `registry` and, when they work, stores them and drops
    /// the tokens obtained without them. Returns what to tell the user.
    pub async fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<String, Error> {
        let host = login_host(registry)?;
        if username.is_empty() || password.is_empty() {
            return Err(Error::InvalidRequest(
                "a login needs a user name and a password".into(),
            ));
        }
        if username.contains(':') {
            return Err(Error::InvalidRequest(
                "a user name cannot contain ':'".into(),
            ));
        }
        let credential = Credential {
            username: username.to_string(),
            password: password.to_string(),
        };
        // A client of its own: the check must not use or leave cached tokens.
        let client =
            RegistryClient::new(&host, &self.config, &self.http, self.credentials.clone())?;
        let check = client.check_login(&credential).await?;
        self.credentials.store(&host, &credential)?;
        self.forget_tokens(&host);
        // The CLI says "Login Succeeded" itself; this is what it should add.
        let mut notes = Vec::new();
        if check == LoginCheck::NotAsked {
            notes.push(format!(
                "{host} does not ask for credentials, so they could not be checked."
            ));
        }
        if let Some(location) = self.credentials.location() {
            notes.push(format!(
                "WARNING! Your password is stored unencrypted in {location}."
            ));
        }
        Ok(notes.join("\n"))
    }

    /// Forgets the credentials of `registry`; `false` when there were none.
    pub fn logout(&self, registry: &str) -> Result<bool, Error> {
        let host = login_host(registry)?;
        let removed = self.credentials.erase(&host)?;
        self.forget_tokens(&host);
        Ok(removed)
    }

    /// Drops the clients (and so the tokens) that send `login_host`'s credentials.
    fn forget_tokens(&self, login_host: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| !c.answers_to(login_host));
    }
}

fn digest_of(descriptor: &types::Descriptor) -> Result<Digest, Error> {
    if descriptor.digest.is_empty() {
        return Err(Error::InvalidRequest("the descriptor has no digest".into()));
    }
    Ok(descriptor.digest.parse()?)
}

/// Moves verified chunks to the gRPC stream; the first message carries the total.
async fn pump(fetched: Fetched, tx: tokio::sync::mpsc::Sender<Result<FetchResponse, Status>>) {
    use futures::FutureExt as _;
    let mut total = fetched.total.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let mut stream = fetched.stream;
    let mut sent: u64 = 0;
    let mut pending: Vec<u8> = Vec::with_capacity(MAX_CHUNK);
    let mut ended = false;
    while !ended {
        // Wait for bytes, then take whatever else is ready at once (up to a message's worth):
        // small reads from the network become fewer, larger messages, without delaying any.
        let mut item = stream.next().await;
        loop {
            match item {
                None => {
                    ended = true;
                    break;
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(fail(e))).await;
                    return;
                }
                Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
            }
            if pending.len() >= MAX_CHUNK {
                break;
            }
            match stream.next().now_or_never() {
                Some(next) => item = next,
                None => break,
            }
        }
        for piece in pending.chunks(MAX_CHUNK) {
            let message = FetchResponse {
                data: piece.to_vec(),
                total: total.take().unwrap_or(0),
            };
            if tx.send(Ok(message)).await.is_err() {
                tracing::debug!(bytes = sent, "the caller went away");
                return;
            }
            sent += piece.len() as u64;
        }
        pending.clear();
    }
    if sent == 0 {
        // Empty content: one message still says so.
        let message = FetchResponse {
            data: Vec::new(),
            total: total.unwrap_or(0),
        };
        let _ = tx.send(Ok(message)).await;
    }
    tracing::info!(bytes = sent, "fetched");
}
