//! The connection to berthd and the errors every command shares.

use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::events::v1::events_client::EventsClient;
use berth_api::images::v1::images_client::ImagesClient;
use berth_api::networks::v1::networks_client::NetworksClient;
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_api::version::v1::version_client::VersionClient;
use berth_api::volumes::v1::volumes_client::VolumesClient;
use std::fmt;
use tonic::transport::Channel;
use tonic::{Code, Status};

#[derive(Debug)]
pub enum Error {
    /// berthd answered with an error.
    Status(Status),
    /// Something on this side: bad flags, unreadable files.
    Local(String),
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error::Status(s)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Local(e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Local(m) => f.write_str(m),
            Error::Status(s) if s.code() == Code::Unavailable && unreachable(s) => {
                let detail = s.message();
                write!(
                    f,
                    "cannot connect to berthd ({detail}); is it running? (see --address)"
                )
            }
            Error::Status(s) if s.code() == Code::Unimplemented => write!(
                f,
                "the daemon at this address does not host this service (Unimplemented): \
                 see `berthd --service` and the [services] addresses of its config"
            ),
            Error::Status(s) if s.message().is_empty() => {
                write!(f, "Error response from daemon: {}", s.code())
            }
            Error::Status(s) => write!(f, "Error response from daemon: {}", s.message()),
        }
    }
}

/// Whether a status says berthd itself could not be reached, rather than berthd answering
/// that something behind it (a registry, another service) is unavailable.
fn unreachable(s: &Status) -> bool {
    std::error::Error::source(s).is_some()
        || s.message().contains("transport error")
        || s.message().contains("error trying to connect")
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Status(s) => berth_core::grpc::exit_code_of(s)
                .map(|c| c as u8)
                .unwrap_or(125),
            Error::Local(_) => 125,
        }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Status(s) if s.code() == Code::NotFound)
    }
}

#[derive(Debug, Clone)]
pub struct Context {
    channel: Channel,
    pub namespace: String,
}

/// TLS for an `https://` address, with Docker's flag names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// For an https:// address: the CA certificate (PEM) that signed berthd's
    #[arg(long, global = true, env = "BERTH_TLS_CACERT", value_name = "FILE")]
    pub tlscacert: Option<std::path::PathBuf>,
    /// For an https:// address: this client's certificate (PEM), for a berthd that requires one
    #[arg(long, global = true, env = "BERTH_TLS_CERT", value_name = "FILE")]
    pub tlscert: Option<std::path::PathBuf>,
    /// For an https:// address: the key of --tlscert (PEM)
    #[arg(long, global = true, env = "BERTH_TLS_KEY", value_name = "FILE")]
    pub tlskey: Option<std::path::PathBuf>,
}

impl Context {
    pub fn new(address: &str, namespace: &str, tls: &TlsArgs) -> Result<Context, Error> {
        use berth_core::grpc::Address;
        berth_core::grpc::validate_namespace(namespace)
            .map_err(|s| Error::Local(s.message().to_string()))?;
        let tls = berth_core::config::ClientTls {
            ca: tls.tlscacert.clone(),
            cert: tls.tlscert.clone(),
            key: tls.tlskey.clone(),
        };
        if tls != Default::default() && matches!(Address::parse(address), Ok(Address::Tcp(_))) {
            return Err(Error::Local(format!(
                "--tlscacert, --tlscert and --tlskey (or BERTH_TLS_*) need an https:// address, \
                 not {address}: berthd serves TLS at https://HOST:PORT"
            )));
        }
        let channel = berth_core::grpc::tls_channel(address, &tls).map_err(Error::Local)?;
        Ok(Context {
            channel,
            namespace: namespace.to_string(),
        })
    }

    pub fn req<T>(&self, m: T) -> tonic::Request<T> {
        berth_core::grpc::request(&self.namespace, m)
    }

    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }
    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }
    pub fn volumes(&self) -> VolumesClient<Channel> {
        VolumesClient::new(self.channel.clone())
    }
    pub fn networks(&self) -> NetworksClient<Channel> {
        NetworksClient::new(self.channel.clone())
    }
    pub fn registry(&self) -> berth_api::registry::v1::registry_client::RegistryClient<Channel> {
        berth_api::registry::v1::registry_client::RegistryClient::new(self.channel.clone())
    }
    pub fn build(&self) -> berth_api::build::v1::build_client::BuildClient<Channel> {
        berth_api::build::v1::build_client::BuildClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }
    pub fn version(&self) -> VersionClient<Channel> {
        VersionClient::new(self.channel.clone())
    }
    pub fn namespaces(
        &self,
    ) -> berth_api::namespaces::v1::namespaces_client::NamespacesClient<Channel> {
        berth_api::namespaces::v1::namespaces_client::NamespacesClient::new(self.channel.clone())
    }
    pub fn leases(&self) -> berth_api::leases::v1::leases_client::LeasesClient<Channel> {
        berth_api::leases::v1::leases_client::LeasesClient::new(self.channel.clone())
    }
    pub fn snapshots(
        &self,
    ) -> berth_api::snapshots::v1::snapshots_client::SnapshotsClient<Channel> {
        berth_api::snapshots::v1::snapshots_client::SnapshotsClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }
    pub fn content(&self) -> berth_api::content::v1::content_client::ContentClient<Channel> {
        berth_api::content::v1::content_client::ContentClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }
}
