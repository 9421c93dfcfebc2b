//! The one error type of api-gateway and its one mapping to an HTTP status and the `{status, error}` body.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use ordermesh_bus::RpcError;
use ordermesh_messages::{ErrorCode, ReplyError};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every answer without a richer shape: `{"status": "success"|"failure", "error": ""|"why"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    /// `success` or `failure`.
    #[schema(example = "failure")]
    pub status: String,
    /// Empty on success; a sentence for a person otherwise.
    #[schema(example = "quantity must be an integer from 1 to 10000, got 0")]
    pub error: String,
}

impl StatusBody {
    /// `{"status": "success", "error": ""}`.
    pub fn success() -> Self {
        Self { status: "success".into(), error: String::new() }
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown id or route.
    #[error("{0}")]
    NotFound(String),
    /// Wrong method on a known route.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Conflicts with current state (stock, empty cart).
    #[error("{0}")]
    Conflict(String),
    /// The `Idempotency-Key` was already used for a different request.
    #[error("{0}")]
    KeyReused(String),
    /// Body over the limit.
    #[error("request body is larger than 64 KiB")]
    PayloadTooLarge,
    /// Not a JSON body.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A downstream service (RabbitMQ, inventory) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// No API key, or one the gateway does not know (or that was revoked).
    #[error("{0}")]
    Unauthorized(String),
    /// A known key whose role does not allow this route.
    #[error("{0}")]
    Forbidden(String),
    /// The key sent more requests than its rate allows; retry after the given number of seconds.
    #[error("this API key is over its request rate; retry in {0} s")]
    RateLimited(u64),
    /// More requests in flight than the gateway admits: refused at once rather than queued.
    #[error("the shop is busy right now; retry in a second")]
    Overloaded,
    /// No reply within the request deadline.
    #[error(
        "no reply from {0} within the request deadline; the outcome is unknown: retry with the same Idempotency-Key"
    )]
    Timeout(&'static str),
    /// A bug or unexpected failure; logged, shown opaque.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a failed request/reply to the service named `service`.
    pub fn from_rpc(err: RpcError, service: &'static str) -> Self {
        match err {
            RpcError::Unavailable => Self::Unavailable(format!(
                "{service} cannot be reached right now (message broker unavailable); retry later"
            )),
            RpcError::Timeout => Self::Timeout(service),
        }
    }
}

impl From<ReplyError> for ApiError {
    fn from(e: ReplyError) -> Self {
        match e.code {
            ErrorCode::InvalidInput => Self::BadRequest(e.message),
            ErrorCode::NotFound => Self::NotFound(e.message),
            ErrorCode::Conflict => Self::Conflict(e.message),
            ErrorCode::KeyReused => Self::KeyReused(e.message),
            // The worker's own words name its dependencies: they go to the log, the client gets a sentence for it.
            ErrorCode::Unavailable => {
                tracing::warn!(detail = %e.message, "a downstream service is unavailable");
                Self::Unavailable("a service this request needs is unavailable; retry later".into())
            }
            ErrorCode::Internal => Self::Internal(e.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let body = StatusBody { status: "failure".into(), error: self.to_string() };
        let mut response = (self.status_code(), Json(body)).into_response();
        match self {
            Self::Overloaded => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::RateLimited(secs) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Self::Unauthorized(_) => {
                // RFC 9110: a 401 names the scheme that would work.
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("ApiKey header=\"X-API-Key\""));
            }
            _ => {}
        }
        response
    }
}
