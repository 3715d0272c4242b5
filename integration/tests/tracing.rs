//! Tracing end to end: a real berthd exporting over OTLP/gRPC to a collector started by this
//! test, a real registry, a real `berth pull`. Every RPC runs in a server span, the trace
//! context crosses the gRPC hops from the image service to the registry and snapshot services
//! (W3C `traceparent` in metadata), and the spans reach the collector when the daemon stops.

use berth_integration::{or_skip, Berthd, Registry};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

const PULL: &str = "/berth.images.v1.Images/Pull";
const RESOLVE: &str = "/berth.registry.v1.Registry/Resolve";
const FETCH: &str = "/berth.registry.v1.Registry/Fetch";
const APPLY: &str = "/berth.snapshots.v1.Snapshots/Apply";
const IMPORT: &str = "/berth.images.v1.Images/Import";

/// A span as the collector got it, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

/// A minimal OTLP/gRPC trace collector: keeps every span it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
    exports: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let req = req.into_inner();
        let mut spans = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Got {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        *self.exports.lock().unwrap() += 1;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            _ => None,
        }
    })
}

/// The gRPC method a server span is for: its `rpc.method` attribute, or a name like `/pkg.Svc/M`.
fn method(s: &Span) -> Option<String> {
    attr(&s.attributes, "rpc.method").or_else(|| s.name.starts_with('/').then(|| s.name.clone()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn dump(spans: &[Got]) -> String {
    let mut out = String::new();
    for g in spans {
        let s = &g.span;
        let _ = writeln!(
            out,
            "  [{}] {} method={} kind={} trace={} span={} parent={}",
            g.service,
            s.name,
            method(s).unwrap_or_default(),
            s.kind,
            hex(&s.trace_id),
            hex(&s.span_id),
            hex(&s.parent_span_id)
        );
    }
    out
}

/// Starts the collector on 127.0.0.1:<free port> in `rt`; returns its port.
fn start_collector(rt: &tokio::runtime::Runtime, c: Collector) -> u16 {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the collector");
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(c))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("the OTLP collector failed");
    });
    port
}

/// Stops berthd with SIGTERM (its tracer provider shuts down, which flushes the batch
/// exporter), asserts it exited cleanly, and returns the spans the collector has once `done`
/// holds for them (or after 10 s).
fn stop_and_collect(d: &mut Berthd, c: &Collector, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let status = d.stop(Duration::from_secs(30));
    let log = d.log();
    let status = status
        .unwrap_or_else(|| panic!("berthd did not stop within 30s of SIGTERM; its log:\n{log}"));
    assert!(
        status.success(),
        "berthd exited with {status} after SIGTERM; its log:\n{log}"
    );
    // The flush happened before berthd exited; allow the collector a moment to record it.
    let start = Instant::now();
    loop {
        let spans = c.spans.lock().unwrap().clone();
        if done(&spans) || start.elapsed() > Duration::from_secs(10) {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rpcs_run_in_spans_that_propagate_and_are_exported_over_otlp() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("busybox:latest");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let collector = Collector::default();
    let port = start_collector(&rt, collector.clone());

    let mut d = Berthd::start(&format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n"
    ));
    let img = format!("{}/busybox:latest", reg.addr);
    d.ok(&["pull", &img]);
    let ls = d.ok(&["images"]);
    assert!(
        ls.contains("busybox"),
        "the pulled image is not listed: {ls}"
    );
    // an import into a namespace of its own unpacks (Snapshots/Apply) again
    let archive = berth_integration::busybox_archive();
    d.ok(&[
        "-n",
        "imports",
        "image",
        "import",
        archive.to_str().unwrap(),
    ]);
    d.ok(&["version"]);
    // a failing RPC runs in a span too
    d.fails(&["image", "inspect", "no-such-image"]);

    let spans = stop_and_collect(&mut d, &collector, |spans| {
        spans
            .iter()
            .any(|g| method(&g.span).as_deref() == Some(PULL))
    });
    let log = d.log();
    drop(rt);

    assert!(
        !spans.is_empty(),
        "the collector on 127.0.0.1:{port} received no spans ({} export calls); berthd's log:\n{log}",
        collector.exports.lock().unwrap()
    );
    let all = dump(&spans);
    assert!(
        spans.iter().all(|g| g.service == "berthd"),
        "spans from an unexpected service:\n{all}"
    );

    // Every RPC this test made ran in a server span that records its method (`rpc.method`).
    let methods: BTreeSet<String> = spans
        .iter()
        .filter(|g| g.span.kind == SpanKind::Server as i32)
        .filter_map(|g| method(&g.span))
        .collect();
    for m in [
        PULL,
        IMPORT,
        "/berth.images.v1.Images/List",
        "/berth.images.v1.Images/Inspect",
        "/berth.version.v1.Version/Version",
        RESOLVE,
        FETCH,
        APPLY,
    ] {
        assert!(
            methods.contains(m),
            "no server span for {m}; got {methods:?}\n{all}"
        );
    }

    // The registry and snapshot RPCs a pull or an import causes run in its trace, below it.
    let mut broken = hops(&spans, PULL, &[RESOLVE, FETCH, APPLY]);
    broken.extend(hops(&spans, IMPORT, &[APPLY]));
    assert!(
        broken.is_empty(),
        "the trace context did not cross every gRPC hop:\n  {}\nall spans:\n{all}",
        broken.join("\n  ")
    );
}

/// Checks the trace of the one server span of `root` (an RPC that calls other services): the
/// server spans of the registry and snapshot services that started between it and the next
/// call of the CLI include each of `required`, and each is in its trace, below it. Returns what
/// is wrong, one line each.
fn hops(spans: &[Got], root: &str, required: &[&str]) -> Vec<String> {
    let all = dump(spans);
    let roots: Vec<&Span> = spans
        .iter()
        .map(|g| &g.span)
        .filter(|s| s.kind == SpanKind::Server as i32 && method(s).as_deref() == Some(root))
        .collect();
    assert_eq!(roots.len(), 1, "one call, one {root} server span:\n{all}");
    let top = roots[0];
    assert_eq!(
        top.trace_id.len(),
        16,
        "the {root} span has no valid trace id:\n{all}"
    );
    let by_id: HashMap<&[u8], &Span> = spans
        .iter()
        .map(|g| (g.span.span_id.as_slice(), &g.span))
        .collect();
    let descends = |s: &Span| {
        let mut cur = s;
        for _ in 0..64 {
            if cur.parent_span_id == top.span_id {
                return true;
            }
            match by_id.get(cur.parent_span_id.as_slice()) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    };
    let internal = |s: &Span| {
        method(s).is_some_and(|m| {
            m.starts_with("/berth.registry.v1.") || m.starts_with("/berth.snapshots.v1.")
        })
    };
    // The CLI's commands run one after the other: what `root` caused started before the next
    // RPC that is not an internal one.
    let next = spans
        .iter()
        .map(|g| &g.span)
        .filter(|s| s.kind == SpanKind::Server as i32 && !internal(s))
        .map(|s| s.start_time_unix_nano)
        .filter(|t| *t > top.start_time_unix_nano)
        .min()
        .unwrap_or(u64::MAX);
    let during: Vec<&Span> = spans
        .iter()
        .map(|g| &g.span)
        .filter(|s| s.kind == SpanKind::Server as i32 && internal(s))
        .filter(|s| {
            s.start_time_unix_nano >= top.start_time_unix_nano && s.start_time_unix_nano < next
        })
        .collect();
    for m in required {
        assert!(
            during.iter().any(|s| method(s).as_deref() == Some(*m)),
            "no {m} span while {root} ran:\n{all}"
        );
    }
    let mut broken = Vec::new();
    for s in during {
        let m = method(s).unwrap_or_default();
        let span = hex(&s.span_id);
        let after = if s.start_time_unix_nano > top.end_time_unix_nano {
            format!("; it started after the {root} span had ended, so that work runs outside it")
        } else {
            String::new()
        };
        if s.trace_id != top.trace_id {
            broken.push(format!(
                "{m} (span {span}) called during {root} (trace {}, span {}) is in another trace, {}{after}",
                hex(&top.trace_id),
                hex(&top.span_id),
                hex(&s.trace_id)
            ));
        } else if s.parent_span_id.is_empty() {
            broken.push(format!(
                "{m} (span {span}) called during {root} has no parent span"
            ));
        } else if !descends(s) {
            broken.push(format!(
                "{m} (span {span}) does not descend from the {root} span"
            ));
        }
    }
    broken
}

/// Quiet logs must not switch tracing off: the log filter (`BERTH_LOG`) is for stderr, not
/// for the spans that go to the OTLP endpoint and carry the trace context to other services.
#[test]
fn spans_are_exported_whatever_the_log_level() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let collector = Collector::default();
    let port = start_collector(&rt, collector.clone());
    let cfg = format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n");
    let mut d = Berthd::start_with_env(&cfg, &[("BERTH_LOG", "warn")]);
    d.ok(&["images"]);
    const LIST: &str = "/berth.images.v1.Images/List";
    let spans = stop_and_collect(&mut d, &collector, |spans| {
        spans
            .iter()
            .any(|g| method(&g.span).as_deref() == Some(LIST))
    });
    drop(rt);
    assert!(
        spans
            .iter()
            .any(|g| g.span.kind == SpanKind::Server as i32
                && method(&g.span).as_deref() == Some(LIST)),
        "with BERTH_LOG=warn berthd exported no span for {LIST}:\n{}",
        dump(&spans)
    );
}
