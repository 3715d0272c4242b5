//! The CRI's streaming server: `Exec`, `Attach` and `PortForward` answer a URL on berth's own
//! HTTP listener (`[cri] stream_address`, loopback by default), and the client (the kubelet,
//! crictl) then upgrades a request to that URL to SPDY/3.1 and speaks Kubernetes'
//! remote-command (`v4.channel.k8s.io`) or port-forward (`portforward.k8s.io`) protocol over
//! it, both from `berth-spdy`.
//!
//! - The RPCs ([`exec`], [`attach`], [`port_forward`]) check their request as the kubelet's
//!   streaming server does (the container or sandbox exists and runs; stdio that makes sense)
//!   and file it under a single-use token ([`tokens`]) that expires after a minute: the URL
//!   is `http://ADDR/exec/TOKEN` (`/attach/…`, `/portforward/…`). An unknown, used or expired
//!   token is 404.
//! - [`serve`] is the listener: one hyper HTTP/1.1 server task whose connections are upgraded.
//!   Exec and attach run through the runtime's Tasks.Exec and Tasks.Attach streams
//!   ([`remote`]); port-forward connects to `localhost:PORT` inside the pod's network
//!   namespace ([`forward`]).
//!
//! The CRI front runs on the runtime's host (port-forward enters the sandbox's network
//! namespace by its pid), as the kubelet's streaming server runs beside its runtime.

pub mod forward;
pub mod remote;
pub mod tokens;

use crate::sandboxes::get;
use crate::{objects, Backends};
use berth_api::cri::v1 as cri;
use berth_spdy::{portforward, remotecommand, upgrade};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokens::{Granted, Streams, Tokens};
use tonic::Status;

/// How long the client has to open its streams once the connection is upgraded (Kubernetes'
/// default).
const STREAM_CREATION_TIMEOUT: std::time::Duration = remotecommand::DEFAULT_STREAM_TIMEOUT;

/// Where the streaming server listens by default: loopback, on a port the kernel picks.
pub const DEFAULT_STREAM_ADDRESS: &str = "127.0.0.1:0";

/// The streaming server's bound socket (`[cri] stream_address`).
#[derive(Debug)]
pub struct StreamListener {
    tcp: tokio::net::TcpListener,
    address: SocketAddr,
}

impl StreamListener {
    /// Binds `address` (`HOST:PORT`, an IP address; port 0 for one the kernel picks), or
    /// [`DEFAULT_STREAM_ADDRESS`]. Needs a tokio runtime.
    pub fn bind(address: Option<&str>) -> std::io::Result<StreamListener> {
        let address = address.unwrap_or(DEFAULT_STREAM_ADDRESS);
        let parsed: SocketAddr = address.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("stream_address {address:?}: expected IP:PORT, e.g. 127.0.0.1:10010"),
            )
        })?;
        let std_listener = std::net::TcpListener::bind(parsed)
            .map_err(|e| std::io::Error::new(e.kind(), format!("stream_address {address}: {e}")))?;
        std_listener.set_nonblocking(true)?;
        let address = std_listener.local_addr()?;
        let tcp = tokio::net::TcpListener::from_std(std_listener)?;
        Ok(StreamListener { tcp, address })
    }

    /// The address bound (with the port the kernel picked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// The streaming server's address and the requests waiting for their client.
#[derive(Debug)]
pub struct Streaming {
    /// `http://HOST:PORT` of the listener, as URLs name it.
    base_url: String,
    tokens: Tokens,
}

impl Streaming {
    /// The streaming server of a listener bound at `bound`. An unspecified address (`0.0.0.0`,
    /// `::`) is named by the loopback address of its family in URLs: the CRI's clients run
    /// on this host.
    pub fn new(bound: SocketAddr) -> Streaming {
        let mut addr = bound;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Streaming {
            base_url: format!("http://{addr}"),
            tokens: Tokens::default(),
        }
    }

    /// Files `granted` and returns its URL.
    fn url(&self, granted: Granted) -> Result<String, Status> {
        let path = kind_of(&granted);
        let token = self.tokens.grant(granted)?;
        Ok(format!("{}/{path}/{token}", self.base_url))
    }
}

/// The stdio of an exec or attach, refused as the kubelet refuses it.
fn streams(
    rpc: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<Streams, Status> {
    if tty && stderr {
        return Err(Status::invalid_argument(format!(
            "{rpc}: tty and stderr cannot both be true (a terminal has one output stream)"
        )));
    }
    if !stdin && !stdout && !stderr {
        return Err(Status::invalid_argument(format!(
            "{rpc}: one of stdin, stdout or stderr must be set"
        )));
    }
    Ok(Streams {
        stdin,
        stdout,
        stderr,
        tty,
    })
}

/// Checks an exec's or attach's container (it exists and runs, else NotFound or
/// FailedPrecondition) after its stdio (`streams`), and returns the stdio.
async fn check_remote(
    b: &Backends,
    container_id: &str,
    streams: Result<Streams, Status>,
) -> Result<Streams, Status> {
    objects::required("container", container_id)?;
    let streams = streams?;
    let c = get(b, container_id, objects::KIND_CONTAINER).await?;
    match objects::status(&c) {
        "running" => Ok(streams),
        state => Err(Status::failed_precondition(format!(
            "container {container_id} is not running (it is {}): start it first",
            if state.is_empty() {
                "without a task"
            } else {
                state
            }
        ))),
    }
}

/// `Exec`: the URL where `request`'s command runs.
pub async fn exec(
    b: &Backends,
    streaming: &Streaming,
    r: cri::ExecRequest,
) -> Result<cri::ExecResponse, Status> {
    if r.cmd.is_empty() {
        return Err(Status::invalid_argument(
            "Exec needs a command (cmd is empty)",
        ));
    }
    let streams = streams("Exec", r.stdin, r.stdout, r.stderr, r.tty);
    let streams = check_remote(b, &r.container_id, streams).await?;
    let url = streaming.url(Granted::Exec {
        container_id: r.container_id,
        cmd: r.cmd,
        streams,
    })?;
    Ok(cri::ExecResponse { url })
}

/// `Attach`: the URL where the container's process is attached to.
pub async fn attach(
    b: &Backends,
    streaming: &Streaming,
    r: cri::AttachRequest,
) -> Result<cri::AttachResponse, Status> {
    let streams = streams("Attach", r.stdin, r.stdout, r.stderr, r.tty);
    let streams = check_remote(b, &r.container_id, streams).await?;
    let url = streaming.url(Granted::Attach {
        container_id: r.container_id,
        streams,
    })?;
    Ok(cri::AttachResponse { url })
}

/// `PortForward`: the URL where connections to the pod's ports are forwarded. The ports
/// themselves come with each connection (the client's streams name them).
pub async fn port_forward(
    b: &Backends,
    streaming: &Streaming,
    request: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse, Status> {
    objects::required("pod sandbox", &request.pod_sandbox_id)?;
    if let Some(bad) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Status::invalid_argument(format!(
            "port {bad}: a port is a number from 1 to 65535"
        )));
    }
    let sandbox = get(b, &request.pod_sandbox_id, objects::KIND_SANDBOX).await?;
    if objects::status(&sandbox) != "running" {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready: its network namespace is gone",
            request.pod_sandbox_id
        )));
    }
    let url = streaming.url(Granted::PortForward {
        sandbox_id: sandbox.id,
    })?;
    Ok(cri::PortForwardResponse { url })
}

/// Serves the streaming URLs on `listener` until `shutdown` ends (sessions under way go on).
pub async fn serve(
    listener: StreamListener,
    backends: Arc<Backends>,
    streaming: Arc<Streaming>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.tcp.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // EMFILE and the like pass; do not spin on them.
                    tracing::warn!(error = %e, "the CRI streaming server cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (backends, streaming) = (backends.clone(), streaming.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (backends, streaming) = (backends.clone(), streaming.clone());
                async move { Ok::<_, std::convert::Infallible>(route(request, backends, &streaming)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(error = %e, "a CRI streaming connection ended with an error");
            }
        });
    }
}

/// Answers one request: the 101 of an upgrade whose session then runs in a task of its own,
/// or why not.
fn route(
    mut request: Request<Incoming>,
    backends: Arc<Backends>,
    streaming: &Streaming,
) -> Response<String> {
    let path = request.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() {
        return plain(
            StatusCode::NOT_FOUND,
            format!("{path}: not a streaming URL"),
        );
    }
    let granted = match streaming.tokens.take(token) {
        Some(g) if kind == kind_of(&g) => g,
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                format!("{path}: unknown, used or expired streaming URL (ask the CRI for a new one; a URL serves once, within a minute)"),
            )
        }
    };
    let protocols: &[&'static str] = match granted {
        Granted::PortForward { .. } => &[portforward::PROTOCOL_V1],
        _ => &[remotecommand::PROTOCOL_V4],
    };
    let upgrade = match upgrade::negotiate(&mut request, protocols) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal.into_response(),
    };
    let response = upgrade.response();
    tokio::spawn(async move {
        let session = match upgrade.session(Default::default()).await {
            Ok(session) => session,
            Err(e) => {
                tracing::debug!(error = %e, "a CRI streaming upgrade did not complete");
                return;
            }
        };
        match granted {
            Granted::PortForward { sandbox_id } => {
                let forwards = portforward::PortForward::new(session, STREAM_CREATION_TIMEOUT);
                forward::serve(backends, sandbox_id, forwards).await;
            }
            Granted::Exec {
                container_id,
                cmd,
                streams,
            } => remote::exec(backends, container_id, cmd, streams, session).await,
            Granted::Attach {
                container_id,
                streams,
            } => remote::attach(backends, container_id, streams, session).await,
        }
    });
    response
}

fn kind_of(granted: &Granted) -> &'static str {
    match granted {
        Granted::Exec { .. } => "exec",
        Granted::Attach { .. } => "attach",
        Granted::PortForward { .. } => "portforward",
    }
}

fn plain(status: StatusCode, message: String) -> Response<String> {
    let mut response = Response::new(format!("{message}\n"));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_listener_and_the_kind() {
        let streaming = Streaming::new("0.0.0.0:1234".parse().unwrap());
        let url = streaming
            .url(Granted::PortForward {
                sandbox_id: "p".into(),
            })
            .unwrap();
        let token = url
            .strip_prefix("http://127.0.0.1:1234/portforward/")
            .unwrap();
        assert_eq!(
            streaming.tokens.take(token),
            Some(Granted::PortForward {
                sandbox_id: "p".into()
            })
        );
        let v6 = Streaming::new("[::]:80".parse().unwrap());
        assert_eq!(v6.base_url, "http://[::1]:80");
    }

    #[test]
    fn stdio_is_checked_as_the_kubelet_does() {
        assert_eq!(
            streams("Exec", false, true, true, true).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(streams("Exec", false, false, false, false)
            .unwrap_err()
            .message()
            .contains("one of stdin, stdout or stderr"));
        assert!(streams("Attach", true, true, false, true).is_ok());
        assert!(streams("Attach", true, false, false, false).is_ok());
    }
}
