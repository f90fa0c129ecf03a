//! The one error shape every `lmrs serve` endpoint answers with:
//! `{"error": {"code": 400, "message": "...", "type": "invalid_request_error"}}`, as llama.cpp's
//! server and OpenAI's API do, with the HTTP status of the same code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP error with a message meant for the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub(crate) struct ApiError {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// What went wrong, in words the client can act on.
    pub(crate) message: String,
    /// Seconds after which a retry may succeed (`Retry-After`), for `503`s.
    pub(crate) retry_after_secs: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// `400`: the request is malformed or asks for something impossible.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `401`: the API key is missing or wrong.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// `404`: no such endpoint.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// `405`: the endpoint exists but not with this method.
    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, message)
    }

    /// `503` while the model loads.
    pub(crate) fn loading() -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is still loading",
        );
        error.retry_after_secs = Some(1);
        error
    }

    /// `503` when every slot is busy and the queue is full.
    pub(crate) fn queue_full(queue: usize) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the server is busy: every slot is working and the queue ({queue} requests) is full; retry later"),
        );
        error.retry_after_secs = Some(1);
        error
    }

    /// `500`: something failed on our side.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The error's `type` field (OpenAI's names).
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "invalid_request_error",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable_error",
            status if status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.status.as_u16(),
                "message": self.message,
                "type": self.kind(),
            }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The status and message of an axum body rejection (too large, unreadable) as an [`ApiError`].
pub(crate) fn from_rejection(status: StatusCode, text: String) -> ApiError {
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("request body too large: {text}")
    } else {
        text
    };
    ApiError::new(status, message)
}
