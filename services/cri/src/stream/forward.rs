//! Port-forward: each connection the client forwards (a data and an error stream naming a
//! port, paired by `berth_spdy::portforward`) becomes a TCP connection to `localhost:PORT`
//! inside the pod's network namespace, and bytes are copied both ways until either side
//! closes. A connection that cannot be made is reported on its error stream, as the kubelet
//! does, and the session goes on for the others.
//!
//! The socket is made in the pod's namespace: a dedicated thread (never a tokio worker, which
//! would stay in the pod's namespace for the tasks it runs next) enters
//! `/proc/PID/ns/net` of the sandbox's task with `setns`, connects, and hands the connected
//! socket back; a socket keeps the namespace it was made in, so tokio then drives it from any
//! thread.

use crate::sandboxes::tasks;
use crate::{req, Backends};
use berth_api::tasks::v1 as api;
use berth_spdy::portforward::{ForwardRequest, PortForward};
use berth_spdy::session::Stream;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long a connection to a port in the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the forwarded connections of one session to sandbox `sandbox_id`.
pub async fn serve(b: Arc<Backends>, sandbox_id: String, mut forwards: PortForward) {
    while let Some(request) = forwards.next().await {
        tokio::spawn(forward(b.clone(), sandbox_id.clone(), request));
    }
}

/// One forwarded connection, to its end.
async fn forward(b: Arc<Backends>, sandbox_id: String, request: ForwardRequest) {
    let port = request.port;
    let connected = match sandbox_pid(&b, &sandbox_id).await {
        Ok(pid) => connect_in_pod(pid, port).await,
        Err(e) => Err(e),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {sandbox_id}: {e}");
            tracing::debug!(%message);
            let _ = request.fail(&message).await;
            return;
        }
    };
    let ForwardRequest {
        data, mut error, ..
    } = request;
    if let Err(e) = copy(data, tcp).await {
        // A client that left mid-copy reset its streams: nobody reads this then.
        let message = format!("error copying port {port} of pod {sandbox_id}: {e}");
        let _ = error.write_all(message.as_bytes()).await;
    }
    // The client closes its local connection once this stream ends.
    let _ = error.shutdown().await;
}

/// Copies both ways until the pod's side ends, as the kubelet does: the client's end of input
/// is passed on (a half-close), and the pod's end of output ends the connection — the client
/// waits for it (and for the error stream's end) before it closes its local connection.
async fn copy(data: Stream, mut tcp: tokio::net::TcpStream) -> io::Result<()> {
    let (mut from_client, mut to_client) = tokio::io::split(data);
    let (mut from_pod, mut to_pod) = tcp.split();
    let upload = async {
        tokio::io::copy(&mut from_client, &mut to_pod).await?;
        to_pod.shutdown().await
    };
    let download = async {
        tokio::io::copy(&mut from_pod, &mut to_client).await?;
        to_client.shutdown().await
    };
    tokio::pin!(upload, download);
    tokio::select! {
        done = &mut download => done,
        uploaded = &mut upload => match uploaded {
            Ok(()) => download.await,
            Err(e) => Err(e),
        },
    }
}

/// The pid (on this host) of the sandbox's task, whose network namespace is the pod's.
async fn sandbox_pid(b: &Backends, sandbox_id: &str) -> io::Result<u32> {
    let task = tasks(b)
        .get(req(api::GetTaskRequest {
            container_id: sandbox_id.to_string(),
        }))
        .await
        .map_err(|e| io::Error::other(format!("the sandbox's task: {}", e.message())))?
        .into_inner()
        .task
        .unwrap_or_default();
    if task.pid == 0 || task.status != api::Status::Running as i32 {
        return Err(io::Error::other(
            "the sandbox does not run: its network namespace is gone",
        ));
    }
    Ok(task.pid)
}

/// A connection to `localhost:port` in the network namespace of process `pid`.
async fn connect_in_pod(pid: u32, port: u16) -> io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cri-portforward".into())
        .spawn(move || {
            let _ = tx.send(connect_in_namespace(pid, port));
        })?;
    let tcp = rx
        .await
        .map_err(|_| io::Error::other("the thread connecting in the pod's namespace died"))??;
    tcp.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(tcp)
}

/// On a thread of its own (it stays in the pod's namespace until it ends): enters the network
/// namespace of `pid` and connects to `localhost:port`, IPv4 first, then IPv6.
fn connect_in_namespace(pid: u32, port: u16) -> io::Result<std::net::TcpStream> {
    let path = format!("/proc/{pid}/ns/net");
    let namespace =
        std::fs::File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        io::Error::other(format!(
            "entering the pod's network namespace ({path}): {e}"
        ))
    })?;
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(tcp) => Ok(tcp),
        Err(first) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
                .map_err(|_| io::Error::new(first.kind(), format!("dial tcp {v4}: {first}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_in_a_process_namespace() {
        // Our own namespace stands in for a pod's: the path through setns is the same.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: setns needs root");
            return;
        }
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = connect_in_pod(std::process::id(), port).await.unwrap();
        assert_eq!(tcp.peer_addr().unwrap().port(), port);
        drop(listener);
        let refused = connect_in_pod(std::process::id(), port).await.unwrap_err();
        assert!(refused.to_string().contains("dial tcp"), "{refused}");
        let gone = connect_in_pod(u32::MAX, port).await.unwrap_err();
        assert!(gone.to_string().contains("/proc/"), "{gone}");
    }
}
