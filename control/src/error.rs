//! The API's one error type and Heroku's error body.
//!
//! Every failure an HTTP client can see is an [`ApiError`]: an HTTP status, one
//! of Heroku's error ids (`unauthorized`, `not_found`, `invalid_params`,
//! `conflict`, …) and a message naming the field at fault. It renders as
//! Heroku renders errors, `{"id": "...", "message": "..."}`, so the `heroku`
//! CLI prints our messages as it prints Heroku's.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Heroku's machine-readable id.
    pub id: &'static str,
    /// A sentence for people, naming the field at fault.
    pub message: String,
}

impl ApiError {
    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid credentials provided.",
        )
    }

    /// 404 `not_found` for a missing `kind` called `what`.
    pub fn not_found(kind: &str, what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("Couldn't find that {kind}: {what}."),
        )
    }

    /// 404 `not_found` for an unknown route.
    pub fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "The requested API endpoint was not found.",
        )
    }

    /// 422 `invalid_params`: `field` is wrong for `why`.
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_params",
            format!("{field} {why}"),
        )
    }

    /// 400 `bad_request`: the body is not the JSON we expect.
    pub fn bad_request(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", why)
    }

    /// 409 `conflict`.
    pub fn conflict(why: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", why)
    }

    /// 503 `unavailable`: the store could not commit; nothing was changed.
    pub fn unavailable(why: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "That method is not allowed on this endpoint.",
        )
    }

    /// Any status, id and message.
    pub fn new(status: StatusCode, id: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            id,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.as_u16(),
            self.id,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ApiError::unavailable(format!("The change could not be stored: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "id": self.id, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}
