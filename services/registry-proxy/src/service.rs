//! The `berth.registry.v1.Registry` gRPC service: a thin shell over [`RegistryService`]'s
//! `resolve` and `fetch`, which in-process callers can use directly.

use crate::cache::{Cache, Want};
use crate::client::{Descriptor, HttpClients, Kind, RegistryClient};
use crate::credentials::CredentialStore;
use crate::error::Error;
use crate::verify::{verified, Expected};
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

    /// The client for a registry host, made on first use.
    pub fn client(&self, host: &str) -> Result<Arc<RegistryClient>, Error> {
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
        let reference = Reference::parse(reference)?;
        let Some(cache) = &self.cache else {
            let descriptor = self.client(reference.domain())?.resolve(&reference).await?;
            return Ok((reference, descriptor));
        };
        if let Some(d) = reference.digest().and_then(|d| cache.manifest(d)) {
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
        let reference = request.into_inner().reference;
        let span = tracing::info_span!("registry.resolve", %namespace, %reference);
        async {
            let (name, descriptor) = RegistryService::resolve(self, &reference)
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
        } = request.into_inner();
        let descriptor = descriptor.unwrap_or_default();
        let span = tracing::info_span!(
            "registry.fetch",
            %namespace,
            %reference,
            digest = %descriptor.digest,
            manifest
        );
        let fetched = RegistryService::fetch(self, &reference, &descriptor, manifest)
            .instrument(span.clone())
            .await
            .map_err(|e| span.in_scope(|| fail(e)))?;

        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(pump(fetched, tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn check_blob(
        &self,
        _request: Request<berth_api::registry::v1::CheckBlobRequest>,
    ) -> Result<Response<berth_api::registry::v1::CheckBlobResponse>, Status> {
        Err(Status::unimplemented("CheckBlob: not yet"))
    }

    async fn push_blob(
        &self,
        _request: Request<tonic::Streaming<berth_api::registry::v1::PushBlobRequest>>,
    ) -> Result<Response<berth_api::registry::v1::PushBlobResponse>, Status> {
        Err(Status::unimplemented("PushBlob: not yet"))
    }

    async fn push_manifest(
        &self,
        _request: Request<berth_api::registry::v1::PushManifestRequest>,
    ) -> Result<Response<berth_api::registry::v1::PushManifestResponse>, Status> {
        Err(Status::unimplemented("PushManifest: not yet"))
    }

    async fn login(
        &self,
        _request: Request<berth_api::registry::v1::LoginRequest>,
    ) -> Result<Response<berth_api::registry::v1::LoginResponse>, Status> {
        Err(Status::unimplemented("Login: not yet"))
    }

    async fn logout(
        &self,
        _request: Request<berth_api::registry::v1::LogoutRequest>,
    ) -> Result<Response<berth_api::registry::v1::LogoutResponse>, Status> {
        Err(Status::unimplemented("Logout: not yet"))
    }
}

/// Moves verified chunks to the gRPC stream; the first message carries the total.
async fn pump(fetched: Fetched, tx: tokio::sync::mpsc::Sender<Result<FetchResponse, Status>>) {
    let mut total = fetched.total.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let mut stream = fetched.stream;
    let mut sent: u64 = 0;
    while let Some(item) = stream.next().await {
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
        };
        for piece in chunk.chunks(MAX_CHUNK) {
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
