//! Prometheus metrics: what every service shares.
//!
//! - [`GrpcMetrics`] and [`GrpcMetricsLayer`]: a tower layer for a tonic server that counts
//!   every RPC by method and status code (`berth_grpc_server_handled_total`) and times it
//!   until its response ends (`berth_grpc_server_handling_seconds`, a histogram), streams too.
//! - [`gauge`], [`gauge_value`] and [`counter`]: writing the values a service computes when it is scraped
//!   (containers by state, store sizes) from a `prometheus_client` collector.
//!
//! berthd registers these and the services' collectors in one
//! `prometheus_client::registry::Registry` and serves it with [`encode`] (the text format,
//! version 0.0.4) at `/metrics` when `[metrics] listen` is set.

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry in Prometheus' text format (0.0.4). Collectors run now: call it where blocking
/// is fine.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// Writes a gauge family from a collector: `name{labels} value` for each sample. `help` ends
/// with a period, as the registry writes it for registered metrics.
pub fn gauge<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Writes a gauge without labels from a collector (`name value`).
pub fn gauge_value(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Writes a counter without labels from a collector (`name_total value`).
pub fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Labels of the RPC counters: the service and method of the path
/// `/berth.images.v1.Images/Pull`, and the status code's name (`OK`, `NotFound`, …) as
/// grpc-go names codes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Handled {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    grpc_service: String,
    grpc_method: String,
}

/// Seconds: from a millisecond to a five-minute pull.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The RPC metrics of one server.
#[derive(Debug)]
pub struct GrpcMetrics {
    /// `/pkg.Service/Method` paths served; others count as `unknown` (a client can send any
    /// path, and each would be a series of its own).
    known: HashSet<String>,
    started: Family<Method, Counter>,
    handled: Family<Handled, Counter>,
    seconds: Family<Method, Histogram>,
}

impl GrpcMetrics {
    /// Metrics for the methods `known` (`/pkg.Service/Method`), registered in `registry`.
    pub fn new(known: impl IntoIterator<Item = String>, registry: &mut Registry) -> Arc<Self> {
        let m = GrpcMetrics {
            known: known.into_iter().collect(),
            started: Family::default(),
            handled: Family::default(),
            seconds: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
        };
        registry.register(
            "berth_grpc_server_started",
            "RPCs started on the server, by method",
            m.started.clone(),
        );
        registry.register(
            "berth_grpc_server_handled",
            "RPCs completed on the server, by method and gRPC status code",
            m.handled.clone(),
        );
        registry.register(
            "berth_grpc_server_handling_seconds",
            "Time from an RPC's request to the end of its response (a stream's last message), by method",
            m.seconds.clone(),
        );
        Arc::new(m)
    }

    fn method(&self, path: &str) -> Method {
        let split = self
            .known
            .contains(path)
            .then(|| path.trim_start_matches('/').rsplit_once('/'))
            .flatten();
        let (service, method) = split.unwrap_or(("unknown", "unknown"));
        Method {
            grpc_service: service.to_string(),
            grpc_method: method.to_string(),
        }
    }

    fn begin(self: &Arc<Self>, path: &str) -> Call {
        let method = self.method(path);
        self.started.get_or_create(&method).inc();
        Call {
            metrics: self.clone(),
            method,
            began: Instant::now(),
            code: None,
        }
    }
}

/// One RPC being served, recorded once when its response ends or is dropped.
#[derive(Debug)]
struct Call {
    metrics: Arc<GrpcMetrics>,
    method: Method,
    began: Instant,
    /// From `grpc-status` in the headers (a trailers-only answer) or the trailers.
    code: Option<i32>,
}

impl Call {
    fn finish(self, fallback: i32) {
        let code = code_name(self.code.unwrap_or(fallback));
        let m = &self.metrics;
        m.handled
            .get_or_create(&Handled {
                grpc_service: self.method.grpc_service.clone(),
                grpc_method: self.method.grpc_method.clone(),
                grpc_code: code,
            })
            .inc();
        m.seconds
            .get_or_create(&self.method)
            .observe(self.began.elapsed().as_secs_f64());
    }
}

const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;

/// grpc-go's names of the status codes.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The tower layer of [`GrpcMetrics`] (`Server::builder().layer(…)`). Without metrics it only
/// passes requests and responses through.
#[derive(Debug, Clone, Default)]
pub struct GrpcMetricsLayer {
    metrics: Option<Arc<GrpcMetrics>>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Option<Arc<GrpcMetrics>>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// A service whose RPCs [`GrpcMetrics`] counts and times.
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    metrics: Option<Arc<GrpcMetrics>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Observed<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let call = self.metrics.as_ref().map(|m| m.begin(req.uri().path()));
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await;
            let Ok(response) = response else {
                if let Some(call) = call {
                    call.finish(UNKNOWN);
                }
                return response.map(|r| r.map(ObservedBody::untracked));
            };
            let call = call.map(|mut c| {
                c.code = grpc_status(response.headers());
                c
            });
            Ok(response.map(|body| ObservedBody { inner: body, call }))
        })
    }
}

/// A response body that records its RPC when it ends: with the `grpc-status` of its trailers
/// (or headers), or as cancelled when it is dropped before its end (the client went away).
#[derive(Debug)]
pub struct ObservedBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> ObservedBody<B> {
    fn untracked(inner: B) -> Self {
        ObservedBody { inner, call: None }
    }

    fn finish(&mut self, fallback: i32) {
        if let Some(call) = self.call.take() {
            call.finish(fallback);
        }
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(call) = this.call.as_mut() {
                        call.code = grpc_status(trailers).or(call.code);
                    }
                    this.finish(UNKNOWN);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(UNKNOWN),
            // The end without trailers: a trailers-only answer has its status in the headers.
            Poll::Ready(None) => this.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer as _, Service as _, ServiceExt as _};

    const PULL: &str = "/berth.images.v1.Images/Pull";

    /// A body of `frames` data frames, then trailers with `grpc-status: code` (if any).
    struct Reply {
        frames: usize,
        trailers: Option<i32>,
    }

    impl http_body::Body for Reply {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            if self.frames > 0 {
                self.frames -= 1;
                return Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
                    b"x",
                )))));
            }
            Poll::Ready(self.trailers.take().map(|code| {
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", code.to_string().parse().unwrap());
                Ok(http_body::Frame::trailers(t))
            }))
        }
    }

    fn serve(
        metrics: &Arc<GrpcMetrics>,
        path: &str,
        header_code: Option<i32>,
        reply: Reply,
    ) -> ObservedBody<Reply> {
        let reply = std::sync::Mutex::new(Some(reply));
        let inner = tower::service_fn(move |_req: http::Request<()>| {
            let mut r = http::Response::new(reply.lock().unwrap().take().unwrap());
            if let Some(c) = header_code {
                r.headers_mut()
                    .insert("grpc-status", c.to_string().parse().unwrap());
            }
            std::future::ready(Ok::<_, std::convert::Infallible>(r))
        });
        let mut svc = GrpcMetricsLayer::new(Some(metrics.clone())).layer(inner);
        let req = http::Request::builder().uri(path).body(()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { svc.ready().await.unwrap().call(req).await.unwrap() })
            .into_body()
    }

    fn drain(mut body: ObservedBody<Reply>) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(_)) = http_body::Body::poll_frame(Pin::new(&mut body), &mut cx) {
        }
    }

    #[test]
    fn rpcs_are_counted_by_method_and_code_in_the_text_format() {
        let mut registry = Registry::default();
        let metrics = GrpcMetrics::new([PULL.to_string()], &mut registry);
        // A stream of 3 messages that ends OK, twice; one refused in its headers; one whose
        // client went away; one to a path no service serves.
        for _ in 0..2 {
            drain(serve(
                &metrics,
                PULL,
                None,
                Reply {
                    frames: 3,
                    trailers: Some(0),
                },
            ));
        }
        drain(serve(
            &metrics,
            PULL,
            Some(5),
            Reply {
                frames: 0,
                trailers: None,
            },
        ));
        drop(serve(
            &metrics,
            PULL,
            None,
            Reply {
                frames: 1,
                trailers: Some(0),
            },
        ));
        drain(serve(
            &metrics,
            "/evil.Svc/Random123",
            Some(12),
            Reply {
                frames: 0,
                trailers: None,
            },
        ));
        let text = encode(&registry).unwrap();
        let pull = r#"grpc_service="berth.images.v1.Images",grpc_method="Pull""#;
        for line in [
            "# HELP berth_grpc_server_handled_total RPCs completed on the server, by method and gRPC status code.".to_string(),
            "# TYPE berth_grpc_server_handled_total counter".to_string(),
            format!("berth_grpc_server_handled_total{{{pull},grpc_code=\"OK\"}} 2"),
            format!("berth_grpc_server_handled_total{{{pull},grpc_code=\"NotFound\"}} 1"),
            format!("berth_grpc_server_handled_total{{{pull},grpc_code=\"Canceled\"}} 1"),
            r#"berth_grpc_server_handled_total{grpc_service="unknown",grpc_method="unknown",grpc_code="Unimplemented"} 1"#.to_string(),
            format!("berth_grpc_server_started_total{{{pull}}} 4"),
            "# TYPE berth_grpc_server_handling_seconds histogram".to_string(),
            format!("berth_grpc_server_handling_seconds_count{{{pull}}} 4"),
            format!("berth_grpc_server_handling_seconds_bucket{{{pull},le=\"+Inf\"}} 4"),
            format!("berth_grpc_server_handling_seconds_bucket{{{pull},le=\"300\"}} 4"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        assert!(
            text.lines().any(|l| l.starts_with(&format!(
                "berth_grpc_server_handling_seconds_sum{{{pull}}} "
            ))),
            "{text}"
        );
        assert!(
            !text.contains("Random123"),
            "unknown paths are not series:\n{text}"
        );
        assert!(
            !text.contains("# EOF"),
            "the 0.0.4 text format, not OpenMetrics"
        );
    }

    #[test]
    fn without_metrics_the_layer_passes_through() {
        let inner = tower::service_fn(|_req: http::Request<()>| {
            std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
                Reply {
                    frames: 1,
                    trailers: Some(0),
                },
            )))
        });
        let mut svc = GrpcMetricsLayer::default().layer(inner);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let body = rt
            .block_on(async {
                svc.ready()
                    .await
                    .unwrap()
                    .call(http::Request::new(()))
                    .await
            })
            .unwrap()
            .into_body();
        assert!(body.call.is_none());
        drain(body);
    }

    #[test]
    fn collectors_write_gauges_and_counters() {
        #[derive(Debug)]
        struct Fixed;
        impl prometheus_client::collector::Collector for Fixed {
            fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                gauge(
                    &mut e,
                    "berth_containers",
                    "Containers by state.",
                    &[([("state", "running")], 2), ([("state", "exited")], 0)],
                )?;
                counter(&mut e, "berth_image_pulled_bytes", "Bytes pulled.", 42)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        let text = encode(&registry).unwrap();
        assert_eq!(
            text,
            "# HELP berth_containers Containers by state.\n\
             # TYPE berth_containers gauge\n\
             berth_containers{state=\"running\"} 2\n\
             berth_containers{state=\"exited\"} 0\n\
             # HELP berth_image_pulled_bytes_total Bytes pulled.\n\
             # TYPE berth_image_pulled_bytes_total counter\n\
             berth_image_pulled_bytes_total 42\n"
        );
    }
}
