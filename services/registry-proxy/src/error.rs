//! What can go wrong talking to a registry, said for the person who reads it, and how each
//! failure crosses gRPC.

use tonic::{Code, Status};

/// An error of the registry client or of a fetched stream.
///
/// `subject` names what was asked for as a person would: `127.0.0.1:5000/app:1`,
/// `blob sha256:… of 127.0.0.1:5000/app`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference: {0}")]
    InvalidReference(#[from] berth_core::reference::ReferenceError),

    #[error("invalid digest in the descriptor: {0}")]
    InvalidDigest(#[from] berth_core::digest::DigestError),

    #[error("invalid request: {0}")]
    InvalidRequest(String),

    #[error("invalid mirror {mirror:?} for registry {host}: {reason}")]
    InvalidMirror {
        host: String,
        mirror: String,
        reason: String,
    },

    #[error("cannot reach registry {host}: {reason}")]
    Unreachable { host: String, reason: String },

    #[error("{subject}: not found in the registry")]
    NotFound { subject: String },

    #[error("{subject}: registry {host} asks to log in; run `berth login {host}` if you have an account there, or check the name{detail}")]
    Unauthorized {
        subject: String,
        host: String,
        detail: String,
    },

    #[error("{subject}: registry {host} refused the credentials stored for it; run `berth login {host}` again{detail}")]
    BadCredentials {
        subject: String,
        host: String,
        detail: String,
    },

    #[error("{subject}: registry {host} denies access{detail}")]
    Denied {
        subject: String,
        host: String,
        detail: String,
    },

    #[error("{subject}: registry {host} is rate limiting pulls; wait and try again, or log in with `berth login {host}` for a higher limit{detail}")]
    TooManyRequests {
        subject: String,
        host: String,
        detail: String,
    },

    #[error("{subject}: unsupported media type {media_type:?}; berth pulls OCI and Docker schema 2 manifests and indexes")]
    UnsupportedMediaType { subject: String, media_type: String },

    #[error("manifest of {subject} is {size} bytes, more than the 4 MiB limit")]
    ManifestTooLarge { subject: String, size: u64 },

    #[error("registry {host} failed with HTTP {status} for {subject}; it is up but broken or overloaded, try again later{detail}")]
    Server {
        subject: String,
        host: String,
        status: u16,
        detail: String,
    },

    #[error("registry {host} answered HTTP {status} for {subject}{detail}")]
    Unexpected {
        subject: String,
        host: String,
        status: u16,
        detail: String,
    },

    #[error("registry {host} sent an invalid answer for {subject}: {reason}")]
    InvalidResponse {
        subject: String,
        host: String,
        reason: String,
    },

    #[error("{subject} from {host}: digest mismatch, got {got}")]
    DigestMismatch {
        subject: String,
        host: String,
        got: String,
    },

    #[error("{subject} from {host}: size mismatch, expected {expected} bytes, got {got}")]
    SizeMismatch {
        subject: String,
        host: String,
        expected: u64,
        got: String,
    },

    #[error("{subject} from {host}: the transfer broke off: {reason}")]
    Interrupted {
        subject: String,
        host: String,
        reason: String,
    },

    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),

    #[error("the registry-proxy's own store failed: {0}")]
    Store(String),

    #[error("{subject}: registry {host} does not let {who} push there; check the repository name, and log in as an account that may push to it with `berth login {host}`{detail}")]
    PushDenied {
        subject: String,
        host: String,
        /// `anonymous users`, or `the account stored for it`.
        who: &'static str,
        detail: String,
    },

    #[error("{subject}: refused, the bytes sent are not what its descriptor says ({reason}); the upload was cancelled and nothing was stored")]
    PushMismatch { subject: String, reason: String },

    #[error("{subject}: the bytes to push stopped coming ({reason}); the upload was cancelled")]
    SourceFailed { subject: String, reason: String },

    #[error("{subject}: registry {host} stopped taking the upload ({reason}); try again")]
    UploadStalled {
        subject: String,
        host: String,
        reason: String,
    },

    #[error("login to {host} failed: wrong user name or password{detail}")]
    LoginFailed { host: String, detail: String },

    #[error(transparent)]
    Credentials(#[from] crate::credentials::StoreError),
}

impl Error {
    /// The gRPC code this error crosses the wire with.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidReference(_) | Error::InvalidDigest(_) | Error::InvalidRequest(_) => {
                Code::InvalidArgument
            }
            Error::NotFound { .. } => Code::NotFound,
            Error::Unreachable { .. }
            | Error::Server { .. }
            | Error::Interrupted { .. }
            | Error::TooManyRequests { .. } => Code::Unavailable,
            Error::Unauthorized { .. } | Error::BadCredentials { .. } => Code::Unauthenticated,
            Error::Denied { .. } => Code::PermissionDenied,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => Code::DataLoss,
            Error::UnsupportedMediaType { .. }
            | Error::ManifestTooLarge { .. }
            | Error::Unexpected { .. }
            | Error::InvalidResponse { .. }
            | Error::InvalidMirror { .. } => Code::FailedPrecondition,
            Error::HttpClient(_) | Error::Store(_) => Code::Internal,
            Error::PushDenied { .. } => Code::PermissionDenied,
            Error::PushMismatch { .. } => Code::InvalidArgument,
            Error::SourceFailed { .. } => Code::Aborted,
            Error::UploadStalled { .. } => Code::Unavailable,
            Error::LoginFailed { .. } => Code::Unauthenticated,
            Error::Credentials(_) => Code::FailedPrecondition,
        }
    }

    /// Whether the next place to ask (the upstream after a mirror, plain HTTP after HTTPS)
    /// might do better: the server could not be reached or talked to at all.
    pub(crate) fn is_transport(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// The reason a request failed before any HTTP answer, as a person would want it: the
/// innermost cause (`connection refused`), with a hint where one helps.
pub(crate) fn describe_transport(
    e: &reqwest::Error,
    host: &str,
    connect_timeout_secs: u64,
) -> String {
    if e.is_timeout() {
        return if e.is_connect() {
            format!("no answer within {connect_timeout_secs} s; is the host up and the port open?")
        } else {
            "the registry stopped answering (timed out)".to_string()
        };
    }
    let mut inner: &dyn std::error::Error = e;
    let mut io_kind = None;
    while let Some(next) = inner.source() {
        if let Some(io) = next.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        inner = next;
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "connection refused: nothing listens there, the registry is down or on another port"
                .to_string()
        }
        Some(std::io::ErrorKind::ConnectionReset) => {
            "the connection was reset; the registry may be restarting, or it does not speak this protocol (is it plain HTTP? then mark it insecure)".to_string()
        }
        _ => {
            let text = inner.to_string();
            if text.contains("lookup address") || text.contains("dns error") {
                format!("cannot resolve the host name ({text})")
            } else if text.to_ascii_lowercase().contains("certificate")
                || text.to_ascii_lowercase().contains("ssl")
                || text.to_ascii_lowercase().contains("tls")
            {
                format!("TLS failed ({text}); if the registry has a self-signed certificate or speaks plain HTTP, mark it insecure in berthd's config: [registries.\"{host}\"] insecure = true")
            } else {
                text
            }
        }
    }
}
