//! A gzip writer that does not spend time on what does not compress.
//!
//! Layers made here (commit, and builds through commit) are gzip, as registries and Docker
//! expect. Compressing incompressible data (media, archives, random bytes) costs the most
//! and saves nothing, so each 256 KiB piece is first sampled: a 4 KiB sample that deflate
//! cannot shrink by 5% sends the piece as stored deflate blocks (a copy and a CRC), anything
//! else is deflated at level 1. Switching is done inside one deflate stream: the compressor
//! is flushed to a byte boundary (a sync flush) before stored blocks, and starts afresh
//! (no history, so no reference reaches across them) after them. The output is one ordinary
//! gzip member any reader takes.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

use std::io::{self, Write};

const PIECE: usize = 256 << 10;
const SAMPLE: usize = 4 << 10;

#[derive(Debug)]
pub struct AdaptiveGzip<W: Write> {
    inner: W,
    deflate: Compress,
    probe: Compress,
    scratch: Vec<u8>,
    out: Vec<u8>,
    crc: Crc,
    stored: bool,
    started: bool,
}

fn deflate_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("deflate: {e}"))
}

impl<W: Write> AdaptiveGzip<W> {
    pub fn new(inner: W) -> AdaptiveGzip<W> {
        AdaptiveGzip {
            inner,
            deflate: Compress::new(Compression::fast(), false),
            probe: Compress::new(Compression::fast(), false),
            scratch: Vec::with_capacity(SAMPLE + 1024),
            out: Vec::with_capacity(PIECE + 4096),
            crc: Crc::new(),
            stored: false,
            started: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            // magic, deflate, no flags, no mtime, no extra flags, OS unknown
            self.inner
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        }
        Ok(())
    }

    /// Whether deflate can shrink a sample of `piece` by at least 5%.
    fn compresses(&mut self, piece: &[u8]) -> io::Result<bool> {
        let sample = &piece[..piece.len().min(SAMPLE)];
        self.probe.reset();
        self.scratch.clear();
        self.probe
            .compress_vec(sample, &mut self.scratch, FlushCompress::Finish)
            .map_err(|e| deflate_error(format!("probe {e}")))?;
        Ok((self.scratch.len() as f64) < sample.len() as f64 * 0.95)
    }

    /// Runs deflate over `input` with `flush`, writing everything it produces.
    fn run(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<()> {
        loop {
            self.out.clear();
            self.out.reserve(input.len() + 4096);
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut self.out, flush)
                .map_err(deflate_error)?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            self.inner.write_all(&self.out)?;
            let room_left = self.out.len() < self.out.capacity();
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                FlushCompress::None => input.is_empty(),
                _ => input.is_empty() && room_left,
            };
            if done {
                return Ok(());
            }
        }
    }

    /// Ends the gzip member (trailer: CRC-32 and length) and gives back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header()?;
        if self.stored {
            // The last block: an empty final stored block.
            self.inner.write_all(&[1, 0, 0, 0xff, 0xff])?;
        } else {
            self.run(&[], FlushCompress::Finish)?;
        }
        let (crc, len) = (self.crc.sum(), self.crc.amount());
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&len.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for AdaptiveGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.header()?;
        for piece in buf.chunks(PIECE) {
            let store = !self.compresses(piece)?;
            if store && !self.stored {
                // Byte-align what the compressor has produced so far.
                self.run(&[], FlushCompress::Sync)?;
                self.stored = true;
            } else if !store && self.stored {
                self.deflate.reset();
                self.stored = false;
            }
            self.crc.update(piece);
            if store {
                for block in piece.chunks(u16::MAX as usize) {
                    let len = block.len() as u16;
                    let mut head = [0u8; 5];
                    head[1..3].copy_from_slice(&len.to_le_bytes());
                    head[3..5].copy_from_slice(&(!len).to_le_bytes());
                    self.inner.write_all(&head)?;
                    self.inner.write_all(block)?;
                }
            } else {
                self.run(piece, FlushCompress::None)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8], writes: usize) -> Vec<u8> {
        let mut gz = AdaptiveGzip::new(Vec::new());
        for part in data.chunks(data.len().div_ceil(writes).max(1)) {
            gz.write_all(part).unwrap();
        }
        let out = gz.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        out
    }

    fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn text_compresses_and_noise_is_stored() {
        let text = b"the same line again and again\n".repeat(40_000);
        let out = roundtrip(&text, 7);
        assert!(
            out.len() < text.len() / 10,
            "{} of {}",
            out.len(),
            text.len()
        );
        let n = noise(3 << 20);
        let out = roundtrip(&n, 3);
        assert!(out.len() < n.len() + n.len() / 100 + 64, "{}", out.len());
    }

    #[test]
    fn mixed_pieces_and_odd_writes_read_back() {
        let mut data = noise(700 << 10);
        data.extend(b"abcabcabc".repeat(100_000));
        data.extend(noise(300 << 10));
        data.extend(vec![0u8; 1 << 20]);
        roundtrip(&data, 1);
        roundtrip(&data, 97);
        roundtrip(&[], 1);
        roundtrip(b"x", 1);
    }
}
