//! The one error type of the crate, and how it crosses gRPC.

use berth_archive::ArchiveError;
use std::io;
use std::path::PathBuf;
use tonic::{Code, Status};

/// What went wrong, written for the person who reads it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {key:?} not found (snapshotter {snapshotter}, namespace {namespace})")]
    NotFound {
        snapshotter: String,
        namespace: String,
        key: String,
    },
    #[error("snapshot {key:?} already exists (snapshotter {snapshotter}, namespace {namespace}); pick another key or remove it first")]
    AlreadyExists {
        snapshotter: String,
        namespace: String,
        key: String,
    },
    #[error("parent {parent:?} of {key:?} is {kind}, not committed: only committed snapshots can be parents; commit it first")]
    ParentNotCommitted {
        key: String,
        parent: String,
        kind: &'static str,
    },
    #[error("parent {parent:?} of layer {name} is neither committed nor being applied; apply the layers below first (or leave the parent empty for a first layer)")]
    ParentMissing { name: String, parent: String },
    #[error("parent {parent:?} was being applied when this layer arrived, but that Apply failed ({reason}); nothing was committed: apply the parent again, then this layer")]
    ParentFailed { parent: String, reason: String },
    #[error("snapshot {key:?} was removed or committed while its diff was being written; the diff is incomplete and was cut off: diff it again under its current key")]
    ChangedDuringDiff { key: String },
    #[error("cannot diff {path:?}: {reason}")]
    Undiffable { path: String, reason: String },
    #[error("cannot remove snapshot {key:?}: {count} snapshot(s) are built on it (e.g. {example:?}); remove those first")]
    HasChildren {
        key: String,
        count: u64,
        example: String,
    },
    #[error("snapshot {key:?} is {kind}: {action} needs an active snapshot (one made by Prepare)")]
    NotActive {
        key: String,
        kind: &'static str,
        action: &'static str,
    },
    #[error("cannot commit a layer as {name:?}: a snapshot that is {kind} has that key; remove it, or apply the layer under its chain id")]
    NameTaken { name: String, kind: &'static str },
    #[error("snapshot {key:?} is committed and has no mounts of its own; use View for a read-only mount of it or Prepare for a writable layer on it")]
    Committed { key: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unknown snapshotter {0:?}: use \"overlayfs\" or \"native\" (or leave it empty for the default)")]
    UnknownSnapshotter(String),
    #[error("the overlayfs snapshotter cannot be used on {root}: {reason}; use the \"native\" snapshotter")]
    OverlayUnavailable { root: PathBuf, reason: String },
    #[error("{layers} layers are too many for one overlay mount (at most {max} fit the kernel's limits); flatten the image")]
    TooManyLayers { layers: usize, max: usize },
    #[error("refusing layer entry {entry:?}: {reason}")]
    InvalidLayer { entry: String, reason: String },
    #[error("the layer's uncompressed content has digest {actual}, but diff_id {expected} was expected: the blob is corrupt or belongs to another image; nothing was committed")]
    DigestMismatch { expected: String, actual: String },
    #[error("refusing the layer: {0}; nothing was committed")]
    Layer(#[source] ArchiveError),
    #[error("the layer stream is truncated or corrupt: {0}; nothing was committed")]
    CorruptLayer(#[source] io::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("snapshot metadata database: {0}")]
    Db(#[from] sled::Error),
    #[error("snapshot metadata record {key:?} is unreadable: {source}")]
    Record {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid_layer(entry: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidLayer {
            entry: entry.into(),
            reason: reason.into(),
        }
    }

    /// The gRPC code this error travels with.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::ParentNotCommitted { .. }
            | Error::HasChildren { .. }
            | Error::NotActive { .. }
            | Error::Committed { .. }
            | Error::NameTaken { .. }
            | Error::OverlayUnavailable { .. }
            | Error::TooManyLayers { .. }
            | Error::ParentMissing { .. }
            | Error::ParentFailed { .. }
            | Error::Undiffable { .. } => Code::FailedPrecondition,
            Error::ChangedDuringDiff { .. } => Code::Aborted,
            Error::InvalidArgument(_)
            | Error::UnknownSnapshotter(_)
            | Error::InvalidLayer { .. } => Code::InvalidArgument,
            // A configured limit works as a quota; anything else refused is a malformed layer.
            Error::Layer(e) if e.is_limit() => Code::ResourceExhausted,
            Error::Layer(_) => Code::InvalidArgument,
            Error::DigestMismatch { .. } | Error::CorruptLayer(_) => Code::DataLoss,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            Error::Db(_) | Error::Record { .. } => Code::Internal,
        }
    }
}

impl From<ArchiveError> for Error {
    fn from(e: ArchiveError) -> Error {
        match e {
            ArchiveError::Corrupt(e) => Error::CorruptLayer(e),
            ArchiveError::Write { entry, source } => {
                Error::io(format!("writing layer entry {entry:?}"), source)
            }
            e => Error::Layer(e),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
