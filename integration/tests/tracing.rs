//! Tracing end to end: a real berthd exporting over OTLP/gRPC to a collector started by this
//! test, a real registry, a real `berth pull`. Every RPC runs in a server span, the trace
//! context crosses the gRPC hops from the image service to the registry and snapshot services
//! (W3C `traceparent` in metadata), and the spans reach the collector when the daemon stops.
//!
//! And one CLI command is one trace: `berth --otlp-endpoint … run --rm IMAGE true` against two
//! berthds that host different services gives one trace with the command's span at the root,
//! the RPCs of both daemons below it and the shim's create, start and exit under the runtime's
//! Tasks.Create and Tasks.Start.

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

/// A span as the collector got it, with the `service.name` and `process.pid` of its resource.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    pid: Option<String>,
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
            let resource = |key| rs.resource.as_ref().and_then(|r| attr(&r.attributes, key));
            let service = resource("service.name").unwrap_or_default();
            let pid = resource("process.pid");
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Got {
                        service: service.clone(),
                        pid: pid.clone(),
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
            "  [{} pid {}] {} method={} kind={} trace={} span={} parent={}",
            g.service,
            g.pid.as_deref().unwrap_or("-"),
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

/// Starts a collector on 127.0.0.1:<free port> in a runtime of its own: the runtime (drop it
/// to stop the collector), the collector and its port.
fn start_collector() -> (tokio::runtime::Runtime, Collector, u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = Collector::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the collector");
    let port = listener.local_addr().unwrap().port();
    let served = c.clone();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(served))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("the OTLP collector failed");
    });
    (rt, c, port)
}

/// Waits (up to `limit`) until `done` holds for the spans collected so far, and returns them
/// either way: the exporters send in batches, whenever they choose.
fn collect_until(c: &Collector, limit: Duration, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let start = Instant::now();
    loop {
        let spans = c.spans.lock().unwrap().clone();
        if done(&spans) || start.elapsed() > limit {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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
    collect_until(c, Duration::from_secs(10), done)
}

#[test]
fn rpcs_run_in_spans_that_propagate_and_are_exported_over_otlp() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("busybox:latest");

    let (rt, collector, port) = start_collector();

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
    let (rt, collector, port) = start_collector();
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

const SHIM_SPANS: [&str; 3] = ["shim create", "shim start", "shim exit"];

#[test]
fn one_cli_command_is_one_trace_across_two_daemons_and_the_shim() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("busybox:latest");
    let (rt, collector, port) = start_collector();
    let endpoint = format!("http://127.0.0.1:{port}");
    let otlp = format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n");
    // A hosts the snapshot and registry services, B image and runtime (as split.rs).
    let a = Berthd::start_with(&otlp, &[], &["--service", "snapshot,registry"]);
    let a_sock = format!("unix://{}", a.sock.display());
    let b = Berthd::start_with(
        &format!("{otlp}[services]\nsnapshot = \"{a_sock}\"\nregistry = \"{a_sock}\"\n"),
        &[],
        &["--service", "image,runtime"],
    );
    let (a_pid, b_pid) = (a.pid().to_string(), b.pid().to_string());
    let img = format!("{}/busybox:latest", reg.addr);
    // Untraced by the CLI: its RPCs' spans are roots of their own, outside the run's trace.
    b.ok(&["pull", "-q", &img]);
    let out = b
        .cmd()
        .args(["--otlp-endpoint", &endpoint, "run", "--rm", &img, "true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berth run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let is_root = |g: &Got| g.service == "berth" && g.span.name == "berth run";
    let spans = collect_until(&collector, Duration::from_secs(90), |spans| {
        let Some(root) = spans.iter().find(|g| is_root(g)) else {
            return false;
        };
        let traced = |name: &str| {
            spans
                .iter()
                .any(|g| g.span.trace_id == root.span.trace_id && g.span.name == name)
        };
        SHIM_SPANS.iter().all(|n| traced(n))
            && [&a_pid, &b_pid].iter().all(|pid| {
                spans.iter().any(|g| {
                    g.span.trace_id == root.span.trace_id && g.pid.as_deref() == Some(pid.as_str())
                })
            })
    });
    let all = dump(&spans);
    let logs = format!("A's log:\n{}\nB's log:\n{}", a.log(), b.log());
    drop(rt);

    // The command's span is the root of one trace.
    let roots: Vec<&Got> = spans.iter().filter(|g| is_root(g)).collect();
    assert_eq!(
        roots.len(),
        1,
        "one `berth run` span from the CLI:\n{all}\n{logs}"
    );
    let root = &roots[0].span;
    assert!(
        root.parent_span_id.is_empty(),
        "the command's span has no parent:\n{all}"
    );
    assert_eq!(root.trace_id.len(), 16, "a valid trace id:\n{all}");
    let trace: Vec<&Got> = spans
        .iter()
        .filter(|g| g.span.trace_id == root.trace_id)
        .collect();
    let by_id: HashMap<&[u8], &Got> = trace
        .iter()
        .map(|g| (g.span.span_id.as_slice(), *g))
        .collect();
    // Every other span of the trace hangs below it, through spans the collector got.
    for g in &trace {
        if g.span.span_id == root.span_id {
            continue;
        }
        let mut cur = &g.span;
        let mut hops = 0;
        while cur.parent_span_id != root.span_id {
            hops += 1;
            let parent = by_id.get(cur.parent_span_id.as_slice());
            assert!(
                parent.is_some() && hops < 64,
                "{} [{}] does not lead up to the command's span (missing parent {}):\n{all}",
                g.span.name,
                g.service,
                hex(&cur.parent_span_id)
            );
            cur = &parent.unwrap().span;
        }
    }

    // Both daemons worked in it: B's runtime and image services, A's snapshot service.
    let server = |m: &str, pid: &str| -> Vec<&Got> {
        trace
            .iter()
            .copied()
            .filter(|g| {
                g.span.kind == SpanKind::Server as i32
                    && method(&g.span).as_deref() == Some(m)
                    && g.pid.as_deref() == Some(pid)
            })
            .collect()
    };
    let one = |m: &str, pid: &str, who: &str| -> &Span {
        let found = server(m, pid);
        assert_eq!(
            found.len(),
            1,
            "one {m} server span from {who} (pid {pid}) in the command's trace:\n{all}"
        );
        &found[0].span
    };
    let create = one("/berth.containers.v1.Containers/Create", &b_pid, "B");
    assert_eq!(
        create.parent_span_id, root.span_id,
        "the CLI's call is a child of its command:\n{all}"
    );
    let prepare = one("/berth.snapshots.v1.Snapshots/Prepare", &a_pid, "A");
    assert_eq!(
        prepare.parent_span_id, create.span_id,
        "the runtime's call to A's snapshot service is a child of Containers/Create:\n{all}"
    );
    let task_create = one("/berth.tasks.v1.Tasks/Create", &b_pid, "B");
    let task_start = one("/berth.tasks.v1.Tasks/Start", &b_pid, "B");
    for s in [task_create, task_start] {
        assert_eq!(s.parent_span_id, root.span_id, "{}:\n{all}", s.name);
    }

    // The shim's work, exported by the runtime for it, under the calls that asked for it.
    let shim = |name: &str| -> &Got {
        let found: Vec<&Got> = trace
            .iter()
            .copied()
            .filter(|g| g.span.name == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {name} span in the trace:\n{all}\n{logs}"
        );
        assert_eq!(found[0].service, "berth-shim", "{name}:\n{all}");
        found[0]
    };
    let (sc, ss, se) = (shim("shim create"), shim("shim start"), shim("shim exit"));
    assert_eq!(
        sc.span.parent_span_id, task_create.span_id,
        "the shim's create is a child of Tasks/Create:\n{all}"
    );
    assert_eq!(
        ss.span.parent_span_id, task_start.span_id,
        "the shim's start is a child of Tasks/Start:\n{all}"
    );
    assert_eq!(
        se.span.parent_span_id, task_start.span_id,
        "the container's exit goes under the start that ran it:\n{all}"
    );
    assert_eq!(attr(&se.span.attributes, "exit_code").as_deref(), Some("0"));
    let shim_pid = attr(&sc.span.attributes, "process.pid");
    assert!(
        shim_pid.is_some() && shim_pid.as_deref() != Some(b_pid.as_str()),
        "the create span names the shim's own pid:\n{all}"
    );
    for g in [sc, ss, se] {
        let s = &g.span;
        assert!(
            s.start_time_unix_nano > 0 && s.end_time_unix_nano >= s.start_time_unix_nano,
            "{} has the shim's own times:\n{all}",
            s.name
        );
    }
    assert!(
        sc.span.start_time_unix_nano >= root.start_time_unix_nano
            && se.span.start_time_unix_nano >= ss.span.start_time_unix_nano,
        "the shim's times are in order, within the command:\n{all}"
    );
}
