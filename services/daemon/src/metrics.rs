//! `[metrics] listen`: the Prometheus metrics of the services this berthd hosts, in the text
//! format at `http://LISTEN/metrics`.
//!
//! Every RPC this berthd serves is counted and timed by method and status code
//! ([`berth_core::metrics::GrpcMetrics`], a layer of the gRPC server); each hosted service adds
//! what it knows (containers by state, bytes pulled and pushed, store sizes, garbage
//! collections) as a collector that is read at each scrape. In a split deployment each berthd
//! serves the metrics of its own services.

use anyhow::{Context as _, Result};
use berth_core::config::MetricsConfig;
use berth_core::metrics::{GrpcMetrics, GrpcMetricsLayer};
use prometheus_client::collector::Collector;
use prometheus_client::registry::Registry;
use prost::Message as _;
use std::net::SocketAddr;
use std::sync::Arc;

/// The metrics of this berthd: nothing is recorded or served when `[metrics]` has no `listen`.
#[derive(Debug)]
pub struct Metrics {
    /// Where to serve; `None`: metrics are off.
    addr: Option<SocketAddr>,
    registry: Registry,
    grpc: Option<Arc<GrpcMetrics>>,
}

/// Every method berthd can serve (`/pkg.Service/Method`), from the descriptors it serves for
/// reflection: the label values of the RPC metrics. Any other path counts as `unknown`.
fn methods() -> Vec<String> {
    let sets = [
        berth_api::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut out = Vec::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    out.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    out
}

impl Metrics {
    /// Checks `[metrics]` (an address that does not parse, or beyond loopback without
    /// `allow_remote`, is an error, before any service starts).
    pub fn new(config: &MetricsConfig) -> Result<Metrics> {
        let addr = config.address().map_err(anyhow::Error::msg)?;
        let mut registry = Registry::default();
        let grpc = addr.map(|_| GrpcMetrics::new(methods(), &mut registry));
        Ok(Metrics {
            addr,
            registry,
            grpc,
        })
    }

    /// The layer that counts the RPCs of a gRPC server (passes them through when off).
    pub fn layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer::new(self.grpc.clone())
    }

    /// Adds a hosted service's collector.
    pub fn register(&mut self, collector: impl Collector) {
        if self.addr.is_some() {
            self.registry.register_collector(Box::new(collector));
        }
    }

    /// Serves `/metrics` in the background, once every service is registered. The address
    /// is bound now, so one that is taken stops berthd's start.
    pub fn serve(self) -> Result<()> {
        let Some(addr) = self.addr else {
            return Ok(());
        };
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot serve metrics on {addr} ([metrics] listen)"))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let registry = Arc::new(self.registry);
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(scrape))
            .with_state(registry);
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
        Ok(())
    }
}

/// `GET /metrics`: the registry in the text format. Collectors read stores and folders, so on
/// a blocking thread.
async fn scrape(
    axum::extract::State(registry): axum::extract::State<Arc<Registry>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::task::spawn_blocking(move || berth_core::metrics::encode(&registry)).await {
        Ok(Ok(text)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                berth_core::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        _ => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_is_known() {
        let m = methods();
        for path in [
            "/berth.images.v1.Images/Pull",
            "/berth.tasks.v1.Tasks/Start",
            "/berth.snapshots.v1.Snapshots/Prepare",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(m.iter().any(|p| p == path), "{path} not in {m:?}");
        }
    }

    #[test]
    fn off_unless_listen_is_set() {
        let mut off = Metrics::new(&MetricsConfig::default()).unwrap();
        assert!(off.grpc.is_none());
        off.register(Nothing);
        let text = berth_core::metrics::encode(&off.registry).unwrap();
        assert!(text.is_empty(), "nothing registered: {text}");
        let remote = MetricsConfig {
            listen: Some("0.0.0.0:9323".into()),
            allow_remote: false,
        };
        assert!(Metrics::new(&remote).is_err());
    }

    #[derive(Debug)]
    struct Nothing;
    impl Collector for Nothing {
        fn encode(
            &self,
            _: prometheus_client::encoding::DescriptorEncoder,
        ) -> std::result::Result<(), std::fmt::Error> {
            Ok(())
        }
    }
}
