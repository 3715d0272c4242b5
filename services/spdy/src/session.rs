//! A server-side SPDY/3.1 session over any tokio `AsyncRead + AsyncWrite`.
//!
//! [`Session::serve`] spawns two tasks: a reader that decodes the peer's frames and a writer
//! that owns the connection's write half and the header compressor (so header blocks reach
//! the wire in the order they were compressed). Streams the client opens arrive through
//! [`Session::accept`] as [`Stream`]s — `AsyncRead + AsyncWrite` handles with the SYN_STREAM's
//! headers — already answered with a SYN_REPLY. `shutdown` (or dropping the stream) sends FIN;
//! dropping a stream without reading to its end discards what the peer sends after.
//!
//! Bounds, so that no peer makes the session buffer without limit:
//! - receiving: each stream buffers at most its window (64 KiB by default) plus one frame;
//!   when a stream is full the reader stops reading the connection until the application
//!   consumes (TCP pushes back on the peer), and WINDOW_UPDATEs tell a flow-controlled peer
//!   that room is back. moby/spdystream (the kubelet's and crictl's SPDY) ignores windows
//!   altogether, which is why overrunning a window pushes back rather than resetting.
//! - sending: data waits for the stream's and the session's send windows (SPDY/3.1) once the
//!   peer has shown it does flow control (a WINDOW_UPDATE or SETTINGS_INITIAL_WINDOW_SIZE);
//!   a peer that never does (spdystream) is paced by the connection alone. Frames queued for
//!   the writer are capped too ([`MAX_QUEUED`]): writers and the reader wait for room.
//! - at most [`SessionConfig::max_streams`] open streams; more are refused (REFUSED_STREAM).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, Notify};

use crate::compress::HeaderCompressor;
use crate::frame::{self, goaway, Frame, Headers, FLAG_FIN};

/// The initial flow-control window of SPDY/3.1, for streams and the session.
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
/// The most bytes of frames waiting for the writer.
pub const MAX_QUEUED: usize = 256 * 1024;
/// How long a dropped session may take to write what is queued before it is cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The largest data frame this session writes.
const MAX_CHUNK: usize = 16 * 1024;
const MAX_WINDOW: i64 = 0x7fff_ffff;

/// Tunables of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The receive window of each stream (and of the session): what one stream may buffer.
    pub receive_window: u32,
    /// Open streams allowed at once.
    pub max_streams: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            receive_window: DEFAULT_WINDOW,
            max_streams: 100,
        }
    }
}

#[derive(Debug, Default)]
struct StreamState {
    send_window: i64,
    recv: VecDeque<Bytes>,
    recv_len: usize,
    recv_fin: bool,
    recv_unacked: u32,
    sent_fin: bool,
    reset: Option<u32>,
    handle_dropped: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl StreamState {
    fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    /// Nothing more to do for the stream: its handle is gone and the peer is done with it.
    fn finished(&self) -> bool {
        self.handle_dropped && (self.reset.is_some() || self.recv_fin)
    }
}

#[derive(Debug)]
struct State {
    config: SessionConfig,
    streams: HashMap<u32, StreamState>,
    last_accepted_id: u32,
    session_send_window: i64,
    initial_send_window: i64,
    peer_flow_control: bool,
    session_recv_unacked: u32,
    out: VecDeque<Frame>,
    out_bytes: usize,
    out_waiters: Vec<Waker>,
    /// the writer holds a batch it has not finished writing
    writing: bool,
    going_away: bool,
    shutdown_requested: bool,
    ended: Option<String>,
}

impl State {
    fn enqueue(&mut self, frame: Frame) {
        self.out_bytes += frame_cost(&frame);
        self.out.push_back(frame);
    }

    fn end(&mut self, reason: String) {
        if self.ended.is_none() {
            self.ended = Some(reason);
        }
        for stream in self.streams.values_mut() {
            stream.wake();
        }
        for w in self.out_waiters.drain(..) {
            w.wake();
        }
    }

    /// Counts `n` bytes as consumed by the application and grants the peer more room.
    fn consumed(&mut self, id: u32, n: usize) {
        let half = self.config.receive_window / 2;
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.recv_unacked += n as u32;
            if stream.recv_unacked >= half && !stream.recv_fin && stream.reset.is_none() {
                let delta = std::mem::take(&mut stream.recv_unacked);
                self.enqueue(Frame::WindowUpdate {
                    stream_id: id,
                    delta,
                });
            }
        }
        self.session_recv_unacked += n as u32;
        if self.session_recv_unacked >= half {
            let delta = std::mem::take(&mut self.session_recv_unacked);
            self.enqueue(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            });
        }
    }

    fn remove_if_finished(&mut self, id: u32) {
        if self.streams.get(&id).is_some_and(StreamState::finished) {
            self.streams.remove(&id);
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// wakes the writer task: frames queued, or shutdown asked
    writer_wake: Notify,
    /// wakes the reader task: queue room or stream buffer room
    reader_wake: Notify,
    /// wakes everyone waiting for the end of the connection
    ended: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the connection is closed; returns why.
    async fn ended(&self) -> String {
        loop {
            let notified = self.ended.notified();
            if let Some(reason) = self.lock().ended.clone() {
                return reason;
            }
            notified.await;
        }
    }
}

/// A server-side SPDY session: the streams its client opens.
#[derive(Debug)]
pub struct Session {
    inner: Arc<Inner>,
    incoming: mpsc::UnboundedReceiver<Stream>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Session {
    /// Starts serving SPDY on `io` (two tasks on the current tokio runtime).
    pub fn serve<IO>(io: IO, config: SessionConfig) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                config,
                streams: HashMap::new(),
                last_accepted_id: 0,
                session_send_window: i64::from(DEFAULT_WINDOW),
                initial_send_window: i64::from(DEFAULT_WINDOW),
                peer_flow_control: false,
                session_recv_unacked: 0,
                out: VecDeque::new(),
                out_bytes: 0,
                out_waiters: Vec::new(),
                writing: false,
                going_away: false,
                shutdown_requested: false,
                ended: None,
            }),
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
            ended: Notify::new(),
        });
        let (read_half, write_half) = tokio::io::split(io);
        let (tx, incoming) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(inner.clone(), read_half, tx));
        let writer = tokio::spawn(write_loop(inner.clone(), write_half));
        Session {
            inner,
            incoming,
            tasks: [reader.abort_handle(), writer.abort_handle()],
        }
    }

    /// The next stream the client opens; `None` once the session ended or the client sent
    /// GOAWAY.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Sends GOAWAY, writes what is queued and closes the connection.
    pub fn shutdown(&self) {
        let mut state = self.inner.lock();
        if !state.going_away && state.ended.is_none() {
            let last_good_stream_id = state.last_accepted_id;
            state.enqueue(Frame::GoAway {
                last_good_stream_id,
                status: goaway::OK,
            });
        }
        state.going_away = true;
        state.shutdown_requested = true;
        drop(state);
        self.inner.writer_wake.notify_one();
    }

    /// Drops the connection now, without writing what is queued: for a client that stopped
    /// reading (a graceful [`Session::shutdown`] would wait for it forever).
    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.inner.lock().end("aborted".into());
        self.inner.ended.notify_waiters();
    }

    /// Waits until the connection is closed (by either side); returns why.
    pub async fn closed(&self) -> String {
        self.inner.ended().await
    }
}

impl Drop for Session {
    /// Shuts down gracefully, and drops the connection if that takes over [`SHUTDOWN_GRACE`].
    fn drop(&mut self) {
        self.shutdown();
        if self.inner.lock().ended.is_some() {
            return;
        }
        let (inner, tasks) = (self.inner.clone(), self.tasks.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if tokio::time::timeout(SHUTDOWN_GRACE, inner.ended())
                    .await
                    .is_err()
                {
                    for task in &tasks {
                        task.abort();
                    }
                }
            });
        }
    }
}

/// One stream the client opened: its headers, and its data both ways.
#[derive(Debug)]
pub struct Stream {
    id: u32,
    headers: Headers,
    inner: Arc<Inner>,
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The SYN_STREAM's headers (names lowercase).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of header `name` (compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Resets the stream (RST_STREAM with `status`, e.g. [`crate::frame::rst::CANCEL`]).
    pub fn reset(&self, status: u32) {
        let mut state = self.inner.lock();
        if let Some(stream) = state.streams.get_mut(&self.id) {
            if stream.reset.is_none() {
                stream.reset = Some(status);
                stream.wake();
                state.enqueue(Frame::RstStream {
                    stream_id: self.id,
                    status,
                });
            }
        }
        drop(state);
        self.inner.writer_wake.notify_one();
    }

    fn poll_queue_room(&self, state: &mut State, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(reason) = &state.ended {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("SPDY session ended: {reason}"),
            )));
        }
        if state.out_bytes >= MAX_QUEUED {
            state.out_waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

fn reset_error(status: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("SPDY stream reset (status {status})"),
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let inner = self.inner.clone();
        let mut state = inner.lock();
        let ended = state.ended.clone();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if let Some(chunk) = stream.recv.front_mut() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk.split_to(n));
            if chunk.is_empty() {
                stream.recv.pop_front();
            }
            stream.recv_len -= n;
            state.consumed(self.id, n);
            drop(state);
            inner.reader_wake.notify_one();
            inner.writer_wake.notify_one();
            return Poll::Ready(Ok(()));
        }
        if stream.recv_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(status) = stream.reset {
            return Poll::Ready(Err(reset_error(status)));
        }
        if let Some(reason) = ended {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("SPDY session ended before the stream did: {reason}"),
            )));
        }
        stream.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let inner = self.inner.clone();
        let mut state = inner.lock();
        match self.poll_queue_room(&mut state, cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map_ok(|()| 0),
        }
        let session_window = state.session_send_window;
        let enforce = state.peer_flow_control;
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY stream is closed",
            )));
        };
        if let Some(status) = stream.reset {
            return Poll::Ready(Err(reset_error(status)));
        }
        if stream.sent_fin {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the stream's FIN",
            )));
        }
        let window = if enforce {
            stream.send_window.min(session_window)
        } else {
            MAX_CHUNK as i64
        };
        if window <= 0 {
            stream.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(MAX_CHUNK).min(window as usize);
        stream.send_window -= n as i64;
        state.session_send_window -= n as i64;
        state.enqueue(Frame::Data {
            stream_id: self.id,
            flags: 0,
            data: Bytes::copy_from_slice(&buf[..n]),
        });
        drop(state);
        inner.writer_wake.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.inner.lock();
        if state.out.is_empty() && !state.writing {
            return Poll::Ready(Ok(()));
        }
        if state.ended.is_some() {
            return Poll::Ready(Err(session_ended_error(&state)));
        }
        state.out_waiters.push(cx.waker().clone());
        Poll::Pending
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut state = self.inner.lock();
            if let Some(stream) = state.streams.get_mut(&self.id) {
                if !stream.sent_fin && stream.reset.is_none() {
                    stream.sent_fin = true;
                    state.enqueue(Frame::Data {
                        stream_id: self.id,
                        flags: FLAG_FIN,
                        data: Bytes::new(),
                    });
                    drop(state);
                    self.inner.writer_wake.notify_one();
                }
            }
        }
        self.poll_flush(cx)
    }
}

fn session_ended_error(state: &State) -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        format!(
            "SPDY session ended: {}",
            state.ended.as_deref().unwrap_or("closed")
        ),
    )
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return;
        };
        stream.handle_dropped = true;
        let unread = std::mem::take(&mut stream.recv_len);
        stream.recv.clear();
        let send_fin = !stream.sent_fin && stream.reset.is_none();
        stream.sent_fin = true;
        if send_fin && state.ended.is_none() {
            state.enqueue(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            });
        }
        state.consumed(self.id, unread);
        state.remove_if_finished(self.id);
        drop(state);
        self.inner.writer_wake.notify_one();
        self.inner.reader_wake.notify_one();
    }
}

/// Writes queued frames until the session ends, then closes the write half.
async fn write_loop<W: AsyncWrite>(inner: Arc<Inner>, io: W) {
    let mut io = std::pin::pin!(io);
    let mut compressor = HeaderCompressor::new();
    loop {
        let (batch, shutting_down) = {
            let mut state = inner.lock();
            let batch: Vec<Frame> = state.out.drain(..).collect();
            state.writing = !batch.is_empty();
            let finished = state.shutdown_requested || state.ended.is_some();
            (batch, finished)
        };
        if batch.is_empty() {
            if shutting_down {
                break;
            }
            inner.writer_wake.notified().await;
            continue;
        }
        let mut bytes = Vec::new();
        for frame in &batch {
            match frame::encode(frame, &mut compressor) {
                Ok(encoded) => bytes.extend(encoded),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a SPDY frame that cannot be encoded")
                }
            }
        }
        let result = async {
            io.write_all(&bytes).await?;
            io.flush().await
        }
        .await;
        let mut state = inner.lock();
        let written: usize = batch.iter().map(frame_cost).sum();
        state.writing = false;
        state.out_bytes = state.out_bytes.saturating_sub(written);
        for w in state.out_waiters.drain(..) {
            w.wake();
        }
        if let Err(e) = result {
            state.end(format!("writing the connection: {e}"));
            drop(state);
            inner.ended.notify_waiters();
            inner.reader_wake.notify_one();
            return;
        }
        drop(state);
        inner.reader_wake.notify_one();
    }
    let _ = io.shutdown().await;
    inner.lock().end("closed".into());
    inner.ended.notify_waiters();
    inner.reader_wake.notify_one();
}

/// What a queued frame counts against [`MAX_QUEUED`].
fn frame_cost(frame: &Frame) -> usize {
    match frame {
        Frame::Data { data, .. } => data.len() + 8,
        _ => 32,
    }
}

mod reader;
use reader::read_loop;

// the session's tests drive it with a client over a pipe: tests/session.rs
