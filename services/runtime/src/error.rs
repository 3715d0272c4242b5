//! The runtime's errors, each written for the person who reads it, and their gRPC codes.

use berth_core::grpc::status_with_exit_code;
use std::path::PathBuf;
use tonic::{Code, Status};

/// Everything that can go wrong in the runtime service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No such container: {0}")]
    NoSuchContainer(String),

    #[error("No such image: {0}")]
    NoSuchImage(String),

    #[error(
        "container id prefix {prefix:?} is ambiguous: it matches {count} containers; \
         give more characters of the id, or the name"
    )]
    AmbiguousPrefix { prefix: String, count: usize },

    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". \
         You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },

    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),

    #[error("no command specified")]
    NoCommand,

    /// A request that cannot be carried out as asked (bad flag values and the like).
    #[error("{0}")]
    InvalidArgument(String),

    /// The object is not in the state the request needs (running, stopped, …).
    #[error("{0}")]
    FailedPrecondition(String),

    /// Something else that does not exist (a volume, …); the message says what.
    #[error("{0}")]
    NotFound(String),

    #[error("container {0} has no task: create or start it first")]
    NoTask(String),

    #[error("container {0} already has a task: delete it before creating another")]
    TaskExists(String),

    #[error("the image config of {image} is not valid JSON: {source}")]
    ImageConfig {
        image: String,
        source: serde_json::Error,
    },

    #[error("metadata database {path}: {source}")]
    Database { path: PathBuf, source: sled::Error },

    #[error("container record {key} in the metadata database is unreadable: {reason}")]
    Corrupt { key: String, reason: String },

    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The shim refused or failed a request; `exit_code` is its hint (125, 126, 127).
    #[error("{message}")]
    Shim { message: String, exit_code: i32 },

    /// The shim's socket could not be used (it is gone, or broke mid-answer).
    #[error("shim of container {id}: {source}")]
    ShimIo { id: String, source: std::io::Error },

    /// Another service answered with an error; passed on with its code.
    #[error("{message}")]
    Service {
        service: &'static str,
        code: Code,
        message: String,
    },

    #[error("cannot build the OCI runtime spec: {0}")]
    Spec(String),

    /// Attaching a container to a network failed in a CNI plugin.
    #[error("{0}")]
    Cni(#[from] crate::network::CniError),

    /// Setting up a bridge, its rules or a network namespace failed.
    #[error("{0}")]
    Network(String),
}

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// Wraps an error status from another service (images, snapshots) so that its code survives.
    pub(crate) fn service(service: &'static str, status: Status) -> Error {
        let message = match status.code() {
            Code::Unavailable => format!(
                "the {service} service is not reachable ({}); is berthd running with it?",
                status.message()
            ),
            _ if status.message().is_empty() => format!("{service}: {}", status.code()),
            _ => format!("{service}: {}", status.message()),
        };
        Error::Service {
            service,
            code: status.code(),
            message,
        }
    }

    /// The gRPC code that says what kind of failure this is.
    pub fn code(&self) -> Code {
        match self {
            Error::NoSuchContainer(_)
            | Error::NoSuchImage(_)
            | Error::NoTask(_)
            | Error::NotFound(_) => Code::NotFound,
            Error::AmbiguousPrefix { .. }
            | Error::InvalidName(_)
            | Error::NoCommand
            | Error::InvalidArgument(_)
            | Error::ImageConfig { .. } => Code::InvalidArgument,
            Error::NameInUse { .. } | Error::TaskExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Shim { exit_code, .. } if *exit_code == 126 || *exit_code == 127 => {
                Code::FailedPrecondition
            }
            Error::Service { code, .. } => *code,
            Error::ShimIo { .. } => Code::Unavailable,
            Error::Database { .. }
            | Error::Corrupt { .. }
            | Error::Io { .. }
            | Error::Shim { .. }
            | Error::Spec(_)
            | Error::Cni(_)
            | Error::Network(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = e.code();
        match &e {
            // The CLI ends with 126 (cannot execute) or 127 (not found) for these.
            Error::Shim { exit_code, .. } if *exit_code == 126 || *exit_code == 127 => {
                status_with_exit_code(code, e.to_string(), *exit_code)
            }
            Error::NoCommand => status_with_exit_code(code, e.to_string(), 125),
            _ => Status::new(code, e.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::grpc::exit_code_of;

    #[test]
    fn codes_and_exit_codes() {
        let s: Status = Error::Shim {
            message: "exec: \"nope\": executable file not found in $PATH".into(),
            exit_code: 127,
        }
        .into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(exit_code_of(&s), Some(127));

        let s: Status = Error::Shim {
            message: "cgroup: permission denied".into(),
            exit_code: 125,
        }
        .into();
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(exit_code_of(&s), None);

        let s: Status = Error::NameInUse {
            name: "web".into(),
            id: "abc".into(),
        }
        .into();
        assert_eq!(s.code(), Code::AlreadyExists);
        assert!(s
            .message()
            .starts_with("Conflict. The container name \"/web\""));

        let s: Status = Error::service("snapshots", Status::not_found("no snapshot k")).into();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "snapshots: no snapshot k");
        let s: Status = Error::service("images", Status::unavailable("connect refused")).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("images service is not reachable"));
    }
}
