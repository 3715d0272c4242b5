//! `--otlp-endpoint URL` (or `BERTH_OTLP_ENDPOINT`): one command, one trace.
//!
//! The command's span (`berth run`, `berth image ls`, …) is the root. It is attached as
//! OpenTelemetry's current context on the main thread, where the CLI's single-threaded runtime
//! polls every request, so `berth_core::grpc::request` puts its `traceparent` on each call;
//! berthd's services, the calls between them and the shims' work become its descendants.
//!
//! Without the flag nothing here runs: no exporter, no thread, no span (`run --rm` is
//! benchmarked). With it, the span is ended and sent before the CLI exits: [`finish`] after
//! the command, and an `atexit` hook for a `std::process::exit` on the way.

use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, ContextGuard, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::Mutex;
use std::time::Duration;

/// How long the CLI waits for the collector before it gives up on sending the trace.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The command's span and its exporter, until [`finish`].
struct Active {
    cx: Context,
    provider: SdkTracerProvider,
}

static ACTIVE: Mutex<Option<Active>> = Mutex::new(None);

/// The command as a person typed it, without flags: `berth image ls`.
fn command_name() -> String {
    use clap::CommandFactory;
    let mut name = "berth".to_string();
    if let Ok(m) = crate::Cli::command().try_get_matches_from(std::env::args_os()) {
        let mut m = &m;
        while let Some((sub, next)) = m.subcommand() {
            name.push(' ');
            name.push_str(sub);
            m = next;
        }
    }
    name
}

/// Starts the command's span and attaches it to this thread until the guard is dropped.
pub fn start(endpoint: &str, namespace: &str) -> Result<ContextGuard, String> {
    let provider = berth_core::telemetry::client_provider("berth", endpoint, EXPORT_TIMEOUT)
        .map_err(|e| format!("--otlp-endpoint: {e}"))?;
    let tracer = provider.tracer("berth");
    let span = tracer
        .span_builder(command_name())
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("berth.namespace", namespace.to_string())])
        .start(&tracer);
    let cx = Context::current_with_span(span);
    *lock() = Some(Active {
        cx: cx.clone(),
        provider,
    });
    // SAFETY: registers a plain extern "C" function without arguments.
    unsafe { libc::atexit(at_exit) };
    Ok(cx.attach())
}

fn lock() -> std::sync::MutexGuard<'static, Option<Active>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends the command's span (with its exit code when known) and sends it, waiting at most
/// [`EXPORT_TIMEOUT`]. Does nothing without a span, or the second time.
pub fn finish(code: Option<u8>) {
    let Some(active) = lock().take() else {
        return;
    };
    // On a thread of its own, outside any tokio runtime: the exporter's retry backoff sleeps
    // on tokio's timer when it finds one, which the command's runtime no longer drives.
    let _ = std::thread::spawn(move || {
        let span = active.cx.span();
        if let Some(code) = code {
            span.set_attribute(KeyValue::new("process.exit.code", i64::from(code)));
            if code != 0 {
                span.set_status(Status::error(format!("exit code {code}")));
            }
        }
        span.end();
        let _ = active.provider.shutdown();
    })
    .join();
}

extern "C" fn at_exit() {
    finish(None);
}
