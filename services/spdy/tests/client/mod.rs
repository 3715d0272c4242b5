//! A minimal SPDY/3 client for the tests, acting as client-go's spdystream does: it opens
//! streams, sends data, and sorts what the server sends by stream.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use berth_spdy::compress::{HeaderCompressor, HeaderDecompressor};
use berth_spdy::frame::{self, Frame, FLAG_FIN};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Client<IO> {
    write: WriteHalf<IO>,
    compressor: HeaderCompressor,
    frames: mpsc::UnboundedReceiver<Frame>,
    /// frames received but not yet asked for
    held: VecDeque<Frame>,
}

impl<IO: AsyncRead + AsyncWrite + Send + 'static> Client<IO> {
    pub fn new(io: IO) -> Self {
        let (read, write) = tokio::io::split(io);
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(read, tx));
        Client {
            write,
            compressor: HeaderCompressor::new(),
            frames,
            held: VecDeque::new(),
        }
    }

    pub async fn send(&mut self, frame: Frame) {
        let bytes = frame::encode(&frame, &mut self.compressor).unwrap();
        self.write.write_all(&bytes).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    pub async fn open(&mut self, stream_id: u32, headers: &[(&str, &str)]) {
        self.send(Frame::SynStream {
            stream_id,
            associated_id: 0,
            priority: 0,
            flags: 0,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
        .await;
    }

    pub async fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    /// The next frame that `pick` accepts; others are held for later.
    pub async fn expect(&mut self, pick: impl Fn(&Frame) -> bool) -> Frame {
        if let Some(at) = self.held.iter().position(&pick) {
            return self.held.remove(at).unwrap();
        }
        loop {
            let frame = tokio::time::timeout(WAIT, self.frames.recv())
                .await
                .expect("timed out waiting for a frame")
                .expect("the connection ended");
            if pick(&frame) {
                return frame;
            }
            self.held.push_back(frame);
        }
    }

    /// The next frame, if one comes within `wait`.
    pub async fn maybe_frame(&mut self, wait: Duration) -> Option<Frame> {
        if let Some(frame) = self.held.pop_front() {
            return Some(frame);
        }
        tokio::time::timeout(wait, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// Everything the server sends on `stream_id` up to its FIN.
    pub async fn read_to_fin(&mut self, stream_id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let frame = self
                .expect(|f| matches!(f, Frame::Data { stream_id: id, .. } if *id == stream_id))
                .await;
            let Frame::Data { flags, data, .. } = frame else {
                unreachable!()
            };
            out.extend_from_slice(&data);
            if flags & FLAG_FIN != 0 {
                return out;
            }
        }
    }

    /// Whether the server closed the connection (all frames read first).
    pub async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.frames.recv()).await {
                Ok(None) => return true,
                Ok(Some(frame)) => self.held.push_back(frame),
                Err(_) => return false,
            }
        }
    }
}

async fn read_frames<R: AsyncRead>(read: R, tx: mpsc::UnboundedSender<Frame>) {
    let mut read = std::pin::pin!(read);
    let mut decompressor = HeaderDecompressor::new();
    while let Ok(frame) = frame::read_frame(&mut read, &mut decompressor).await {
        if tx.send(frame).is_err() {
            return;
        }
    }
}
