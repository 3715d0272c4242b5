//! A layer tar that may arrive gzip-compressed (`docker import` of a `.tar.gz`): [`plain`]
//! looks at the stream's first bytes and, for gzip, decompresses it on a blocking thread as
//! the chunks come, so CommitLayer's callers may send either form. Other compressions are
//! refused with a message that says which forms are taken.

use crate::commit::TarStream;
use crate::error::ImageError;
use std::io::Read;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// What a layer's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Plain,
    Gzip,
    /// A compression berth does not take here: its name.
    Other(&'static str),
}

fn form(head: &[u8]) -> Form {
    if head.starts_with(&[0x1f, 0x8b]) {
        Form::Gzip
    } else if head.starts_with(b"BZh") {
        Form::Other("bzip2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Form::Other("xz")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Form::Other("zstd")
    } else {
        Form::Plain
    }
}

/// `tar` as an uncompressed tar stream: as it is, or gunzipped. A stream with no bytes at
/// all is refused (a client whose upload never started).
pub async fn plain(mut tar: TarStream) -> Result<TarStream, ImageError> {
    // Enough of the start to tell the forms apart.
    let mut head: Vec<Vec<u8>> = Vec::new();
    let mut seen = 0;
    while seen < 6 {
        match tar.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                seen += chunk.len();
                head.push(chunk);
            }
            None => break,
        }
    }
    let start: Vec<u8> = head.concat();
    if start.is_empty() {
        return Err(ImageError::InvalidArgument(
            "the layer's tar is empty: no byte of it arrived".into(),
        ));
    }
    let rest = tokio_stream::iter(head.into_iter().map(Ok)).chain(tar);
    match form(&start) {
        Form::Plain => Ok(Box::pin(rest)),
        Form::Gzip => Ok(gunzipped(Box::pin(rest))),
        Form::Other(name) => Err(ImageError::InvalidArgument(format!(
            "the layer is compressed with {name}: send it as a plain or gzip-compressed tar"
        ))),
    }
}

/// Reads the chunks a channel brings as one byte stream (on a blocking thread).
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(c) => (self.chunk, self.at) = (c, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Gunzips `gz` as it arrives: a stream of the decompressed bytes, ending with the error of
/// the input or of a corrupt gzip.
fn gunzipped(mut gz: TarStream) -> TarStream {
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(8);
    let (out_tx, out_rx) = mpsc::channel::<Result<Vec<u8>, ImageError>>(8);
    let feed_errors = out_tx.clone();
    tokio::spawn(async move {
        while let Some(chunk) = gz.next().await {
            match chunk {
                Ok(c) => {
                    if in_tx.send(c).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = feed_errors.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx: in_rx,
            chunk: Vec::new(),
            at: 0,
        };
        let mut decoder = flate2::read::MultiGzDecoder::new(reader);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match decoder.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if out_tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = out_tx.blocking_send(Err(ImageError::InvalidArgument(format!(
                        "the layer's gzip is corrupt: {e}"
                    ))));
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn chunks(data: Vec<u8>, size: usize) -> TarStream {
        let parts: Vec<Result<Vec<u8>, ImageError>> =
            data.chunks(size).map(|c| Ok(c.to_vec())).collect();
        Box::pin(tokio_stream::iter(parts))
    }

    async fn collect(s: TarStream) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend(c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn plain_and_gzip_come_out_plain() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let same = collect(plain(chunks(data.clone(), 3)).await.unwrap()).await;
        assert_eq!(same.unwrap(), data);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let out = collect(plain(chunks(gz, 1000)).await.unwrap()).await;
        assert_eq!(out.unwrap(), data);
    }

    #[tokio::test]
    async fn other_compressions_and_corrupt_gzip_are_refused() {
        let xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0x00, 1, 2];
        let e = plain(chunks(xz, 2)).await.err().unwrap();
        assert!(e.to_string().contains("xz"), "{e}");
        let bad = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
        let e = collect(plain(chunks(bad, 4)).await.unwrap()).await;
        assert!(e.is_err());
        let e = plain(chunks(vec![], 1)).await.err().unwrap();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
