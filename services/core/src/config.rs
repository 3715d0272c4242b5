//! `berthd`'s configuration: `/etc/berth/config.toml` by default.
//!
//! ```toml
//! root = "/var/lib/berth"          # persistent data, one folder per service
//! state = "/run/berth"             # volatile state: sockets, bundles
//! snapshotter = "overlayfs"        # or "native" (copies; works where overlay does not)
//!
//! [registries."registry.example.com:5000"]
//! insecure = true                  # plain HTTP, or HTTPS without verification
//! mirrors = ["http://127.0.0.1:5001"]
//!
//! [telemetry]
//! otlp_endpoint = "http://127.0.0.1:4317"
//!
//! [metrics]                         # Prometheus text format at /metrics; off without `listen`
//! listen = "127.0.0.1:9323"         # ":9323" is loopback too; beyond it needs allow_remote
//! allow_remote = false              # see [`MetricsConfig`]
//!
//! [gateway]                         # the Docker Engine API (1.41); off without `socket`
//! socket = "/run/berth/docker.sock"  # DOCKER_HOST=unix:///run/berth/docker.sock
//! group = "docker"                   # optional: mode 0660 root:docker (else 0600, root only)
//!
//! [cri]                             # the Kubernetes CRI (runtime.v1); off without `socket`
//! socket = "/run/berth/cri.sock"     # kubelet --container-runtime-endpoint unix:///run/berth/cri.sock
//! cni_conf_dir = "/etc/cni/net.d"    # see [`CriConfig`]
//! cni_bin_dir = "/usr/lib/cni"
//!
//! [services]                        # where each service is reached; default: berthd's own socket
//! image = "unix:///run/berth/berth.sock"
//! snapshot = "tcp://10.0.0.2:7000"
//!
//! [registry_proxy]                  # the distribution API over HTTP; off without `listen`
//! listen = "127.0.0.1:5000"
//! htpasswd = "/etc/berth/registry.htpasswd"   # bcrypt entries; Basic auth on every request
//!
//! [limits]                          # per layer, build context or ADD archive; see [`Limits`]
//! max_unpacked_size = 274877906944  # bytes of file data (256 GiB)
//! max_entries = 4000000
//! max_download_size = 17179869184   # ADD https://… (16 GiB)
//! download_timeout = 3600           # seconds, per ADD https://…
//!
//! [tls]                             # gRPC over TLS; see [`TlsConfig`]
//! cert = "/etc/berth/tls/server.pem"          # with key: every tcp:// listener serves TLS
//! key = "/etc/berth/tls/server-key.pem"
//! client_ca = "/etc/berth/tls/ca.pem"         # clients need a certificate it signed (mutual TLS)
//! ca = "/etc/berth/tls/ca.pem"                # trusted for the https:// addresses of [services]
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_STATE: &str = "/run/berth";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_root")]
    pub root: PathBuf,
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// Where berthd listens; default `unix://<state>/berth.sock`.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default = "default_snapshotter")]
    pub snapshotter: String,
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub services: ServiceAddresses,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub registry_proxy: RegistryProxyConfig,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub cri: CriConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub mirrors: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub otlp_endpoint: Option<String>,
}

/// `[metrics]`: Prometheus metrics of the services this berthd hosts, in the text format at
/// `http://LISTEN/metrics`. Off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `HOST:PORT` (an IP address, or `localhost`), or `:PORT` / `PORT` for 127.0.0.1:PORT.
    pub listen: Option<String>,
    /// Serve beyond loopback. The metrics need no credentials and tell what runs on the host
    /// (container counts, image traffic, every RPC), so an address other than loopback is
    /// refused at start without this.
    #[serde(default)]
    pub allow_remote: bool,
}

impl MetricsConfig {
    /// Where to serve the metrics: `None` when off; an error for an address that does not
    /// parse, or that is beyond loopback without `allow_remote`.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let Some(listen) = self.listen.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let port_only = listen.strip_prefix(':').unwrap_or(listen);
        let addr: std::net::SocketAddr = if let Ok(port) = port_only.parse::<u16>() {
            (std::net::Ipv4Addr::LOCALHOST, port).into()
        } else if let Some(port) = listen.strip_prefix("localhost:") {
            let port = port.parse::<u16>().map_err(|_| invalid_listen(listen))?;
            (std::net::Ipv4Addr::LOCALHOST, port).into()
        } else {
            listen.parse().map_err(|_| invalid_listen(listen))?
        };
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(format!(
                "refusing to serve metrics on {addr} ([metrics] listen): beyond loopback anyone \
                 who reaches it reads what runs on this host, without credentials. Listen on \
                 127.0.0.1 (and scrape through a tunnel or a local agent), or set \
                 [metrics] allow_remote = true if every host that can reach {addr} is trusted"
            ));
        }
        Ok(Some(addr))
    }
}

fn invalid_listen(listen: &str) -> String {
    format!(
        "invalid [metrics] listen {listen:?}: use IP:PORT (127.0.0.1:9323), localhost:PORT or \
         :PORT (loopback)"
    )
}

/// `[gateway]`: the Docker Engine API (version 1.41) on a unix socket, for the `docker` CLI
/// and other Docker clients. Off unless `socket` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The socket to serve on, e.g. `/run/berth/docker.sock`; a stale file there is replaced,
    /// and the socket is removed when berthd stops.
    pub socket: Option<PathBuf>,
    /// A group whose members may use the socket (like Docker's `docker` group): the socket is
    /// then owned by root:GROUP with mode 0660. Without it: mode 0600, root only. Membership
    /// of this group is as good as root on the host, as with Docker's.
    pub group: Option<String>,
}

/// `[cri]`: the Kubernetes Container Runtime Interface (`runtime.v1`) on a unix socket, for
/// the kubelet, `crictl` and `critest`. Off unless `socket` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriConfig {
    /// The socket to serve on, e.g. `/run/berth/cri.sock` (mode 0600, root only); a stale file
    /// there is replaced, and the socket is removed when berthd stops.
    pub socket: Option<PathBuf>,
    /// `IP:PORT` of the streaming server for Exec, Attach and PortForward; default
    /// `127.0.0.1:0` (loopback, a port the kernel picks: the URLs those RPCs answer name it).
    pub stream_address: Option<String>,
    /// The CNI network configurations of pods; default `/etc/cni/net.d`. The CRI's Status
    /// reports NetworkReady only when it holds a usable one.
    pub cni_conf_dir: Option<PathBuf>,
    /// Where the CNI plugins are; default `/usr/lib/cni` (Debian's), then `/opt/cni/bin`.
    pub cni_bin_dir: Option<PathBuf>,
    /// The image of the pods' sandboxes (a pause image), for the sandbox slice of the CRI.
    pub sandbox_image: Option<String>,
}

/// The registry-proxy serving its own store as a registry over HTTP (the distribution API),
/// and as a pull-through mirror for clients that send `?ns=REGISTRY`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryProxyConfig {
    /// `HOST:PORT` to listen on, e.g. `127.0.0.1:5000`; nothing is served when absent.
    pub listen: Option<String>,
    /// An htpasswd file of bcrypt entries (`user:$2y$…`, as `htpasswd -B` writes them). When
    /// set, every request needs HTTP Basic credentials that match an entry.
    pub htpasswd: Option<PathBuf>,
    /// The realm of the `WWW-Authenticate: Basic` challenge; default `berth`.
    pub realm: Option<String>,
    /// Keep what the registry service fetches in its pull-through cache, so that other
    /// berthds using this one's registry service (`[services] registry`) are served from it.
    /// Always on with `listen` (the HTTP registry and mirror mode serve from the cache); off
    /// by default without it, since this berthd's own image store already keeps every blob.
    pub cache: Option<bool>,
    /// The registries this proxy mirrors for clients that send `?ns=REGISTRY` (e.g.
    /// `["docker.io", "registry.example.com:5000"]`). Absent: any registry when `listen` is a
    /// loopback address, none beyond loopback (an open mirror would fetch from anywhere the
    /// proxy can reach, with the credentials berthd holds).
    pub mirror_of: Option<Vec<String>>,
    /// Blob uploads (push sessions) open at once; past it a new one is refused with `429`.
    /// Default 1000.
    pub max_uploads: Option<usize>,
    /// Bytes one blob upload may hold; past it the request is refused with `413`. Default
    /// 64 GiB.
    pub max_upload_size: Option<u64>,
    /// Seconds an upload may sit without a byte arriving before it is removed (checked while
    /// serving). Default 3600.
    pub upload_expiry: Option<u64>,
}

impl RegistryProxyConfig {
    /// Whether the registry service keeps a pull-through cache.
    pub fn caches(&self) -> bool {
        self.listen.is_some() || self.cache.unwrap_or(false)
    }

    /// `max_uploads`, or its default.
    pub fn max_uploads(&self) -> usize {
        self.max_uploads.unwrap_or(1000)
    }

    /// `max_upload_size`, or its default.
    pub fn max_upload_size(&self) -> u64 {
        self.max_upload_size.unwrap_or(64 << 30)
    }

    /// `upload_expiry`, or its default.
    pub fn upload_expiry(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.upload_expiry.unwrap_or(3600))
    }
}

/// Addresses of the services for the clients inside berthd (`unix://PATH` or `tcp://HOST:PORT`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAddresses {
    pub image: Option<String>,
    pub snapshot: Option<String>,
    pub runtime: Option<String>,
    pub registry: Option<String>,
    pub events: Option<String>,
    /// The build service (no service calls it; accepted so that one config can describe
    /// where every service of a split deployment runs).
    pub build: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The shim binary; default: `berth-shim` beside the running berthd, then $PATH.
    #[serde(default)]
    pub shim: Option<PathBuf>,
    /// container.log rotates at this size.
    #[serde(default = "default_log_max")]
    pub log_max_size: u64,
    /// The Linux bridge of the default network; `berth0` for the default root, a name
    /// derived from the root otherwise (so two instances never share one).
    #[serde(default)]
    pub bridge: Option<String>,
    /// The default network's subnet (`a.b.c.d/n`); a free /24 of 10.77.0.0/16 otherwise.
    #[serde(default)]
    pub bridge_subnet: Option<String>,
    /// Where the CNI plugins are; default `/usr/lib/cni`, then `/opt/cni/bin`.
    #[serde(default)]
    pub cni_plugin_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shim: None,
            log_max_size: default_log_max(),
            bridge: None,
            bridge_subnet: None,
            cni_plugin_dir: None,
        }
    }
}

/// `[limits]`: how much one archive may make berthd unpack or fetch. An image layer, a build
/// context and an archive that `ADD` unpacks each stop with an error past these, before they
/// can fill the disk; the defaults are far above any real image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of file data one archive may unpack (holes of sparse files not counted).
    pub max_unpacked_size: u64,
    /// Entries (files, folders, links…) one archive may hold.
    pub max_entries: u64,
    /// Bytes an `ADD https://…` may download.
    pub max_download_size: u64,
    /// Seconds an `ADD https://…` download may take in all.
    pub download_timeout: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unpacked_size: 256 << 30,
            max_entries: 4_000_000,
            max_download_size: 16 << 30,
            download_timeout: 3600,
        }
    }
}

/// `[tls]`: TLS for berthd's gRPC API and for the services berthd reaches at `https://`
/// addresses. Paths of PEM files. A unix socket never uses TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// berthd's certificate (chain, leaf first). With `key`, a `tcp://` listener serves TLS
    /// and nothing else, loopback or not.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// The CA(s) a client's certificate must chain to: mutual TLS. Without it any client that
    /// reaches the port is served, so berthd refuses to listen beyond loopback without it
    /// unless `--insecure-tcp` (TLS alone hides the traffic but lets anyone run containers).
    pub client_ca: Option<PathBuf>,
    /// The CA(s) berthd trusts for the services it reaches at `https://` addresses.
    pub ca: Option<PathBuf>,
    /// The certificate berthd presents to `https://` services that ask for one; default
    /// `cert` (which then needs the clientAuth usage, or none).
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert`; default `key`.
    pub client_key: Option<PathBuf>,
}

/// A TLS server's files, checked to belong together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// A TLS client's files: the CA it verifies the server with, and its own certificate and key
/// for servers that require one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// What berthd serves TLS with: `None` without `cert` and `key`; an error when only
    /// one of them, or `client_ca` without them, is set.
    pub fn server(&self) -> Result<Option<ServerTls>, String> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
            })),
            (None, None) if self.client_ca.is_some() => {
                Err("[tls] client_ca needs the server's cert and key".into())
            }
            (None, None) => Ok(None),
            _ => Err("[tls] cert and key go together: set both or neither".into()),
        }
    }

    /// What berthd's own clients use for `https://` service addresses.
    pub fn client(&self) -> ClientTls {
        let (cert, key) = match (&self.client_cert, &self.client_key) {
            (None, None) => (self.cert.clone(), self.key.clone()),
            (c, k) => (c.clone(), k.clone()),
        };
        ClientTls {
            ca: self.ca.clone(),
            cert,
            key,
        }
    }
}

fn default_root() -> PathBuf {
    PathBuf::from(DEFAULT_ROOT)
}
fn default_state() -> PathBuf {
    PathBuf::from(DEFAULT_STATE)
}
fn default_snapshotter() -> String {
    "overlayfs".to_string()
}
fn default_log_max() -> u64 {
    64 << 20
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("the empty config is valid")
    }
}

impl Config {
    /// Loads a config file. A missing default file is an empty config; a missing file that was
    /// asked for is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text).map_err(|e| ConfigError::Parse {
                path,
                source: Box::new(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Where berthd listens.
    pub fn address(&self) -> String {
        self.address
            .clone()
            .unwrap_or_else(|| format!("unix://{}", self.state.join("berth.sock").display()))
    }

    /// The settings of one registry host (`host[:port]`), with Docker's default that loopback
    /// registries are trusted over plain HTTP.
    pub fn registry(&self, host: &str) -> RegistryConfig {
        let mut rc = self.registries.get(host).cloned().unwrap_or_default();
        if is_loopback_host(host) {
            rc.insecure = true;
        }
        rc
    }
}

/// `127.0.0.0/8`, `::1` and `localhost`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    h == "localhost"
        || h.parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let c = Config::parse(
            r#"
root = "/tmp/r"
state = "/tmp/s"
[registries."reg.example:5000"]
insecure = true
mirrors = ["http://m:1"]
[telemetry]
otlp_endpoint = "http://127.0.0.1:4317"
"#,
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        assert_eq!(c.address(), "unix:///tmp/s/berth.sock");
        assert!(c.registry("reg.example:5000").insecure);
        assert_eq!(c.registry("reg.example:5000").mirrors, vec!["http://m:1"]);
        assert!(!c.registry("docker.io").insecure);
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert!(c.registry_proxy.listen.is_none(), "off unless asked for");
    }

    #[test]
    fn cri_is_off_unless_a_socket_is_set() {
        assert_eq!(Config::parse("").unwrap().cri, CriConfig::default());
        let c = Config::parse(
            "[cri]\nsocket = \"/run/c.sock\"\ncni_conf_dir = \"/etc/cni/net.d\"\nstream_address = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        assert_eq!(c.cri.socket, Some(PathBuf::from("/run/c.sock")));
        assert_eq!(c.cri.cni_conf_dir, Some(PathBuf::from("/etc/cni/net.d")));
        assert!(Config::parse("[cri]\nsockt = \"x\"\n").is_err());
    }

    #[test]
    fn gateway_is_off_unless_a_socket_is_set() {
        assert_eq!(Config::parse("").unwrap().gateway, GatewayConfig::default());
        let c = Config::parse("[gateway]\nsocket = \"/run/d.sock\"\ngroup = \"docker\"\n").unwrap();
        assert_eq!(c.gateway.socket, Some(PathBuf::from("/run/d.sock")));
        assert_eq!(c.gateway.group.as_deref(), Some("docker"));
        assert!(Config::parse("[gateway]\nsockt = \"x\"\n").is_err());
    }

    #[test]
    fn registry_proxy_section() {
        let c =
            Config::parse("[registry_proxy]\nlisten = \"127.0.0.1:5000\"\nhtpasswd = \"/etc/h\"\n")
                .unwrap();
        assert_eq!(c.registry_proxy.listen.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(c.registry_proxy.htpasswd, Some(PathBuf::from("/etc/h")));
        assert!(Config::parse("[registry_proxy]\nlistn = \"x\"\n").is_err());
        assert_eq!(c.registry_proxy.max_uploads(), 1000);
        assert_eq!(c.registry_proxy.max_upload_size(), 64 << 30);
        assert_eq!(c.registry_proxy.upload_expiry().as_secs(), 3600);
        let c = Config::parse(
            "[registry_proxy]\nmax_uploads = 2\nmax_upload_size = 10\nupload_expiry = 60\n",
        )
        .unwrap();
        assert_eq!(c.registry_proxy.max_uploads(), 2);
        assert_eq!(c.registry_proxy.max_upload_size(), 10);
        assert_eq!(c.registry_proxy.upload_expiry().as_secs(), 60);
    }

    #[test]
    fn loopback_is_insecure_by_default() {
        let c = Config::default();
        assert!(c.registry("127.0.0.1:5000").insecure);
        assert!(c.registry("127.1.2.3:80").insecure);
        assert!(c.registry("localhost:5000").insecure);
        assert!(c.registry("[::1]:5000").insecure);
        assert!(!c.registry("10.0.0.1:5000").insecure);
    }

    #[test]
    fn limits_have_generous_defaults_and_can_be_set() {
        let c = Config::default();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.max_unpacked_size, 256 << 30);
        let c = Config::parse("[limits]\nmax_entries = 10\n").unwrap();
        assert_eq!(c.limits.max_entries, 10);
        assert_eq!(
            c.limits.max_unpacked_size,
            256 << 30,
            "the rest keep their defaults"
        );
        assert!(Config::parse("[limits]\nmax_entrys = 10\n").is_err());
    }

    #[test]
    fn tls_section() {
        let c = Config::default();
        assert_eq!(c.tls, TlsConfig::default());
        assert_eq!(c.tls.server(), Ok(None), "no TLS unless configured");
        assert_eq!(c.tls.client(), ClientTls::default());

        let c = Config::parse(
            "[tls]\ncert = \"/t/s.pem\"\nkey = \"/t/s.key\"\nclient_ca = \"/t/ca.pem\"\nca = \"/t/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            c.tls.server(),
            Ok(Some(ServerTls {
                cert: "/t/s.pem".into(),
                key: "/t/s.key".into(),
                client_ca: Some("/t/ca.pem".into()),
            }))
        );
        assert_eq!(
            c.tls.client(),
            ClientTls {
                ca: Some("/t/ca.pem".into()),
                cert: Some("/t/s.pem".into()),
                key: Some("/t/s.key".into()),
            },
            "berthd's clients present its own certificate by default"
        );
        let c = Config::parse(
            "[tls]\ncert = \"/t/s.pem\"\nkey = \"/t/s.key\"\nclient_cert = \"/t/c.pem\"\nclient_key = \"/t/c.key\"\n",
        )
        .unwrap();
        assert_eq!(c.tls.server().unwrap().unwrap().client_ca, None);
        assert_eq!(c.tls.client().cert, Some("/t/c.pem".into()));
        assert_eq!(c.tls.client().key, Some("/t/c.key".into()));

        for half in [
            "[tls]\ncert = \"/t/s.pem\"\n",
            "[tls]\nkey = \"/t/s.key\"\n",
            "[tls]\nclient_ca = \"/t/ca.pem\"\n",
        ] {
            let e = Config::parse(half).unwrap().tls.server().unwrap_err();
            assert!(e.contains("[tls]"), "{half}: {e}");
        }
        assert!(Config::parse("[tls]\ncacert = \"/x\"\n").is_err());
    }

    #[test]
    fn metrics_are_off_unless_asked_for_and_loopback_by_default() {
        let addr = |toml: &str| Config::parse(toml).unwrap().metrics.address();
        assert_eq!(addr(""), Ok(None), "off unless set");
        let local = Some("127.0.0.1:9323".parse().unwrap());
        for listen in ["127.0.0.1:9323", ":9323", "9323", "localhost:9323"] {
            assert_eq!(
                addr(&format!("[metrics]\nlisten = \"{listen}\"\n")),
                Ok(local),
                "{listen}"
            );
        }
        assert_eq!(
            addr("[metrics]\nlisten = \"[::1]:9323\"\n"),
            Ok(Some("[::1]:9323".parse().unwrap()))
        );
        for remote in ["0.0.0.0:9323", "10.1.2.3:9323", "[::]:9323"] {
            let e = addr(&format!("[metrics]\nlisten = \"{remote}\"\n")).unwrap_err();
            assert!(e.contains("allow_remote") && e.contains("refusing"), "{e}");
            assert_eq!(
                addr(&format!(
                    "[metrics]\nlisten = \"{remote}\"\nallow_remote = true\n"
                )),
                Ok(Some(remote.parse().unwrap()))
            );
        }
        for bad in ["example.com:9323", "127.0.0.1", "localhost:x", ":99999"] {
            let e = addr(&format!("[metrics]\nlisten = \"{bad}\"\n")).unwrap_err();
            assert!(e.contains("invalid [metrics] listen"), "{bad}: {e}");
        }
        assert!(
            Config::parse("[metrics]\nlisen = \":9323\"\n").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::parse("rooot = \"/x\"").is_err());
    }
}
