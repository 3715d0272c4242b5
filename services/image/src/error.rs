use crate::content::ContentError;
use crate::manifest::ManifestError;
use crate::metadata::MetadataError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Reference(#[from] berth_core::reference::ReferenceError),
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("{0}")]
    Content(#[from] ContentError),
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Metadata(#[from] MetadataError),
    /// An error from another service, passed on with its code.
    #[error("{}", .0.message())]
    Remote(Status),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Archive(String),
    /// The request conflicts with the state: an image in use, several names for an id.
    #[error("{0}")]
    Conflict(String),
    /// The work was stopped: its lease was removed (`Leases.Delete`).
    #[error("{0}")]
    Aborted(String),
}

impl From<Status> for ImageError {
    fn from(s: Status) -> Self {
        ImageError::Remote(s)
    }
}

impl From<ImageError> for Status {
    fn from(e: ImageError) -> Status {
        let msg = e.to_string();
        match e {
            ImageError::Reference(_) | ImageError::InvalidArgument(_) | ImageError::Archive(_) => {
                Status::invalid_argument(msg)
            }
            ImageError::NotFound(_) => Status::not_found(msg),
            ImageError::Conflict(_) => Status::failed_precondition(msg),
            ImageError::Aborted(_) => Status::aborted(msg),
            ImageError::Content(ContentError::NotFound(_)) => Status::not_found(msg),
            ImageError::Content(
                ContentError::DigestMismatch { .. } | ContentError::SizeMismatch { .. },
            ) => Status::data_loss(msg),
            ImageError::Content(ContentError::TooLarge { .. }) => Status::failed_precondition(msg),
            ImageError::Content(ContentError::Io { .. }) | ImageError::Metadata(_) => {
                Status::internal(msg)
            }
            ImageError::Manifest(_) => Status::failed_precondition(msg),
            ImageError::Remote(s) => Status::new(
                if s.code() == Code::Unknown {
                    Code::Internal
                } else {
                    s.code()
                },
                s.message().to_string(),
            ),
        }
    }
}
