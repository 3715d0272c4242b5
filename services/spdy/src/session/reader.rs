//! The session's reader task: decodes the client's frames and applies them to the session.
//!
//! A frame the session cannot make sense of as a whole (a wrong version, a header block that
//! does not inflate, a malformed control frame) ends the session with GOAWAY PROTOCOL_ERROR:
//! the header compression state is shared by every stream, so nothing after it can be
//! trusted. Errors of one stream (data after its FIN, a window overflow, an oversized data
//! frame) reset that stream alone.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::{Inner, State, Stream, StreamState, MAX_QUEUED, MAX_WINDOW};
use crate::compress::HeaderDecompressor;
use crate::frame::{
    self, goaway, rst, Frame, FrameError, FrameHead, Headers, FLAG_FIN, FLAG_UNIDIRECTIONAL,
    MAX_DATA_FRAME, SETTINGS_INITIAL_WINDOW_SIZE,
};

/// Why the session must end: the GOAWAY status to send and a reason for logs.
struct SessionError(u32, String);

pub(super) async fn read_loop<R: AsyncRead>(
    inner: Arc<Inner>,
    io: R,
    incoming: mpsc::UnboundedSender<Stream>,
) {
    let mut io = std::pin::pin!(io);
    let mut decompressor = HeaderDecompressor::new();
    let mut incoming = Some(incoming);
    let reason = loop {
        if let Err(reason) = wait_for_queue_room(&inner).await {
            break reason;
        }
        let read = tokio::select! {
            read = next_frame(&mut io, &mut decompressor) => read,
            reason = inner.ended() => break reason,
        };
        let frame = match read {
            Ok(Incoming::Frame(frame)) => frame,
            Ok(Incoming::Oversized(stream_id)) => {
                let mut state = inner.lock();
                reset(&mut state, stream_id, rst::FRAME_TOO_LARGE);
                drop(state);
                inner.writer_wake.notify_one();
                continue;
            }
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break "the client closed the connection".to_string();
            }
            Err(FrameError::Io(e)) => break format!("reading the connection: {e}"),
            Err(e) => {
                let status = goaway::PROTOCOL_ERROR;
                break go_away(&inner, SessionError(status, e.to_string()));
            }
        };
        if let Err(e) = apply(&inner, frame, &mut incoming).await {
            break go_away(&inner, e);
        }
    };
    tracing::debug!(%reason, "SPDY session reader done");
    drop(incoming);
    let mut state = inner.lock();
    state.end(reason);
    drop(state);
    inner.writer_wake.notify_one();
    inner.ended.notify_waiters();
}

/// What the reader took off the connection.
enum Incoming {
    Frame(Frame),
    /// a data frame over [`MAX_DATA_FRAME`] for this stream, skipped
    Oversized(u32),
}

/// Reads the next frame; an oversized data frame is skipped, to reset its stream alone.
async fn next_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    decompressor: &mut HeaderDecompressor,
) -> Result<Incoming, FrameError> {
    let head = frame::read_head(io).await?;
    if let FrameHead::Data { stream_id, len, .. } = head {
        if len > MAX_DATA_FRAME {
            tokio::io::copy(&mut io.take(len as u64), &mut tokio::io::sink()).await?;
            return Ok(Incoming::Oversized(stream_id));
        }
    }
    frame::read_rest(io, head, decompressor)
        .await
        .map(Incoming::Frame)
}

async fn wait_for_queue_room(inner: &Inner) -> Result<(), String> {
    loop {
        let notified = inner.reader_wake.notified();
        {
            let state = inner.lock();
            if let Some(reason) = &state.ended {
                return Err(reason.clone());
            }
            if state.out_bytes < MAX_QUEUED {
                return Ok(());
            }
        }
        notified.await;
    }
}

fn go_away(inner: &Inner, SessionError(status, reason): SessionError) -> String {
    tracing::debug!(%reason, "SPDY session error");
    let mut state = inner.lock();
    let last_good_stream_id = state.last_accepted_id;
    state.enqueue(Frame::GoAway {
        last_good_stream_id,
        status,
    });
    state.going_away = true;
    state.shutdown_requested = true;
    drop(state);
    inner.writer_wake.notify_one();
    format!("protocol error: {reason}")
}

fn reset(state: &mut State, stream_id: u32, status: u32) {
    if let Some(stream) = state.streams.get_mut(&stream_id) {
        stream.reset = Some(status);
        stream.recv.clear();
        stream.recv_len = 0;
        stream.wake();
        state.remove_if_finished(stream_id);
    }
    state.enqueue(Frame::RstStream { stream_id, status });
}

/// Applies one frame of the client to the session.
async fn apply(
    inner: &Arc<Inner>,
    frame: Frame,
    incoming: &mut Option<mpsc::UnboundedSender<Stream>>,
) -> Result<(), SessionError> {
    if let Frame::Data {
        stream_id,
        flags,
        data,
    } = frame
    {
        return receive_data(inner, stream_id, flags, data).await;
    }
    let mut state = inner.lock();
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            let opened = open_stream(inner, &mut state, stream_id, flags, headers, incoming)?;
            drop(state);
            inner.writer_wake.notify_one();
            if let (Some(stream), Some(sender)) = (opened, incoming.as_ref()) {
                // a refused send drops the handle (outside the lock), which ends the stream
                let _ = sender.send(stream);
            }
            return Ok(());
        }
        Frame::SynReply { stream_id, .. } => reset(&mut state, stream_id, rst::PROTOCOL_ERROR),
        Frame::Headers {
            stream_id, flags, ..
        } => {
            if flags & FLAG_FIN != 0 {
                if let Some(stream) = state.streams.get_mut(&stream_id) {
                    stream.recv_fin = true;
                    stream.wake();
                }
                state.remove_if_finished(stream_id);
            }
        }
        Frame::RstStream { stream_id, status } => {
            if let Some(stream) = state.streams.get_mut(&stream_id) {
                stream.reset = Some(status);
                stream.wake();
            }
            state.remove_if_finished(stream_id);
        }
        Frame::Settings { entries, .. } => {
            for entry in entries {
                if entry.id == SETTINGS_INITIAL_WINDOW_SIZE {
                    set_initial_window(&mut state, entry.value)?;
                }
            }
        }
        Frame::Ping { id } => {
            // odd ids are the client's: echo them; even ones would answer ours (we send none)
            if id % 2 == 1 {
                state.enqueue(Frame::Ping { id });
            }
        }
        Frame::GoAway { .. } => {
            state.going_away = true;
            *incoming = None;
        }
        Frame::WindowUpdate { stream_id, delta } => window_update(&mut state, stream_id, delta)?,
        Frame::Data { .. } | Frame::Unknown { .. } => {}
    }
    drop(state);
    inner.writer_wake.notify_one();
    Ok(())
}

/// Registers a stream the client opens and answers it; the handle goes to the application.
fn open_stream(
    inner: &Arc<Inner>,
    state: &mut State,
    stream_id: u32,
    flags: u8,
    headers: Headers,
    incoming: &Option<mpsc::UnboundedSender<Stream>>,
) -> Result<Option<Stream>, SessionError> {
    if stream_id == 0 || stream_id & 1 == 0 || stream_id <= state.last_accepted_id {
        let reason = if state.streams.contains_key(&stream_id) {
            format!("SYN_STREAM for stream {stream_id}, which is open")
        } else {
            format!(
                "SYN_STREAM with stream id {stream_id} (client ids are odd and increasing, last {})",
                state.last_accepted_id
            )
        };
        return Err(SessionError(goaway::PROTOCOL_ERROR, reason));
    }
    state.last_accepted_id = stream_id;
    if incoming.is_none() || state.going_away || state.streams.len() >= state.config.max_streams {
        state.enqueue(Frame::RstStream {
            stream_id,
            status: rst::REFUSED_STREAM,
        });
        return Ok(None);
    }
    let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
    state.streams.insert(
        stream_id,
        StreamState {
            send_window: state.initial_send_window,
            recv_fin: flags & FLAG_FIN != 0,
            sent_fin: unidirectional,
            ..StreamState::default()
        },
    );
    if !unidirectional {
        state.enqueue(Frame::SynReply {
            stream_id,
            flags: 0,
            headers: Vec::new(),
        });
    }
    Ok(Some(Stream {
        id: stream_id,
        headers,
        inner: inner.clone(),
    }))
}

/// SETTINGS_INITIAL_WINDOW_SIZE: moves every stream's send window by the difference.
fn set_initial_window(state: &mut State, value: u32) -> Result<(), SessionError> {
    let value = i64::from(value);
    if value > MAX_WINDOW {
        return Err(SessionError(
            goaway::PROTOCOL_ERROR,
            format!("initial window of {value} bytes is over 2^31-1"),
        ));
    }
    let delta = value - state.initial_send_window;
    state.initial_send_window = value;
    state.peer_flow_control = true;
    for stream in state.streams.values_mut() {
        stream.send_window += delta;
        stream.wake();
    }
    Ok(())
}

/// WINDOW_UPDATE: more room to send, on one stream (or the session for stream 0).
fn window_update(state: &mut State, stream_id: u32, delta: u32) -> Result<(), SessionError> {
    state.peer_flow_control = true;
    let delta = i64::from(delta);
    if stream_id == 0 {
        state.session_send_window += delta;
        if state.session_send_window > MAX_WINDOW {
            return Err(SessionError(
                goaway::PROTOCOL_ERROR,
                "the session's send window overflowed 2^31-1".into(),
            ));
        }
        for stream in state.streams.values_mut() {
            stream.wake();
        }
        return Ok(());
    }
    let Some(stream) = state.streams.get_mut(&stream_id) else {
        return Ok(());
    };
    stream.send_window += delta;
    if stream.send_window > MAX_WINDOW {
        reset(state, stream_id, rst::FLOW_CONTROL_ERROR);
        return Ok(());
    }
    stream.wake();
    Ok(())
}

/// DATA: buffers it for the stream's reader, waiting (and so pushing back on the client)
/// while the stream holds a full window.
async fn receive_data(
    inner: &Inner,
    stream_id: u32,
    flags: u8,
    data: Bytes,
) -> Result<(), SessionError> {
    loop {
        let notified = inner.reader_wake.notified();
        {
            let mut state = inner.lock();
            let window = state.config.receive_window as usize;
            let last_accepted = state.last_accepted_id;
            let Some(stream) = state.streams.get_mut(&stream_id) else {
                if stream_id > last_accepted || stream_id & 1 == 0 {
                    reset(&mut state, stream_id, rst::INVALID_STREAM);
                    drop(state);
                    inner.writer_wake.notify_one();
                }
                // else: a stream that is over; late data is dropped
                return Ok(());
            };
            if stream.reset.is_some() {
                return Ok(());
            }
            if stream.recv_fin {
                reset(&mut state, stream_id, rst::STREAM_ALREADY_CLOSED);
                drop(state);
                inner.writer_wake.notify_one();
                return Ok(());
            }
            let fits = stream.recv_len == 0 || stream.recv_len + data.len() <= window;
            if stream.handle_dropped || fits {
                let len = data.len();
                let dropped = stream.handle_dropped;
                if !dropped && !data.is_empty() {
                    stream.recv_len += len;
                    stream.recv.push_back(data);
                }
                if flags & FLAG_FIN != 0 {
                    stream.recv_fin = true;
                }
                stream.wake();
                if dropped {
                    state.consumed(stream_id, len);
                    state.remove_if_finished(stream_id);
                }
                drop(state);
                inner.writer_wake.notify_one();
                return Ok(());
            }
            if let Some(reason) = &state.ended {
                return Err(SessionError(goaway::OK, reason.clone()));
            }
        }
        notified.await;
    }
}
