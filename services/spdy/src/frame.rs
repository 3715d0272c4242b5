//! SPDY/3 frames (draft 3.1, section 2.2–2.6): their types, parsing and writing.
//!
//! Every frame starts with 8 bytes: a control bit, then either version (15 bits) and type
//! (16 bits), or a stream id (31 bits) for data frames; then flags (8 bits) and a 24-bit
//! length. [`decode`] takes one complete frame and checks every length against what the
//! frame holds; [`read_frame`] reads one from an async reader and refuses lengths over
//! [`MAX_CONTROL_FRAME`] / [`MAX_DATA_FRAME`] before allocating. Header blocks pass through
//! the session's [`HeaderCompressor`]/[`HeaderDecompressor`], in wire order.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::compress::{CompressionError, HeaderCompressor, HeaderDecompressor};

/// The SPDY version this crate speaks (3, with 3.1's session-level flow control).
pub const VERSION: u16 = 3;
/// The largest control frame payload we read (header blocks are compressed: plenty).
pub const MAX_CONTROL_FRAME: usize = 256 * 1024;
/// The largest data frame payload we read in one piece.
pub const MAX_DATA_FRAME: usize = 1024 * 1024;

/// FIN: the sender's last frame on this stream.
pub const FLAG_FIN: u8 = 0x01;
/// UNIDIRECTIONAL (SYN_STREAM): the receiver must not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// SETTINGS ids this crate acts on.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// A header block: names (lowercase) and values, in order. A value may hold several values
/// separated by NUL bytes, as the spec allows.
pub type Headers = Vec<(String, String)>;

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this crate does not know: the spec says to ignore it.
    Unknown {
        frame_type: u16,
    },
}

/// Why bytes are not a valid frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY version {0} is not supported (only 3)")]
    UnsupportedVersion(u16),
    #[error("{kind} frame of {len} bytes is over the limit of {limit}")]
    TooLarge {
        kind: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("malformed {0} frame: {1}")]
    Malformed(&'static str, String),
    #[error("header block: {0}")]
    Compression(#[from] CompressionError),
    #[error("reading the connection: {0}")]
    Io(#[from] std::io::Error),
}

/// The fixed 8 bytes before every payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHead {
    Control {
        version: u16,
        frame_type: u16,
        flags: u8,
        len: usize,
    },
    Data {
        stream_id: u32,
        flags: u8,
        len: usize,
    },
}

impl FrameHead {
    pub fn parse(head: [u8; 8]) -> Self {
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if head[0] & 0x80 != 0 {
            FrameHead::Control {
                version: u16::from_be_bytes([head[0] & 0x7f, head[1]]),
                frame_type: u16::from_be_bytes([head[2], head[3]]),
                flags,
                len,
            }
        } else {
            FrameHead::Data {
                stream_id: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
                flags,
                len,
            }
        }
    }

    pub fn payload_len(&self) -> usize {
        match self {
            FrameHead::Control { len, .. } | FrameHead::Data { len, .. } => *len,
        }
    }

    /// Refuses a version other than 3 and a length over the limits, before any allocation.
    pub fn check(&self) -> Result<(), FrameError> {
        match *self {
            FrameHead::Control { version, len, .. } => {
                if version != VERSION {
                    return Err(FrameError::UnsupportedVersion(version));
                }
                if len > MAX_CONTROL_FRAME {
                    return Err(FrameError::TooLarge {
                        kind: "control",
                        len,
                        limit: MAX_CONTROL_FRAME,
                    });
                }
            }
            FrameHead::Data { len, .. } if len > MAX_DATA_FRAME => {
                return Err(FrameError::TooLarge {
                    kind: "data",
                    len,
                    limit: MAX_DATA_FRAME,
                })
            }
            FrameHead::Data { .. } => {}
        }
        Ok(())
    }
}

/// Reads one frame: the head, then (within the limits) its payload, then decodes it.
pub async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    headers: &mut HeaderDecompressor,
) -> Result<Frame, FrameError> {
    let head = read_head(io).await?;
    read_rest(io, head, headers).await
}

/// Reads the 8 bytes every frame starts with.
pub async fn read_head<R: AsyncRead + Unpin>(io: &mut R) -> Result<FrameHead, FrameError> {
    let mut head = [0u8; 8];
    io.read_exact(&mut head).await?;
    Ok(FrameHead::parse(head))
}

/// Reads the payload `head` announces, once its length passed [`FrameHead::check`], and
/// decodes the frame.
pub async fn read_rest<R: AsyncRead + Unpin>(
    io: &mut R,
    head: FrameHead,
    headers: &mut HeaderDecompressor,
) -> Result<Frame, FrameError> {
    head.check()?;
    let mut payload = vec![0u8; head.payload_len()];
    io.read_exact(&mut payload).await?;
    decode(head, Bytes::from(payload), headers)
}

/// A cursor over a payload that never reads past its end.
struct Cursor<'a> {
    kind: &'static str,
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.bytes.len() < n {
            return Err(FrameError::Malformed(
                self.kind,
                format!("needs {n} more bytes, has {}", self.bytes.len()),
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn stream_id(&mut self) -> Result<u32, FrameError> {
        Ok(self.u32()? & 0x7fff_ffff)
    }

    fn exact_end(&self) -> Result<(), FrameError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Malformed(
                self.kind,
                format!("{} bytes after its fields", self.bytes.len()),
            ))
        }
    }
}

/// Decodes one frame whose payload is complete.
pub fn decode(
    head: FrameHead,
    payload: Bytes,
    headers: &mut HeaderDecompressor,
) -> Result<Frame, FrameError> {
    head.check()?;
    if payload.len() != head.payload_len() {
        return Err(FrameError::Malformed(
            "any",
            format!(
                "payload of {} bytes, head says {}",
                payload.len(),
                head.payload_len()
            ),
        ));
    }
    let (frame_type, flags) = match head {
        FrameHead::Data {
            stream_id, flags, ..
        } => {
            return Ok(Frame::Data {
                stream_id,
                flags,
                data: payload,
            })
        }
        FrameHead::Control {
            frame_type, flags, ..
        } => (frame_type, flags),
    };
    let kind = frame_kind(frame_type);
    let mut c = Cursor {
        kind,
        bytes: &payload,
    };
    let frame = match frame_type {
        TYPE_SYN_STREAM => {
            let stream_id = c.stream_id()?;
            let associated_id = c.stream_id()?;
            let priority = c.take(2)?[0] >> 5;
            let block = headers.decompress(c.take(c.bytes.len())?)?;
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                headers: parse_header_block(&block)?,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            let stream_id = c.stream_id()?;
            let block = headers.decompress(c.take(c.bytes.len())?)?;
            let headers = parse_header_block(&block)?;
            if frame_type == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        TYPE_RST_STREAM => Frame::RstStream {
            stream_id: c.stream_id()?,
            status: c.u32()?,
        },
        TYPE_SETTINGS => {
            let count = c.u32()? as usize;
            if count.checked_mul(8) != Some(c.bytes.len()) {
                return Err(FrameError::Malformed(
                    kind,
                    format!("{count} entries in {} bytes", c.bytes.len()),
                ));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let id_and_flags = c.u32()?;
                entries.push(Setting {
                    flags: (id_and_flags >> 24) as u8,
                    id: id_and_flags & 0x00ff_ffff,
                    value: c.u32()?,
                });
            }
            Frame::Settings { flags, entries }
        }
        TYPE_PING => Frame::Ping { id: c.u32()? },
        TYPE_GOAWAY => Frame::GoAway {
            last_good_stream_id: c.stream_id()?,
            status: c.u32()?,
        },
        TYPE_WINDOW_UPDATE => Frame::WindowUpdate {
            stream_id: c.stream_id()?,
            delta: c.u32()? & 0x7fff_ffff,
        },
        other => return Ok(Frame::Unknown { frame_type: other }),
    };
    c.exact_end()?;
    Ok(frame)
}

fn frame_kind(frame_type: u16) -> &'static str {
    match frame_type {
        TYPE_SYN_STREAM => "SYN_STREAM",
        TYPE_SYN_REPLY => "SYN_REPLY",
        TYPE_RST_STREAM => "RST_STREAM",
        TYPE_SETTINGS => "SETTINGS",
        TYPE_PING => "PING",
        TYPE_GOAWAY => "GOAWAY",
        TYPE_HEADERS => "HEADERS",
        TYPE_WINDOW_UPDATE => "WINDOW_UPDATE",
        _ => "unknown",
    }
}

/// Parses a decompressed header block: a count, then length-prefixed names and values.
pub fn parse_header_block(block: &[u8]) -> Result<Headers, FrameError> {
    let mut c = Cursor {
        kind: "header block",
        bytes: block,
    };
    let count = c.u32()? as usize;
    // every pair takes at least 8 bytes: a count beyond that is a lie, not a reservation
    if count > c.bytes.len() / 8 {
        return Err(FrameError::Malformed(
            "header block",
            format!("{count} pairs in {} bytes", c.bytes.len()),
        ));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let name_len = c.u32()? as usize;
        let name = text(c.take(name_len)?)?;
        if name.is_empty() {
            return Err(FrameError::Malformed("header block", "empty name".into()));
        }
        let value_len = c.u32()? as usize;
        let value = text(c.take(value_len)?)?;
        out.push((name.to_ascii_lowercase(), value));
    }
    c.exact_end()?;
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, FrameError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| FrameError::Malformed("header block", "a name or value is not UTF-8".into()))
}

/// Writes a header block (uncompressed).
pub fn encode_header_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn control_head(out: &mut Vec<u8>, frame_type: u16, flags: u8, len: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
}

/// Encodes a frame for the wire, compressing its header block (if any) with `headers`.
/// Fails only when a payload would not fit SPDY's 24-bit length.
pub fn encode(frame: &Frame, headers: &mut HeaderCompressor) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    let mut payload = Vec::new();
    let (frame_type, flags) = match frame {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            check_len("data", data.len(), 0xff_ffff)?;
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.push(*flags);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
            return Ok(out);
        }
        Frame::SynStream {
            stream_id,
            associated_id,
            priority,
            flags,
            headers: block,
        } => {
            payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&(associated_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&[(priority & 0x07) << 5, 0]);
            payload.extend(headers.compress(&encode_header_block(block))?);
            (TYPE_SYN_STREAM, *flags)
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers: block,
        }
        | Frame::Headers {
            stream_id,
            flags,
            headers: block,
        } => {
            payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend(headers.compress(&encode_header_block(block))?);
            let frame_type = if matches!(frame, Frame::SynReply { .. }) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            (frame_type, *flags)
        }
        Frame::RstStream { stream_id, status } => {
            payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&status.to_be_bytes());
            (TYPE_RST_STREAM, 0)
        }
        Frame::Settings { flags, entries } => {
            payload.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for entry in entries {
                let id_and_flags = (u32::from(entry.flags) << 24) | (entry.id & 0x00ff_ffff);
                payload.extend_from_slice(&id_and_flags.to_be_bytes());
                payload.extend_from_slice(&entry.value.to_be_bytes());
            }
            (TYPE_SETTINGS, *flags)
        }
        Frame::Ping { id } => {
            payload.extend_from_slice(&id.to_be_bytes());
            (TYPE_PING, 0)
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            payload.extend_from_slice(&(last_good_stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&status.to_be_bytes());
            (TYPE_GOAWAY, 0)
        }
        Frame::WindowUpdate { stream_id, delta } => {
            payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            (TYPE_WINDOW_UPDATE, 0)
        }
        Frame::Unknown { frame_type } => (*frame_type, 0),
    };
    check_len(frame_kind(frame_type), payload.len(), 0xff_ffff)?;
    control_head(&mut out, frame_type, flags, payload.len());
    out.extend(payload);
    Ok(out)
}

fn check_len(kind: &'static str, len: usize, limit: usize) -> Result<(), FrameError> {
    if len > limit {
        return Err(FrameError::TooLarge { kind, len, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
