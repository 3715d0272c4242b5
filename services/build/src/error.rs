//! What can make a build fail, written for the person who ran it.
//!
//! [`BuildError`] is the executor's one error type. Most failures belong to a line of the
//! Dockerfile and read `Dockerfile:3: …` ([`BuildError::Step`] around a [`StepError`]); the
//! rest concern the whole build (no FROM, an unknown `--target`), or come from the image,
//! snapshot and runtime services the build drives, passed on as they came. The gRPC shell
//! ([`crate::service`]) gives each the status code that says why it failed.

use crate::copy::CopyError;
use std::io;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Something about one line of the Dockerfile.
    #[error("{dockerfile}:{line}: {error}")]
    Step {
        /// How messages name the Dockerfile (`Dockerfile`, or the `-f` file's name).
        dockerfile: String,
        line: usize,
        #[source]
        error: StepError,
    },
    #[error("{dockerfile}: no FROM instruction: a Dockerfile must start with FROM")]
    NoFrom { dockerfile: String },
    #[error("failed to reach build target {0} in Dockerfile")]
    NoTarget(String),
    #[error("the runtime created no container")]
    NoContainer,
    /// An error of the image, snapshot or runtime service, passed on as it came.
    #[error("{}", .0.message())]
    Service(#[from] tonic::Status),
    /// The build's own files (work folder, layer tars, downloads).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A blocking part of the build (writing a layer tar, reading a rootfs) did not finish.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    /// An image config that cannot be read, or written out, as JSON.
    #[error("{0}")]
    Config(#[from] serde_json::Error),
}

/// Why one instruction failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The instruction or one of its words is wrong: syntax, a variable, a value, a stage.
    #[error("{0}")]
    Invalid(String),
    /// RUN's command ran and exited with `code`.
    #[error("The command '{command}' returned a non-zero code: {code}")]
    CommandFailed { command: String, code: i32 },
    /// COPY or ADD could not make its layer.
    #[error("{keyword} failed: {}", copy_reason(.source))]
    Copy {
        keyword: &'static str,
        #[source]
        source: CopyError,
    },
    #[error("ADD failed: cannot download {url}: it took longer than {timeout} s ([limits] download_timeout), or 60 s passed without data")]
    DownloadTimedOut { url: String, timeout: u64 },
    #[error("ADD failed: cannot download {url}: {reason}")]
    DownloadFailed { url: String, reason: String },
    #[error("ADD failed: {url} is larger than {max} bytes ([limits] max_download_size in berthd's config)")]
    DownloadTooLarge { url: String, max: u64 },
    /// A service refused what this line asked for (its base image, its container).
    #[error("{}", .0.message())]
    Service(tonic::Status),
}

impl StepError {
    pub(crate) fn invalid(why: impl std::fmt::Display) -> StepError {
        StepError::Invalid(why.to_string())
    }
}

/// A COPY/ADD failure as its message words it: an archive over `[limits]` is named as such.
fn copy_reason(e: &CopyError) -> String {
    match e {
        CopyError::Archive(a) if a.is_limit() => format!("the archive {a}"),
        e => e.to_string(),
    }
}
