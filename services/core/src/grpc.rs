//! Plumbing every gRPC server and client of berth shares: addresses, TLS, the namespace
//! carried in metadata, and W3C trace context propagation.
//!
//! TLS is rustls through tonic's `tls-ring` feature. An `https://host:port` address is
//! reached over TLS, verified with a CA given by the caller ([`ClientTls`]: `[tls] ca` of
//! the config, the CLI's `--tlscacert`); no system roots are loaded, since a berthd's
//! certificate comes from a CA its operator runs, not a public one.

use crate::config::{ClientTls, ServerTls};
use opentelemetry::propagation::{Extractor, Injector};
use std::path::Path;
use std::time::Duration;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig, Uri,
};
use tonic::{Request, Status};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The metadata key that carries the namespace. A request without it works in `default`.
pub const NAMESPACE_KEY: &str = "berth-namespace";
pub const DEFAULT_NAMESPACE: &str = "default";
/// Metadata on an error status: the exit code a CLI should use (126, 127).
pub const EXIT_CODE_KEY: &str = "berth-exit-code";

/// Checks a namespace name: `[a-z0-9]([a-z0-9._-]*[a-z0-9])?`, at most 76 characters.
pub fn validate_namespace(ns: &str) -> Result<(), Status> {
    let b = ns.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 76
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid namespace {ns:?}: use lowercase letters, digits, '.', '_' and '-'"
        )))
    }
}

/// The namespace a request works in.
pub fn namespace<T>(req: &Request<T>) -> Result<String, Status> {
    match req.metadata().get(NAMESPACE_KEY) {
        None => Ok(DEFAULT_NAMESPACE.to_string()),
        Some(v) => {
            let ns = v
                .to_str()
                .map_err(|_| Status::invalid_argument("namespace metadata is not text"))?;
            validate_namespace(ns)?;
            Ok(ns.to_string())
        }
    }
}

/// Builds an outgoing request in `namespace`, carrying the current span's trace context.
pub fn request<T>(namespace: &str, message: T) -> Request<T> {
    let mut req = Request::new(message);
    if let Ok(v) = MetadataValue::try_from(namespace) {
        req.metadata_mut().insert(NAMESPACE_KEY, v);
    }
    inject_trace_context(req.metadata_mut());
    req
}

/// Writes the current span's context as `traceparent` into metadata: the current `tracing`
/// span's, or OpenTelemetry's current context (the CLI's command span).
pub fn inject_trace_context(md: &mut MetadataMap) {
    let cx = crate::telemetry::current_context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(md))
    });
}

/// A span for one incoming RPC, child of the caller's trace when `traceparent` came along.
/// Used as the server's `trace_fn`.
pub fn server_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path();
    let span = tracing::info_span!(
        "rpc",
        otel.name = %path.trim_start_matches('/'),
        rpc.method = %path,
        otel.kind = "server"
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A parsed service address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(std::path::PathBuf),
    /// Plain HTTP/2 over TCP: `host:port`.
    Tcp(String),
    /// HTTP/2 over TLS: `host:port`.
    Tls(String),
}

impl Address {
    /// `unix:///path`, `/path`, `tcp://host:port`, `http://host:port`, `https://host:port`
    /// (TLS).
    pub fn parse(s: &str) -> Result<Address, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            Ok(Address::Unix(p.into()))
        } else if s.starts_with('/') {
            Ok(Address::Unix(s.into()))
        } else if let Some(h) = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
        {
            Ok(Address::Tcp(h.to_string()))
        } else if let Some(h) = s.strip_prefix("https://") {
            Ok(Address::Tls(h.to_string()))
        } else {
            Err(format!(
                "invalid address {s:?}: use unix:///path/to/socket, tcp://host:port or https://host:port (TLS)"
            ))
        }
    }
}

/// A channel to a service address that connects on first use (and reconnects), so services
/// that start together need not wait for each other. An `https://` address needs
/// [`tls_channel`].
pub fn channel(address: &str) -> Result<Channel, String> {
    tls_channel(address, &ClientTls::default())
}

/// [`channel`], with the CA and client certificate that an `https://` address is reached
/// with (unused for the other kinds). Files are read and checked now, so a bad one is an
/// error here rather than at the first call.
pub fn tls_channel(address: &str, tls: &ClientTls) -> Result<Channel, String> {
    let endpoint = |uri: String| {
        Endpoint::from_shared(uri)
            .map_err(|e| format!("invalid address {address:?}: {e}"))
            .map(|e| e.connect_timeout(Duration::from_secs(5)))
    };
    match Address::parse(address)? {
        Address::Tcp(h) => Ok(endpoint(format!("http://{h}"))?.connect_lazy()),
        Address::Tls(h) => {
            let ca = tls.ca.as_deref().ok_or_else(|| {
                format!(
                    "{address}: TLS needs the CA that signed the server's certificate \
                     (berth --tlscacert or BERTH_TLS_CACERT; [tls] ca in berthd's config)"
                )
            })?;
            let identity = match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => {
                    return Err(
                        "a client certificate and its key go together: give both or neither".into(),
                    )
                }
            };
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem(ca)?));
            if let Some((cert, key)) = identity {
                config = config.identity(Identity::from_pem(pem(cert)?, pem(key)?));
            }
            Ok(endpoint(format!("https://{h}"))?
                .tls_config(config)
                .map_err(|e| format!("TLS for {address}: {e}"))?
                .connect_lazy())
        }
        Address::Unix(path) => Ok(endpoint("http://berth.local".into())?
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(&path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))),
    }
}

/// A channel to services of this same process over in-memory pipes, and the pipes' server
/// ends for `serve_with_incoming`. berthd's own clients use it for the services it hosts when
/// its listener serves TLS, which they could verify only with a certificate for every name
/// berthd can be reached at.
pub fn in_process() -> (
    Channel,
    tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let channel = Endpoint::from_static("http://berth.local").connect_with_connector_lazy(
        tower::service_fn(move |_: Uri| {
            let (client, server) = tokio::io::duplex(64 << 10);
            let sent = tx.send(server);
            async move {
                sent.map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "berthd is stopping")
                })?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
            }
        }),
    );
    (channel, rx)
}

/// The TLS of a server: its certificate and key, and the CA client certificates must chain
/// to when one is set (mutual TLS).
pub fn server_tls(tls: &ServerTls) -> Result<ServerTlsConfig, String> {
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(pem(&tls.cert)?, pem(&tls.key)?));
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(pem(ca)?));
    }
    Ok(config.timeout(Duration::from_secs(10)))
}

/// A PEM file's bytes, refused when it holds no PEM block.
fn pem(path: &Path) -> Result<Vec<u8>, String> {
    let b = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !b.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{} is not a PEM file", path.display()));
    }
    Ok(b)
}

/// An error status that carries the exit code a CLI should end with.
pub fn status_with_exit_code(
    code: tonic::Code,
    message: impl Into<String>,
    exit_code: i32,
) -> Status {
    let mut md = MetadataMap::new();
    if let Ok(v) = MetadataValue::try_from(exit_code.to_string()) {
        md.insert(EXIT_CODE_KEY, v);
    }
    Status::with_metadata(code, message, md)
}

/// The exit code an error status asks for, if any.
pub fn exit_code_of(status: &Status) -> Option<i32> {
    status
        .metadata()
        .get(EXIT_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(validate_namespace("default").is_ok());
        assert!(validate_namespace("k8s.io").is_ok());
        assert!(validate_namespace("").is_err());
        assert!(validate_namespace("Bad").is_err());
        assert!(validate_namespace("../x").is_err());
        let req = request("team-a", ());
        assert_eq!(namespace(&req).unwrap(), "team-a");
        assert_eq!(namespace(&Request::new(())).unwrap(), "default");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("unix:///run/b.sock"),
            Ok(Address::Unix("/run/b.sock".into()))
        );
        assert_eq!(
            Address::parse("tcp://127.0.0.1:1"),
            Ok(Address::Tcp("127.0.0.1:1".into()))
        );
        assert_eq!(
            Address::parse("https://10.0.0.2:7000"),
            Ok(Address::Tls("10.0.0.2:7000".into()))
        );
        assert!(Address::parse("ftp://x").is_err());
    }

    #[test]
    fn tls_needs_a_ca_and_whole_pairs() {
        let e = channel("https://10.0.0.2:7000").unwrap_err();
        assert!(e.contains("--tlscacert") && e.contains("[tls] ca"), "{e}");
        let dir = std::env::temp_dir().join(format!("berth-grpc-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let tls = ClientTls {
            ca: Some(not_pem.clone()),
            ..ClientTls::default()
        };
        let e = tls_channel("https://10.0.0.2:7000", &tls).unwrap_err();
        assert!(e.contains("not a PEM file"), "{e}");
        let tls = ClientTls {
            ca: Some(dir.join("missing.pem")),
            ..ClientTls::default()
        };
        let e = tls_channel("https://10.0.0.2:7000", &tls).unwrap_err();
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );
        let tls = ClientTls {
            ca: Some(not_pem),
            cert: Some(dir.join("c.pem")),
            key: None,
        };
        let e = tls_channel("https://10.0.0.2:7000", &tls).unwrap_err();
        assert!(e.contains("go together"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exit_codes_travel_in_metadata() {
        let s = status_with_exit_code(tonic::Code::NotFound, "no", 127);
        assert_eq!(exit_code_of(&s), Some(127));
        assert_eq!(exit_code_of(&Status::internal("x")), None);
    }
}
