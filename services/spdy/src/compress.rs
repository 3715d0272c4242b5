//! Header-block compression: one zlib stream per direction for the whole session, primed with
//! SPDY/3's dictionary, a SYNC flush after every block (SPDY/3 section 2.6.10.1).
//!
//! Decompression is bounded: a block that inflates past [`MAX_HEADER_BLOCK`] is refused, so a
//! small hostile frame cannot make the session allocate without limit.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::dictionary::header_dictionary;

/// The largest decompressed header block we accept.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// The Adler-32 of SPDY/3's dictionary: the id a header stream's zlib header announces.
pub const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

/// Why a header block could not be compressed or decompressed.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("header block is not valid zlib data: {0}")]
    Corrupt(String),
    #[error("header block is compressed with dictionary id {0:#x}, not SPDY/3's")]
    WrongDictionary(u32),
    #[error("header block inflates past {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
}

/// The compressing side of a session's header stream.
#[derive(Debug)]
pub struct HeaderCompressor {
    zlib: Compress,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    pub fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(header_dictionary())
            .expect("a fresh zlib stream accepts a dictionary");
        Self { zlib }
    }

    /// Compresses one header block and flushes it (SYNC), so the peer can inflate it alone.
    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, CompressionError> {
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let start_in = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start_in) as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            self.zlib
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| CompressionError::Corrupt(e.to_string()))?;
            // the flush is complete once all input is in and zlib left output room unused
            let all_in = (self.zlib.total_in() - start_in) as usize == block.len();
            if all_in && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompressing side of a session's header stream.
#[derive(Debug)]
pub struct HeaderDecompressor {
    zlib: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Inflates one header block (the compressed bytes of one frame).
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Vec<u8>, CompressionError> {
        let mut out = Vec::with_capacity((compressed.len() * 4).clamp(256, MAX_HEADER_BLOCK));
        let start_in = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start_in) as usize;
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(CompressionError::TooLarge);
                }
                out.reserve(out.capacity().min(MAX_HEADER_BLOCK - out.len()));
            }
            let result =
                self.zlib
                    .decompress_vec(&compressed[consumed..], &mut out, FlushDecompress::Sync);
            match result {
                Ok(Status::StreamEnd) => {
                    return Err(CompressionError::Corrupt(
                        "the peer ended its header stream".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    let Some(id) = e.needs_dictionary() else {
                        return Err(CompressionError::Corrupt(e.to_string()));
                    };
                    if id != DICTIONARY_ID {
                        return Err(CompressionError::WrongDictionary(id));
                    }
                    self.zlib
                        .set_dictionary(header_dictionary())
                        .map_err(|e| CompressionError::Corrupt(e.to_string()))?;
                    continue;
                }
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(CompressionError::TooLarge);
            }
            let all_in = (self.zlib.total_in() - start_in) as usize == compressed.len();
            if all_in && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_over_one_stream() {
        let mut writer = HeaderCompressor::new();
        let mut reader = HeaderDecompressor::new();
        for block in [
            b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05stdin".to_vec(),
            vec![b'x'; 100_000],
            Vec::new(),
            b"second block, same zlib stream".to_vec(),
        ] {
            let compressed = writer.compress(&block).unwrap();
            assert_eq!(reader.decompress(&compressed).unwrap(), block);
        }
    }

    #[test]
    fn first_block_announces_spdy_dictionary() {
        let compressed = HeaderCompressor::new().compress(b"hello").unwrap();
        // zlib header with FDICT, then the dictionary id
        assert_eq!(compressed[0], 0x78);
        assert_ne!(compressed[1] & 0x20, 0);
        assert_eq!(&compressed[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let mut bomb = Compress::new(Compression::best(), true);
        bomb.set_dictionary(header_dictionary()).unwrap();
        let mut compressed = Vec::with_capacity(1 << 20);
        bomb.compress_vec(&vec![0u8; 4 << 20], &mut compressed, FlushCompress::Sync)
            .unwrap();
        assert!(matches!(
            HeaderDecompressor::new().decompress(&compressed),
            Err(CompressionError::TooLarge)
        ));
        assert!(HeaderDecompressor::new()
            .decompress(b"not zlib at all")
            .is_err());
        // a zlib stream primed with another dictionary
        let mut other = Compress::new(Compression::default(), true);
        other.set_dictionary(b"some other dictionary").unwrap();
        let mut out = Vec::with_capacity(256);
        other
            .compress_vec(b"abc", &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(matches!(
            HeaderDecompressor::new().decompress(&out),
            Err(CompressionError::WrongDictionary(_))
        ));
    }

    /// A block compressed by a real zlib (Python's, with `zdict`) inflates with our reader.
    #[test]
    fn reads_blocks_compressed_by_python_zlib() {
        let script = r#"
import sys, zlib
d = sys.stdin.buffer.read()
c = zlib.compressobj(zdict=d)
out = c.compress(b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x05stdin") + c.flush(zlib.Z_SYNC_FLUSH)
out += c.compress(b"second") + c.flush(zlib.Z_SYNC_FLUSH)
sys.stdout.buffer.write(len(out).to_bytes(4, "big") + out)
"#;
        let child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 is missing under CI"
            );
            eprintln!("skipped: no python3");
            return;
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(header_dictionary())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let all = &output.stdout[4..];
        // split at the first sync marker (00 00 ff ff)
        let first_end = all
            .windows(4)
            .position(|w| w == [0, 0, 0xff, 0xff])
            .unwrap()
            + 4;
        let mut reader = HeaderDecompressor::new();
        assert_eq!(
            reader.decompress(&all[..first_end]).unwrap(),
            b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05stdin"
        );
        assert_eq!(reader.decompress(&all[first_end..]).unwrap(), b"second");
    }
}
