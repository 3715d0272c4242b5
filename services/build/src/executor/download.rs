//! ADD's URLs: fetched into the build's work folder before the layer is written, within
//! `[limits]` (time, size, redirects), streamed so that a large file never sits in memory.

use super::Build;
use crate::error::{BuildError, StepError};
use std::path::PathBuf;

/// Redirects an `ADD https://…` follows (as many as Go's HTTP client, which Docker uses).
pub const MAX_REDIRECTS: usize = 10;

impl Build {
    /// Downloads `url` for ADD into the work folder, within `[limits]`: the whole download
    /// within `download_timeout` (and no 60 s without a byte), at most `max_download_size`
    /// bytes, at most [`MAX_REDIRECTS`] redirects. Gives the file and the name it takes.
    pub(super) async fn download(
        &self,
        url: &str,
        line: usize,
    ) -> Result<(PathBuf, String), BuildError> {
        let max = self.limits.max_download_size;
        let failed = |e: reqwest::Error| {
            self.at(line, download_error(url, &e, self.limits.download_timeout))
        };
        let too_big = || {
            self.at(
                line,
                StepError::DownloadTooLarge {
                    url: url.to_string(),
                    max,
                },
            )
        };
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(std::time::Duration::from_secs(60))
            .timeout(std::time::Duration::from_secs(self.limits.download_timeout))
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .map_err(failed)?;
        let resp = client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(failed)?;
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_big());
        }
        let mut buf = [0u8; 8];
        let _ = getrandom::fill(&mut buf);
        let path = self.work_dir.join(format!("download-{}", hex::encode(buf)));
        // Streamed to the work folder: a big download never sits in memory.
        let mut file = tokio::fs::File::create(&path).await?;
        let mut body = resp.bytes_stream();
        let mut got: u64 = 0;
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            let chunk = chunk.map_err(failed)?;
            got += chunk.len() as u64;
            if got > max {
                return Err(too_big());
            }
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
        Ok((path, file_name(url)))
    }
}

/// Why a download failed: too slow, or what reqwest says with its causes (its own message
/// omits them: refused, redirect loop…).
fn download_error(url: &str, e: &reqwest::Error, timeout: u64) -> StepError {
    if e.is_timeout() {
        return StepError::DownloadTimedOut {
            url: url.to_string(),
            timeout,
        };
    }
    let mut reason = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        reason = format!("{reason}: {c}");
        cause = c.source();
    }
    StepError::DownloadFailed {
        url: url.to_string(),
        reason,
    }
}

/// The name a downloaded file takes: the URL path's last part.
fn file_name(url: &str) -> String {
    url.split(['?', '#'])
        .next()
        .unwrap_or(url)
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("download")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_is_named_after_the_urls_last_part() {
        assert_eq!(
            file_name("https://example.test/a/b.tar.gz?x=1#y"),
            "b.tar.gz"
        );
        assert_eq!(file_name("https://example.test/dir/"), "dir");
    }
}
