//! Checking content against its descriptor while it streams: the digest (sha256, or sha512
//! when the digest says so), the size when known, and a limit (manifests: 4 MiB). A stream
//! that fails ends with the error instead of its last chunk, so a mismatch is never silent.

use crate::error::Error;
use berth_core::digest::{Algorithm, Hasher};
use berth_core::Digest;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::Digest as _;

/// What the bytes must be.
#[derive(Debug, Clone)]
pub struct Expected {
    pub digest: Digest,
    /// The size from the descriptor, when it gives one.
    pub size: Option<u64>,
    /// More bytes than this is refused as a too-large manifest.
    pub limit: Option<u64>,
    /// `blob sha256:…` or `manifest sha256:…`, and where it came from, for messages.
    pub subject: String,
    pub host: String,
}

enum Hashing {
    Sha256(Hasher),
    Sha512(sha2::Sha512),
}

/// Incremental check of one piece of content.
pub struct Verifier {
    expected: Expected,
    hashing: Hashing,
    seen: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("expected", &self.expected)
            .field("seen", &self.seen)
            .finish()
    }
}

impl Verifier {
    pub fn new(expected: Expected) -> Verifier {
        let hashing = match expected.digest.algorithm() {
            Algorithm::Sha256 => Hashing::Sha256(Hasher::new()),
            Algorithm::Sha512 => Hashing::Sha512(sha2::Sha512::new()),
        };
        Verifier {
            expected,
            hashing,
            seen: 0,
        }
    }

    /// Takes the next chunk; fails as soon as there are more bytes than allowed.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.seen += chunk.len() as u64;
        if let Some(limit) = self.expected.limit {
            if self.seen > limit {
                return Err(Error::ManifestTooLarge {
                    subject: self.expected.subject.clone(),
                    size: self.seen,
                });
            }
        }
        if let Some(size) = self.expected.size {
            if self.seen > size {
                return Err(Error::SizeMismatch {
                    subject: self.expected.subject.clone(),
                    host: self.expected.host.clone(),
                    expected: size,
                    got: format!("more than {size}"),
                });
            }
        }
        match &mut self.hashing {
            Hashing::Sha256(h) => h.update(chunk),
            Hashing::Sha512(h) => h.update(chunk),
        }
        Ok(())
    }

    /// Checks the whole: size first (the clearer message), then digest.
    pub fn finish(self) -> Result<(), Error> {
        if let Some(size) = self.expected.size {
            if self.seen != size {
                return Err(Error::SizeMismatch {
                    subject: self.expected.subject,
                    host: self.expected.host,
                    expected: size,
                    got: self.seen.to_string(),
                });
            }
        }
        let got = match self.hashing {
            Hashing::Sha256(h) => h.finish().to_string(),
            Hashing::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        };
        if got != self.expected.digest.to_string() {
            return Err(Error::DigestMismatch {
                subject: self.expected.subject,
                host: self.expected.host,
                got,
            });
        }
        Ok(())
    }
}

/// Passes `stream` through, checking it against `expected`; the stream ends with an error on
/// the first chunk past a limit or, at the end, on a size or digest mismatch.
pub fn verified<S>(stream: S, expected: Expected) -> impl Stream<Item = Result<Bytes, Error>>
where
    S: Stream<Item = Result<Bytes, Error>> + Send + 'static,
{
    async_stream::try_stream! {
        let mut verifier = Verifier::new(expected);
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            verifier.update(&chunk)?;
            yield chunk;
        }
        verifier.finish()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(data: &[u8], size: Option<u64>, limit: Option<u64>) -> Expected {
        Expected {
            digest: Digest::sha256_of(data),
            size,
            limit,
            subject: format!("blob {}", Digest::sha256_of(data)),
            host: "reg.example".into(),
        }
    }

    async fn run(chunks: Vec<&'static [u8]>, e: Expected) -> (Vec<u8>, Option<Error>) {
        let s = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        let mut out = Vec::new();
        let mut s = std::pin::pin!(verified(s, e));
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn good_content_passes_whole() {
        let (out, err) = run(
            vec![b"hello ", b"world"],
            expected(b"hello world", Some(11), None),
        )
        .await;
        assert_eq!(out, b"hello world");
        assert!(err.is_none(), "{err:?}");
    }

    #[tokio::test]
    async fn digest_mismatch_ends_the_stream_with_data_loss() {
        let (_, err) = run(
            vec![b"hello ", b"there"],
            expected(b"hello world", None, None),
        )
        .await;
        let err = err.expect("a mismatch");
        assert_eq!(err.code(), tonic::Code::DataLoss);
        let want = format!(
            "blob {} from reg.example: digest mismatch, got {}",
            Digest::sha256_of(b"hello world"),
            Digest::sha256_of(b"hello there")
        );
        assert_eq!(err.to_string(), want);
    }

    #[tokio::test]
    async fn too_many_bytes_stop_early() {
        let (out, err) = run(
            vec![b"hello ", b"world", b"!!!"],
            expected(b"hello world", Some(11), None),
        )
        .await;
        assert_eq!(out, b"hello world");
        assert!(matches!(err, Some(Error::SizeMismatch { .. })), "{err:?}");
        let (_, err) = run(vec![b"hello"], expected(b"hello world", Some(11), None)).await;
        assert!(err
            .unwrap()
            .to_string()
            .contains("expected 11 bytes, got 5"));
    }

    #[tokio::test]
    async fn limit_refuses_oversized_manifests() {
        let (_, err) = run(vec![b"0123456789"], expected(b"0123456789", None, Some(4))).await;
        assert_eq!(
            err.unwrap().to_string(),
            format!(
                "manifest of blob {} is 10 bytes, more than the 4 MiB limit",
                Digest::sha256_of(b"0123456789")
            )
        );
    }

    #[tokio::test]
    async fn sha512_digests_are_checked() {
        let hex = hex::encode(sha2::Sha512::digest(b"abc"));
        let mut e = expected(b"abc", Some(3), None);
        e.digest = format!("sha512:{hex}").parse().unwrap();
        let (_, err) = run(vec![b"a", b"bc"], e.clone()).await;
        assert!(err.is_none(), "{err:?}");
        let (_, err) = run(vec![b"abd"], e).await;
        assert!(err.unwrap().to_string().contains("got sha512:"));
    }
}
