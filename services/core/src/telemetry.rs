//! Logging and tracing: a `tracing` subscriber writing to stderr, plus OTLP span export when
//! an endpoint is configured. W3C trace context is the propagation format either way.

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber. `BERTH_LOG` (or `RUST_LOG`) filters the log on stderr,
/// default `info` (`debug` with `debug = true`). It does not filter the spans sent to OTLP
/// (`info` and up, `debug` too with `debug = true`): quieter logs must not switch tracing off,
/// nor the trace context that goes along with calls to other services.
pub fn init(service: &str, otlp_endpoint: Option<&str>, debug: bool) -> Result<Telemetry, String> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("BERTH_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(fmt);
    match otlp_endpoint {
        None => {
            registry.try_init().map_err(|e| e.to_string())?;
            Ok(Telemetry::default())
        }
        Some(ep) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(ep)
                .build()
                .map_err(|e| format!("cannot set up the OTLP exporter for {ep}: {e}"))?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service.to_string())
                        .build(),
                )
                .build();
            let tracer = provider.tracer("berth");
            let level = if debug {
                LevelFilter::DEBUG
            } else {
                LevelFilter::INFO
            };
            opentelemetry::global::set_tracer_provider(provider.clone());
            registry
                .with(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(level),
                )
                .try_init()
                .map_err(|e| e.to_string())?;
            Ok(Telemetry {
                provider: Some(provider),
            })
        }
    }
}
