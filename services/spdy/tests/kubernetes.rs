//! The upgrade, remote-command and port-forward protocols end to end: a hyper 1 server on a
//! loopback socket using this crate as the CRI service will, and a test client doing what
//! client-go does (HTTP/1.1 upgrade, then SPDY streams with Kubernetes' headers).

mod client;

use std::time::Duration;

use berth_spdy::portforward::{self, PortForward};
use berth_spdy::remotecommand::{self, Channels, Outcome};
use berth_spdy::upgrade;
use client::Client;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A streaming server: `/exec?…` runs a pretend process, `/portforward` echoes port 80 and
/// refuses the others.
async fn start_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(handle);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<String>, std::convert::Infallible> {
    let portforward = req.uri().path() == "/portforward";
    let supported: &[&'static str] = if portforward {
        &[portforward::PROTOCOL_V1]
    } else {
        &[remotecommand::PROTOCOL_V4]
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let upgrade = match upgrade::negotiate(&mut req, supported) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let response = upgrade.response();
    tokio::spawn(async move {
        let session = upgrade.session(Default::default()).await.unwrap();
        if portforward {
            forward(PortForward::new(session, Duration::from_secs(5))).await;
        } else {
            let channels = Channels::from_query(&query).unwrap();
            let command = remotecommand::accept(session, channels, Duration::from_secs(5))
                .await
                .unwrap();
            pretend_process(command).await;
        }
    });
    Ok(response)
}

/// Echoes stdin (to stdout, and stderr) and exits 3; under a tty, reports the first resize.
async fn pretend_process(mut command: remotecommand::RemoteCommand) {
    if command.channels().tty {
        let size = command.resize.as_mut().unwrap().recv().await.unwrap();
        let mut stdout = command.stdout.take().unwrap();
        let line = format!("{}x{}\n", size.width, size.height);
        stdout.write_all(line.as_bytes()).await.unwrap();
        drop(stdout);
        command.finish(Outcome::Exited(0)).await.unwrap();
        return;
    }
    let mut input = Vec::new();
    let mut stdin = command.stdin.take().unwrap();
    stdin.read_to_end(&mut input).await.unwrap();
    let mut stdout = command.stdout.take().unwrap();
    stdout.write_all(b"out:").await.unwrap();
    stdout.write_all(&input).await.unwrap();
    let mut stderr = command.stderr.take().unwrap();
    stderr.write_all(b"err:").await.unwrap();
    stderr.write_all(&input).await.unwrap();
    drop((stdout, stderr));
    command.finish(Outcome::Exited(3)).await.unwrap();
}

async fn forward(mut forwards: PortForward) {
    while let Some(mut request) = forwards.next().await {
        if request.port != 80 {
            let message = format!("error forwarding port {}: connection refused", request.port);
            request.fail(&message).await.unwrap();
            continue;
        }
        tokio::spawn(async move {
            let mut data = Vec::new();
            request.data.read_to_end(&mut data).await.unwrap();
            request.data.write_all(&data).await.unwrap();
            request.data.shutdown().await.unwrap();
        });
    }
}

/// Sends the upgrade request and reads the answer's head.
async fn upgrade_request(
    addr: std::net::SocketAddr,
    target: &str,
    protocols: &[&str],
) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for protocol in protocols {
        request.push_str(&format!("X-Stream-Protocol-Version: {protocol}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap().to_ascii_lowercase(), tcp)
}

#[tokio::test]
async fn exec_with_stdin_stdout_stderr_reports_exit_code_3() {
    let addr = start_server().await;
    let (head, tcp) = upgrade_request(
        addr,
        "/exec?command=cat&stdin=1&stdout=1&stderr=1",
        &[
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
        ],
    )
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    assert!(head.contains("upgrade: spdy/3.1"), "{head}");
    let mut client = Client::new(tcp);
    client.open(1, &[("streamType", "error")]).await;
    client.open(3, &[("streamType", "stdin")]).await;
    client.open(5, &[("streamType", "stdout")]).await;
    client.open(7, &[("streamType", "stderr")]).await;
    client.data(3, b"hello", true).await;
    assert_eq!(client.read_to_fin(5).await, b"out:hello");
    assert_eq!(client.read_to_fin(7).await, b"err:hello");
    let status: serde_json::Value = serde_json::from_slice(&client.read_to_fin(1).await).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert!(
        client.closed().await,
        "the server keeps the connection open"
    );
}

#[tokio::test]
async fn exec_with_a_tty_gets_resizes_and_success() {
    let addr = start_server().await;
    let (head, tcp) = upgrade_request(
        addr,
        "/exec?command=sh&stdin=1&stdout=1&tty=1",
        &["v4.channel.k8s.io"],
    )
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let mut client = Client::new(tcp);
    client.open(1, &[("streamType", "error")]).await;
    client.open(3, &[("streamType", "stdin")]).await;
    client.open(5, &[("streamType", "stdout")]).await;
    client.open(7, &[("streamType", "resize")]).await;
    // JSON split across frames, as a stream of values (json.Encoder writes a newline after each)
    client.data(7, b"{\"Width\":120,", false).await;
    client.data(7, b"\"Height\":40}\n", false).await;
    assert_eq!(client.read_to_fin(5).await, b"120x40\n");
    let status: serde_json::Value = serde_json::from_slice(&client.read_to_fin(1).await).unwrap();
    assert_eq!(
        status,
        serde_json::json!({"metadata": {}, "status": "Success"})
    );
}

#[tokio::test]
async fn unsupported_protocols_and_plain_requests_are_refused() {
    let addr = start_server().await;
    let (head, _) = upgrade_request(addr, "/exec?stdout=1", &["v1.channel.k8s.io"]).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(
        head.contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{head}"
    );
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /exec?stdout=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("SPDY/3.1"), "{answer}");
}

/// Opens a port-forward stream as client-go does: its type, port and request id.
async fn open_forward(
    client: &mut Client<TcpStream>,
    id: u32,
    kind: &str,
    port: &str,
    request_id: &str,
) {
    let headers = [
        ("streamType", kind),
        ("port", port),
        ("requestID", request_id),
    ];
    client.open(id, &headers).await;
}

#[tokio::test]
async fn port_forward_pairs_streams_by_request_id() {
    let addr = start_server().await;
    let (head, tcp) = upgrade_request(addr, "/portforward", &["portforward.k8s.io"]).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("x-stream-protocol-version: portforward.k8s.io"),
        "{head}"
    );
    let mut client = Client::new(tcp);
    // two connections to port 80, their streams interleaved
    open_forward(&mut client, 1, "error", "80", "0").await;
    open_forward(&mut client, 3, "error", "80", "1").await;
    open_forward(&mut client, 5, "data", "80", "1").await;
    open_forward(&mut client, 7, "data", "80", "0").await;
    client.data(7, b"ping 0", true).await;
    client.data(5, b"ping 1", true).await;
    assert_eq!(client.read_to_fin(7).await, b"ping 0");
    assert_eq!(client.read_to_fin(5).await, b"ping 1");
    // a port nothing listens on: the reason comes on the error stream
    open_forward(&mut client, 9, "error", "81", "2").await;
    open_forward(&mut client, 11, "data", "81", "2").await;
    let message = String::from_utf8(client.read_to_fin(9).await).unwrap();
    assert_eq!(message, "error forwarding port 81: connection refused");
    // a bad port
    client
        .open(
            13,
            &[
                ("streamType", "error"),
                ("port", "http"),
                ("requestID", "3"),
            ],
        )
        .await;
    let message = String::from_utf8(client.read_to_fin(13).await).unwrap();
    assert!(message.contains("invalid port"), "{message}");
}
