//! Kubernetes' port-forward protocol, server side (`portforward.k8s.io` over SPDY).
//!
//! For every connection a user makes to a forwarded port, the client opens two streams with
//! the same `requestID` header: `streamType: error` and `streamType: data`, both with the
//! `port`. [`PortForward::next`] pairs them and yields a [`ForwardRequest`]: the CRI service
//! connects to that port in the pod's network namespace and copies bytes between the
//! connection and `data`; when it cannot, it says why with [`ForwardRequest::fail`] (the
//! client prints it). A pair that stays incomplete past the timeout is reset; a stream with
//! a bad `port` gets the reason on its error stream. Clients too old to send `requestID` are
//! paired as Kubernetes does: the data stream is the one opened right after its error stream.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::frame::rst;
use crate::session::{Session, Stream};

/// The protocol this module speaks.
pub const PROTOCOL_V1: &str = "portforward.k8s.io";

/// One forwarded connection: the port in the pod, its data stream and its error stream.
#[derive(Debug)]
pub struct ForwardRequest {
    pub port: u16,
    pub data: Stream,
    pub error: Stream,
}

impl ForwardRequest {
    /// Tells the client why this connection cannot be forwarded, and closes both streams.
    pub async fn fail(mut self, message: &str) -> std::io::Result<()> {
        self.error.write_all(message.as_bytes()).await?;
        self.error.shutdown().await?;
        self.data.shutdown().await
    }
}

/// A stream waiting for its partner.
#[derive(Debug)]
struct Half {
    stream: Stream,
    since: Instant,
}

#[derive(Debug, Default)]
struct Pending {
    data: Option<Half>,
    error: Option<Half>,
}

/// The port-forward streams of one session.
#[derive(Debug)]
pub struct PortForward {
    session: Session,
    pending: HashMap<String, Pending>,
    timeout: Duration,
}

impl PortForward {
    /// Serves port-forward on `session`; incomplete pairs are reset after `timeout`.
    pub fn new(session: Session, timeout: Duration) -> PortForward {
        PortForward {
            session,
            pending: HashMap::new(),
            timeout,
        }
    }

    /// The next complete pair; `None` once the client closed the session.
    pub async fn next(&mut self) -> Option<ForwardRequest> {
        loop {
            let deadline = self
                .pending
                .values()
                .flat_map(|p| p.data.iter().chain(p.error.iter()))
                .map(|half| half.since + self.timeout)
                .min();
            let stream = match deadline {
                Some(deadline) => tokio::select! {
                    stream = self.session.accept() => stream,
                    () = tokio::time::sleep_until(deadline) => {
                        self.expire();
                        continue;
                    }
                },
                None => self.session.accept().await,
            };
            let stream = stream?;
            if let Some(request) = self.place(stream).await {
                return Some(request);
            }
        }
    }

    /// Closes the session (GOAWAY) once what is queued is written.
    pub fn shutdown(&self) {
        self.session.shutdown();
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let timeout = self.timeout;
        self.pending.retain(|request_id, pending| {
            let expired = pending
                .data
                .iter()
                .chain(pending.error.iter())
                .any(|half| half.since + timeout <= now);
            if expired {
                tracing::debug!(%request_id, "port-forward pair incomplete after {timeout:?}");
                for half in pending.data.iter().chain(pending.error.iter()) {
                    half.stream.reset(rst::CANCEL);
                }
            }
            !expired
        });
    }

    /// Files a stream under its request; returns the request once both halves are there.
    async fn place(&mut self, mut stream: Stream) -> Option<ForwardRequest> {
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        let request_id = match stream.header("requestid") {
            Some(id) => id.to_string(),
            // no requestID: the error stream comes first, its data stream is 2 ids later
            None if kind == "data" => stream.id().saturating_sub(2).to_string(),
            None => stream.id().to_string(),
        };
        let problem = match (kind.as_str(), port_of(&stream)) {
            (_, Err(problem)) => Some(problem),
            ("data" | "error", Ok(_)) => None,
            (other, Ok(_)) => Some(format!("unknown streamType {other:?} (data or error)")),
        };
        if let Some(problem) = problem {
            tracing::debug!(%request_id, %problem, "refusing a port-forward stream");
            if kind == "error" {
                let _ = stream.write_all(problem.as_bytes()).await;
                let _ = stream.shutdown().await;
            } else {
                stream.reset(rst::PROTOCOL_ERROR);
            }
            return None;
        }
        let pending = self.pending.entry(request_id.clone()).or_default();
        let slot = if kind == "data" {
            &mut pending.data
        } else {
            &mut pending.error
        };
        if slot.is_some() {
            stream.reset(rst::PROTOCOL_ERROR);
            return None;
        }
        *slot = Some(Half {
            stream,
            since: Instant::now(),
        });
        if pending.data.is_none() || pending.error.is_none() {
            return None;
        }
        let pending = self.pending.remove(&request_id)?;
        let (data, error) = (pending.data?.stream, pending.error?.stream);
        let port = port_of(&data).ok()?;
        if port_of(&error).ok() != Some(port) {
            let request = ForwardRequest { port, data, error };
            let _ = request
                .fail("the data and error streams of a request name different ports")
                .await;
            return None;
        }
        Some(ForwardRequest { port, data, error })
    }
}

fn port_of(stream: &Stream) -> Result<u16, String> {
    let port = stream
        .header("port")
        .ok_or_else(|| "the stream has no port header".to_string())?;
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("invalid port {port:?}: a number from 1 to 65535")),
    }
}
