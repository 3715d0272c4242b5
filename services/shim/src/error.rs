//! Errors of the shim: what failed, on what path, and the exit code it maps to.

use std::io;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while creating or serving a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed; `context` says what and on which path.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `mount proc on /x/rootfs/proc`.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The bundle (config.json, rootfs.json) is missing something or is inconsistent.
    #[error("invalid bundle: {0}")]
    Invalid(String),
    /// A cgroup operation failed.
    #[error("cgroup {path}: {message}")]
    Cgroup {
        /// The cgroup path (relative to the hierarchy root).
        path: String,
        /// What failed.
        message: String,
    },
    /// The container's program cannot be run; `message` is Docker's wording.
    #[error("{message}")]
    Exec {
        /// e.g. `exec: "foo": executable file not found in $PATH`
        message: String,
        /// 127 (not found) or 126 (cannot execute).
        code: i32,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The exit code the shim's parent reports for this error: 127/126 for exec failures,
    /// 1 for anything else (docs/shim.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exec { code, .. } => *code,
            _ => 1,
        }
    }
}

/// Adds context to `io::Result` and `nix::Result`.
pub trait Context<T> {
    /// Wraps the error with a description computed lazily.
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl<T> Context<T> for std::result::Result<T, nix::errno::Errno> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), io::Error::from(e)))
    }
}
