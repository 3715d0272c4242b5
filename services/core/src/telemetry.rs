//! Logging and tracing: a `tracing` subscriber writing to stderr, plus OTLP span export when
//! an endpoint is configured. W3C trace context is the propagation format either way.
//!
//! Three kinds of programs export spans, each its own way:
//! - berthd ([`init`]): every RPC runs in a `tracing` span, bridged to OpenTelemetry and sent
//!   in batches.
//! - the CLI ([`client_provider`]): one span per command, exported when it ends, over a
//!   connection driven by a thread of its own so that a flush works from any thread, also
//!   after the command's async runtime has stopped or from an `atexit` hook.
//! - the shim, which exports nothing itself (it stays small, without an exporter or an async
//!   runtime): it times its work and hands the timings back to the runtime service, which
//!   exports them under the shim's own service name with [`export_recorded`].

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
            let others = std::mem::take(&mut *lock(&RECORDED.providers));
            for (_, p) in others {
                let _ = p.shutdown();
            }
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
            let provider = batch_provider(service, ep)?;
            let _ = RECORDED.endpoint.set(ep.to_string());
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

/// The resource of `service`'s spans: its name, and this process's id so that the processes
/// of a split deployment (several berthds) can be told apart.
fn resource(service: &str, pid: Option<u32>) -> opentelemetry_sdk::Resource {
    let b = opentelemetry_sdk::Resource::builder().with_service_name(service.to_string());
    match pid {
        Some(pid) => b
            .with_attribute(opentelemetry::KeyValue::new("process.pid", i64::from(pid)))
            .build(),
        None => b.build(),
    }
}

/// A provider that sends spans in batches (every 5 s, and when it shuts down); must be built
/// inside a tokio runtime, which then drives its connection.
fn batch_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter for {endpoint}: {e}"))?;
    let pid = (service != SHIM_SERVICE).then(std::process::id);
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service, pid))
        .build())
}

/// A provider for a short-lived client such as the CLI: each span is exported when it ends
/// (the CLI has one, its command), bounded by `timeout` when the endpoint does not answer.
/// The OTLP connection lives on a thread of its own with its own small runtime, so ending a
/// span and [`SdkTracerProvider::shutdown`] work from any thread that is not inside a tokio
/// runtime — call them from a fresh thread when unsure (the exporter's retry backoff sleeps
/// with tokio's timer when it finds one). Nothing starts before this is called.
pub fn client_provider(
    service: &str,
    endpoint: &str,
    timeout: Duration,
) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let ep = endpoint.to_string();
    std::thread::Builder::new()
        .name("otlp".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start the OTLP exporter: {e}")));
                    return;
                }
            };
            let exporter = rt.block_on(async {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(ep.clone())
                    .with_timeout(timeout)
                    .build()
                    .map_err(|e| format!("cannot set up the OTLP exporter for {ep}: {e}"))
            });
            let built = exporter.is_ok();
            let _ = tx.send(exporter);
            if built {
                // Drives the exporter's connection for as long as the process lives.
                rt.block_on(std::future::pending::<()>());
            }
        })
        .map_err(|e| format!("cannot start the OTLP exporter: {e}"))?;
    let exporter = rx
        .recv()
        .map_err(|_| "the OTLP exporter's thread ended".to_string())??;
    Ok(SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(resource(service, Some(std::process::id())))
        .build())
}

/// The trace context to pass on: the current `tracing` span's when it has one (berthd), else
/// OpenTelemetry's current context (the CLI, which attaches its command's span without a
/// `tracing` subscriber).
pub fn current_context() -> opentelemetry::Context {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        opentelemetry::Context::current()
    }
}

/// The W3C `traceparent` of the current span ([`current_context`]), when there is a trace to
/// continue: what a program that is not reached over gRPC (the shim) is given.
pub fn current_traceparent() -> Option<String> {
    let mut fields = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&current_context(), &mut fields)
    });
    fields.remove("traceparent")
}

/// The service name of the spans the runtime exports for its shims.
pub const SHIM_SERVICE: &str = "berth-shim";

/// A span that another program timed and handed over to be exported (see [`export_recorded`]).
#[derive(Debug, Clone)]
pub struct Recorded<'a> {
    pub name: &'a str,
    /// The W3C `traceparent` of its parent: the span's trace and where it hangs.
    pub parent: &'a str,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Set when the work failed: the span's status is then an error with this message.
    pub error: Option<&'a str>,
    pub attributes: Vec<opentelemetry::KeyValue>,
}

/// Where spans of other programs go: the endpoint of [`init`], and one provider per service
/// name, made on first use.
struct RecordedExport {
    endpoint: OnceLock<String>,
    providers: Mutex<Vec<(&'static str, SdkTracerProvider)>>,
}

static RECORDED: RecordedExport = RecordedExport {
    endpoint: OnceLock::new(),
    providers: Mutex::new(Vec::new()),
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Exports a span that `service` (a program without an exporter of its own: the shim)
/// recorded, as a child of its `parent`, with its own times. Nothing happens when this process
/// exports no spans ([`init`] without an endpoint) or when `parent` is not a sampled trace
/// context. Call it inside a tokio runtime (the exporter is made on first use).
pub fn export_recorded(service: &'static str, span: Recorded<'_>) {
    let Some(endpoint) = RECORDED.endpoint.get() else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), span.parent.to_string())]);
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let provider = {
        let mut providers = lock(&RECORDED.providers);
        match providers.iter().find(|(s, _)| *s == service) {
            Some((_, p)) => p.clone(),
            None => match batch_provider(service, endpoint) {
                Ok(p) => {
                    providers.push((service, p.clone()));
                    p
                }
                Err(e) => {
                    tracing::warn!(%service, error = %e, "cannot export its spans");
                    return;
                }
            },
        }
    };
    let tracer = provider.tracer("berth");
    let mut s = tracer
        .span_builder(span.name.to_string())
        .with_start_time(span.start)
        .with_attributes(span.attributes)
        .start_with_context(&tracer, &parent);
    if let Some(e) = span.error {
        s.set_status(opentelemetry::trace::Status::error(e.to_string()));
    }
    s.end_with_timestamp(span.end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_trace_no_traceparent() {
        // No subscriber, no attached context: nothing to continue, nothing to send.
        assert_eq!(current_traceparent(), None);
    }

    #[test]
    fn an_attached_context_is_passed_on() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let span = tracer.start("command");
        let sc = span.span_context().clone();
        let _attached = opentelemetry::Context::current_with_span(span).attach();
        let tp = current_traceparent().expect("a traceparent for the attached span");
        assert_eq!(
            tp,
            format!("00-{}-{}-01", sc.trace_id(), sc.span_id()),
            "W3C traceparent of the attached span"
        );
    }
}
