//! The server session against a test client over an in-memory pipe: streams, half-close,
//! RST, PING, GOAWAY, flow control both ways, and hostile input.

mod client;

use std::time::Duration;

use berth_spdy::frame::{goaway, rst, Frame, Setting, FLAG_FIN, SETTINGS_INITIAL_WINDOW_SIZE};
use berth_spdy::session::{Session, SessionConfig};
use client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type TestClient = Client<tokio::io::DuplexStream>;

/// The next RST_STREAM the client gets, as (stream, status).
async fn next_reset(client: &mut TestClient) -> (u32, u32) {
    match client
        .expect(|f| matches!(f, Frame::RstStream { .. }))
        .await
    {
        Frame::RstStream { stream_id, status } => (stream_id, status),
        _ => unreachable!(),
    }
}

/// The status of the next GOAWAY the client gets.
async fn next_goaway(client: &mut TestClient) -> u32 {
    match client.expect(|f| matches!(f, Frame::GoAway { .. })).await {
        Frame::GoAway { status, .. } => status,
        _ => unreachable!(),
    }
}

/// Sends SETTINGS_INITIAL_WINDOW_SIZE (which turns the session's send windows on).
async fn set_initial_window(client: &mut TestClient, value: u32) {
    client
        .send(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value,
            }],
        })
        .await;
}

/// Reads data frames until at least `want` bytes came; returns how many did.
async fn receive_at_least(client: &mut TestClient, want: usize) -> usize {
    let mut received = 0;
    while received < want {
        if let Frame::Data { data, .. } = client.expect(|f| matches!(f, Frame::Data { .. })).await {
            received += data.len();
        }
    }
    received
}

fn pair() -> (Session, TestClient) {
    let (server, client) = tokio::io::duplex(64 * 1024);
    (
        Session::serve(server, SessionConfig::default()),
        Client::new(client),
    )
}

#[tokio::test]
async fn streams_carry_data_both_ways_with_half_close() {
    let (mut session, mut client) = pair();
    client.open(1, &[("streamType", "stdin"), ("x", "y")]).await;
    let mut stream = session.accept().await.unwrap();
    assert_eq!(stream.id(), 1);
    assert_eq!(stream.header("streamtype"), Some("stdin"));
    assert!(matches!(
        client.expect(|f| matches!(f, Frame::SynReply { .. })).await,
        Frame::SynReply { stream_id: 1, .. }
    ));
    client.data(1, b"hello ", false).await;
    client.data(1, b"world", true).await;
    let mut got = String::new();
    stream.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "hello world");
    // the client's side is closed; ours is still open
    stream.write_all(b"answer").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(client.read_to_fin(1).await, b"answer");
    // a write after FIN is refused, not sent
    assert!(stream.write_all(b"late").await.is_err());
}

#[tokio::test]
async fn pings_are_answered_and_goaway_ends_accepting() {
    let (mut session, mut client) = pair();
    client.send(Frame::Ping { id: 7 }).await;
    assert_eq!(
        client.expect(|f| matches!(f, Frame::Ping { .. })).await,
        Frame::Ping { id: 7 }
    );
    client
        .send(Frame::GoAway {
            last_good_stream_id: 0,
            status: goaway::OK,
        })
        .await;
    assert!(session.accept().await.is_none());
    // a stream opened after GOAWAY is refused
    client.open(1, &[("streamtype", "data")]).await;
    assert_eq!(next_reset(&mut client).await, (1, rst::REFUSED_STREAM));
}

#[tokio::test]
async fn resets_reach_both_sides() {
    let (mut session, mut client) = pair();
    client.open(1, &[]).await;
    client.open(3, &[]).await;
    let mut first = session.accept().await.unwrap();
    let second = session.accept().await.unwrap();
    client
        .send(Frame::RstStream {
            stream_id: 1,
            status: rst::CANCEL,
        })
        .await;
    let mut buf = [0u8; 8];
    let err = first.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    second.reset(rst::INTERNAL_ERROR);
    assert_eq!(next_reset(&mut client).await, (3, rst::INTERNAL_ERROR));
    // data for a stream never opened
    client.data(99, b"x", false).await;
    assert_eq!(next_reset(&mut client).await, (99, rst::INVALID_STREAM));
}

#[tokio::test]
async fn data_after_fin_resets_the_stream() {
    let (mut session, mut client) = pair();
    client.open(1, &[]).await;
    let _stream = session.accept().await.unwrap();
    client.data(1, b"a", true).await;
    client.data(1, b"b", false).await;
    assert_eq!(
        next_reset(&mut client).await,
        (1, rst::STREAM_ALREADY_CLOSED)
    );
}

#[tokio::test]
async fn a_writer_waits_for_the_window_and_resumes_on_window_update() {
    let (mut session, mut client) = pair();
    // the client does flow control, with a small window
    set_initial_window(&mut client, 1000).await;
    client.open(1, &[]).await;
    let mut stream = session.accept().await.unwrap();
    let writer = tokio::spawn(async move {
        stream.write_all(&[7u8; 3000]).await.unwrap();
        stream.shutdown().await.unwrap();
        stream
    });
    let received = receive_at_least(&mut client, 1000).await;
    assert_eq!(received, 1000);
    // the window is spent: nothing more comes
    let more = client.maybe_frame(Duration::from_millis(300)).await;
    assert!(
        !matches!(more, Some(Frame::Data { .. })),
        "sent past the window: {more:?}"
    );
    assert!(!writer.is_finished());
    client
        .send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 5000,
        })
        .await;
    let rest = client.read_to_fin(1).await;
    assert_eq!(rest.len(), 2000);
    writer.await.unwrap();
}

#[tokio::test]
async fn the_session_window_limits_every_stream() {
    let (mut session, mut client) = pair();
    // a session window update turns flow control on; the session window is 64 KiB + 0
    client
        .send(Frame::WindowUpdate {
            stream_id: 0,
            delta: 1,
        })
        .await;
    set_initial_window(&mut client, 1 << 20).await;
    client.open(1, &[]).await;
    let mut stream = session.accept().await.unwrap();
    let writer = tokio::spawn(async move {
        stream.write_all(&vec![1u8; 100_000]).await.unwrap();
        stream.shutdown().await.unwrap();
        stream
    });
    let received = receive_at_least(&mut client, 65_537).await;
    assert_eq!(received, 65_537, "sent past the session window");
    let more = client.maybe_frame(Duration::from_millis(300)).await;
    assert!(!matches!(more, Some(Frame::Data { .. })), "{more:?}");
    client
        .send(Frame::WindowUpdate {
            stream_id: 0,
            delta: 100_000,
        })
        .await;
    assert_eq!(client.read_to_fin(1).await.len(), 100_000 - 65_537);
    writer.await.unwrap();
}

#[tokio::test]
async fn consumed_data_is_granted_back_with_window_updates() {
    let (mut session, mut client) = pair();
    client.open(1, &[]).await;
    let mut stream = session.accept().await.unwrap();
    for _ in 0..3 {
        client.data(1, &[0u8; 16 * 1024], false).await;
    }
    let mut buf = vec![0u8; 48 * 1024];
    stream.read_exact(&mut buf).await.unwrap();
    let update = client
        .expect(|f| matches!(f, Frame::WindowUpdate { stream_id: 1, .. }))
        .await;
    assert!(matches!(update, Frame::WindowUpdate { delta, .. } if delta >= 32 * 1024));
    client
        .expect(|f| matches!(f, Frame::WindowUpdate { stream_id: 0, .. }))
        .await;
}

#[tokio::test]
async fn a_slow_reader_pushes_back_instead_of_buffering() {
    // a client that ignores windows (as spdystream does) sends 1 MiB to a stream nobody reads
    let (server, client_io) = tokio::io::duplex(16 * 1024);
    let mut session = Session::serve(server, SessionConfig::default());
    let mut client = Client::new(client_io);
    client.open(1, &[]).await;
    let mut stream = session.accept().await.unwrap();
    let sender = tokio::spawn(async move {
        for _ in 0..64 {
            client.data(1, &[9u8; 16 * 1024], false).await;
        }
        client.data(1, b"", true).await;
        client
    });
    // the session holds at most a window and a frame: the sender is stuck until we read
    let more = tokio::time::timeout(Duration::from_millis(300), async {
        while !sender.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        more.is_err(),
        "1 MiB was buffered for a stream nobody reads"
    );
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.unwrap();
    assert_eq!(all.len(), 1024 * 1024);
    sender.await.unwrap();
}

#[tokio::test]
async fn hostile_input_ends_the_session_with_goaway() {
    // an even (server-side) stream id from the client
    let (_session, mut client) = pair();
    client.open(2, &[]).await;
    assert_eq!(next_goaway(&mut client).await, goaway::PROTOCOL_ERROR);
    assert!(client.closed().await);

    // SPDY/2
    let (_session, mut client) = pair();
    client
        .send_raw(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
        .await;
    assert_eq!(next_goaway(&mut client).await, goaway::PROTOCOL_ERROR);

    // a header block that is not zlib
    let (_session, mut client) = pair();
    client
        .send_raw(&[
            0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, b'n', b'o', b'p', b'e',
        ])
        .await;
    assert_eq!(next_goaway(&mut client).await, goaway::PROTOCOL_ERROR);
}

#[tokio::test]
async fn an_oversized_data_frame_resets_its_stream_only() {
    let (mut session, mut client) = pair();
    client.open(1, &[]).await;
    let _stream = session.accept().await.unwrap();
    let len: u32 = 2 * 1024 * 1024;
    let mut frame = vec![0, 0, 0, 1, 0];
    frame.extend_from_slice(&len.to_be_bytes()[1..]);
    frame.resize(8 + len as usize, 0);
    client.send_raw(&frame).await;
    assert_eq!(next_reset(&mut client).await, (1, rst::FRAME_TOO_LARGE));
    // the session goes on
    client.send(Frame::Ping { id: 1 }).await;
    client.expect(|f| matches!(f, Frame::Ping { .. })).await;
}

#[tokio::test]
async fn shutdown_sends_goaway_and_closes() {
    let (session, mut client) = pair();
    session.shutdown();
    assert_eq!(
        client.expect(|f| matches!(f, Frame::GoAway { .. })).await,
        Frame::GoAway {
            last_good_stream_id: 0,
            status: goaway::OK
        }
    );
    assert!(client.closed().await);
    assert_eq!(session.closed().await, "closed");
}

#[tokio::test]
async fn abort_drops_a_connection_whose_client_stopped_reading() {
    let (server, mut client_io) = tokio::io::duplex(64);
    let mut session = Session::serve(server, SessionConfig::default());
    // 100 PINGs, whose answers the client never reads: they stall the session's writer
    let mut pings = Vec::new();
    for id in 0..100u32 {
        pings.extend_from_slice(&[0x80, 3, 0, 6, 0, 0, 0, 4]);
        pings.extend_from_slice(&(2 * id + 1).to_be_bytes());
    }
    client_io.write_all(&pings).await.unwrap();
    session.shutdown();
    let graceful = tokio::time::timeout(Duration::from_millis(200), session.closed()).await;
    assert!(
        graceful.is_err(),
        "the answers cannot all have been written"
    );
    session.abort();
    assert_eq!(session.closed().await, "aborted");
    assert!(session.accept().await.is_none());
}

#[tokio::test]
async fn fin_on_syn_stream_and_headers_ends_the_clients_side() {
    let (mut session, mut client) = pair();
    client
        .send(Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 0,
            flags: FLAG_FIN,
            headers: vec![("streamtype".into(), "error".into())],
        })
        .await;
    let mut first = session.accept().await.unwrap();
    let mut got = Vec::new();
    first.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty());
    // its other direction is open
    first.write_all(b"status").await.unwrap();
    drop(first);
    assert_eq!(client.read_to_fin(1).await, b"status");

    client.open(3, &[]).await;
    let mut second = session.accept().await.unwrap();
    client
        .send(Frame::Headers {
            stream_id: 3,
            flags: FLAG_FIN,
            headers: vec![("trailer".into(), "x".into())],
        })
        .await;
    let mut got = Vec::new();
    second.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty());
}
