//! berth-registry-proxy: the one component of berth that talks HTTP to image registries.
//!
//! Other services resolve references and fetch content through its gRPC service,
//! `berth.registry.v1.Registry`; they never hold a registry client themselves.
//!
//! - [`client::RegistryClient`]: the distribution API (`/v2/…`) of one registry host:
//!   [`resolve`](client::RegistryClient::resolve) a reference to its manifest
//!   [`Descriptor`](client::Descriptor) (HEAD, then GET), and
//!   [`fetch`](client::RegistryClient::fetch) a manifest or blob as a stream. It tries the
//!   host's mirrors first, then the registry (plain HTTP or unverified HTTPS for insecure
//!   registries), and answers `401` challenges with Bearer tokens or Basic credentials.
//! - [`push`]: the push side of the same client, always against the registry itself:
//!   [`check_blob`](client::RegistryClient::check_blob) (HEAD, then cross-repository mounts),
//!   [`push_blob`](client::RegistryClient::push_blob) (one PUT, or PATCH chunks then PUT;
//!   the bytes stream through and are verified on the way, and a blob that does not match
//!   its descriptor is never completed) and
//!   [`push_manifest`](client::RegistryClient::push_manifest).
//! - [`login`]: which registry a `berth login` name means, and
//!   [`check_login`](client::RegistryClient::check_login): `GET /v2/` answering its Basic or
//!   Bearer challenge with the credentials.
//! - [`credentials::CredentialStore`]: where credentials come from and where a login keeps
//!   them; today [`credentials::DockerConfig`], Docker's `config.json` (written atomically,
//!   mode 0600, other keys kept).
//! - [`verify`]: checks content against its digest and size while it streams.
//! - [`service::RegistryService`]: one client per host, and the gRPC shell; errors become
//!   status codes a caller can act on ([`error::Error::code`]).
//! - [`cache::Cache`]: the pull-through cache. Manifests and blobs fetched by digest are kept
//!   in a [`blobs::BlobStore`] (`<root>/blobs/sha256/<hex>`, written to `ingest/`, fsynced,
//!   verified, renamed) and served from it next time; concurrent fetches of one digest share
//!   one download, each caller reading the bytes as they land.
//! - [`server`]: the distribution API over HTTP (`[registry_proxy] listen`): a private
//!   registry on the same store, with tags and repositories in [`metadata::Metadata`] (sled),
//!   optional Basic auth, and mirror mode (`?ns=REGISTRY`) through the cache.
//!
//! berthd adds the service to its router:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = berth_core::config::Config::load(None)?;
//! let registry = berth_registry_proxy::serve(&config, &config.root.join("registry-proxy"))?;
//! tonic::transport::Server::builder()
//!     .add_service(registry)
//!     .serve("127.0.0.1:7000".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod blobs;
pub mod cache;
pub mod client;
pub mod credentials;
pub mod error;
pub mod login;
pub mod metadata;
pub mod push;
pub mod server;
pub mod service;
pub mod verify;

pub use berth_api::registry::v1::registry_server::RegistryServer;
pub use client::{Descriptor, Kind, RegistryClient};
pub use credentials::{Credential, CredentialStore, DockerConfig};
pub use error::Error;
pub use service::RegistryService;

use std::path::Path;
use std::sync::Arc;

/// The Registry gRPC service under berthd's config, with credentials from Docker's
/// `config.json` (`$DOCKER_CONFIG`, else `~/.docker`) and, when the config asks for it
/// (`[registry_proxy] listen` or `cache = true`), the pull-through cache in `root` (berthd
/// passes `<root>/registry-proxy`). With `listen` the distribution API is served there too
/// (see [`server`]); call this inside a tokio runtime.
pub fn serve(
    config: &berth_core::config::Config,
    root: &Path,
) -> Result<RegistryServer<RegistryService>, Error> {
    serve_cached(config, root, Arc::new(DockerConfig::from_env()))
}

/// [`serve`] with credentials from `credentials`.
pub fn serve_cached(
    config: &berth_core::config::Config,
    root: &Path,
    credentials: Arc<dyn CredentialStore>,
) -> Result<RegistryServer<RegistryService>, Error> {
    if !config.registry_proxy.caches() {
        return serve_with(config, credentials);
    }
    let store_error = |what: &str, e: &dyn std::fmt::Display| {
        Error::Store(format!("cannot open {what} under {}: {e}", root.display()))
    };
    let blobs =
        Arc::new(blobs::BlobStore::open(root).map_err(|e| store_error("the blob store", &e))?);
    let metadata = metadata::Metadata::open(&root.join("metadata"))
        .map_err(|e| store_error("the metadata database", &e))?;
    let cache = Arc::new(cache::Cache::new(blobs.clone(), metadata.clone()));
    let service = Arc::new(RegistryService::new(config, credentials)?.with_cache(cache));
    let settings = &config.registry_proxy;
    if let Some(listen) = &settings.listen {
        let htpasswd = match &settings.htpasswd {
            Some(path) => Some(server::basic_auth::Htpasswd::load(path).map_err(Error::Store)?),
            None => None,
        };
        use std::net::ToSocketAddrs as _;
        let loopback = listen
            .to_socket_addrs()
            .map(|mut a| a.all(|a| a.ip().is_loopback()))
            .unwrap_or(false);
        let mirror_of = match (&settings.mirror_of, loopback) {
            (Some(list), _) => Some(list.clone()),
            (None, true) => None,
            (None, false) => {
                tracing::warn!(
                    %listen,
                    "mirror mode (?ns=) is off beyond loopback until [registry_proxy] mirror_of names the registries to mirror"
                );
                Some(Vec::new())
            }
        };
        let registry = server::Registry::new(
            blobs,
            metadata,
            service.clone(),
            htpasswd,
            settings.realm.clone(),
        )
        .with_mirror_of(mirror_of)
        .with_upload_limits(server::UploadLimits::of(settings));
        server::spawn(listen, Arc::new(registry))?;
    }
    Ok(RegistryServer::from_arc(service))
}

/// The Registry gRPC service with credentials from `credentials`, without a cache or an HTTP
/// server: every fetch goes upstream.
pub fn serve_with(
    config: &berth_core::config::Config,
    credentials: Arc<dyn CredentialStore>,
) -> Result<RegistryServer<RegistryService>, Error> {
    Ok(RegistryServer::new(RegistryService::new(
        config,
        credentials,
    )?))
}
