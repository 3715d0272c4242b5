//! Hostile archives for tests (here and in the crates that read archives with [`Reader`],
//! feature `hostile`), streamed so that a 1 GiB header never sits in memory.
//!
//! [`Reader`]: crate::Reader

use std::collections::VecDeque;
use std::io::{self, Read};

/// A tar stream made of literal blocks and long runs of one byte.
#[derive(Debug, Default)]
pub struct Stream {
    parts: VecDeque<(Vec<u8>, u8, u64)>,
    /// Bytes handed out so far.
    pub read: u64,
}

impl Stream {
    pub fn bytes(mut self, b: &[u8]) -> Stream {
        self.parts.push_back((b.to_vec(), 0, 0));
        self
    }

    pub fn run(mut self, byte: u8, n: u64) -> Stream {
        if n > 0 {
            self.parts.push_back((Vec::new(), byte, n));
        }
        self
    }

    /// A header block of `kind` named `name` declaring `size` bytes.
    pub fn header(self, kind: tar::EntryType, name: &str, size: u64) -> Stream {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(name).unwrap();
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        self.bytes(h.as_bytes())
    }

    /// An extension header of `kind` whose `size` bytes of data are all `byte`, padded.
    pub fn extension(self, kind: tar::EntryType, size: u64, byte: u8) -> Stream {
        self.header(kind, "././@LongLink", size)
            .run(byte, size)
            .run(0, (512 - size % 512) % 512)
    }

    /// A one-byte file and the end-of-archive blocks.
    pub fn end(self) -> Stream {
        self.header(tar::EntryType::Regular, "after", 1)
            .run(b'x', 1)
            .run(0, 511 + 1024)
    }

    /// The tar of a 1 GiB GNU long name: a few MB gzipped.
    pub fn long_name_gib() -> Stream {
        Stream::default()
            .extension(tar::EntryType::GNULongName, 1 << 30, b'a')
            .end()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some((lit, byte, n)) = self.parts.front_mut() else {
            return Ok(0);
        };
        let k = if !lit.is_empty() {
            let k = lit.len().min(buf.len());
            buf[..k].copy_from_slice(&lit[..k]);
            lit.drain(..k);
            k
        } else {
            let k = buf.len().min(usize::try_from(*n).unwrap_or(usize::MAX));
            buf[..k].fill(*byte);
            *n -= k as u64;
            k
        };
        if lit.is_empty() && *n == 0 {
            self.parts.pop_front();
        }
        self.read += k as u64;
        Ok(k)
    }
}

/// A GNU sparse (`S`) entry of `real_size` bytes holding `segments` (offset, data).
pub fn sparse(name: &str, real_size: u64, segments: &[(u64, &[u8])]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path(name).unwrap();
    h.set_mode(0o644);
    let stored: u64 = segments.iter().map(|(_, d)| d.len() as u64).sum();
    h.set_size(stored);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_real_size(real_size);
    for (slot, (off, data)) in gnu.sparse.iter_mut().zip(segments) {
        slot.set_offset(*off);
        slot.set_length(data.len() as u64);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    for (_, d) in segments {
        out.extend_from_slice(d);
    }
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}
