//! Docker's error answers: `{"message": …}` with Docker's status codes.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tonic::Code;

/// An answer of Docker's error shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: a parameter Docker would refuse.
    pub fn bad_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<tonic::Status> for ApiError {
    /// NotFound → 404, AlreadyExists and FailedPrecondition → 409 (Docker's conflict),
    /// InvalidArgument → 400, anything else 500; the service's message is kept, as the services
    /// already word it for a person ("No such image: X").
    fn from(s: tonic::Status) -> ApiError {
        let status = match s.code() {
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if s.message().is_empty() {
            s.code().description().to_string()
        } else {
            s.message().to_string()
        };
        ApiError { status, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message });
        (self.status, json_body(&body)).into_response()
    }
}

/// A JSON body with Docker's content type.
pub fn json_body(v: &serde_json::Value) -> impl IntoResponse {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    ([(http::header::CONTENT_TYPE, "application/json")], bytes)
}

/// Docker's answer to a route it does not have.
pub async fn page_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "page not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_become_docker_codes() {
        let code = |s: tonic::Status| ApiError::from(s).status.as_u16();
        assert_eq!(code(tonic::Status::not_found("No such image: x")), 404);
        assert_eq!(code(tonic::Status::already_exists("x")), 409);
        assert_eq!(code(tonic::Status::failed_precondition("x")), 409);
        assert_eq!(code(tonic::Status::invalid_argument("x")), 400);
        assert_eq!(code(tonic::Status::unavailable("x")), 500);
        assert_eq!(
            ApiError::from(tonic::Status::not_found("No such image: x")).message,
            "No such image: x"
        );
    }
}
