//! `ApiError`: every error answer is `{"error": "…"}` with a status. Fleet errors map by
//! variant (invalid 400, not found 404, conflict 409, catalog unreachable 503); anything
//! unexpected is a 500 whose details go only to the log, under an error id.

use crate::fleet::FleetError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;
use uuid::Uuid;

/// An error answer: `{"error": message}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The answer's status and message (the web console renders them as a page).
    pub fn parts(&self) -> (StatusCode, &str) {
        (self.status, &self.message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Logged in full under a request id, answered without detail (the chain may name
    /// hosts or databases).
    fn internal(e: anyhow::Error, unavailable: bool) -> Self {
        let id = Uuid::new_v4();
        error!(error_id = %id, error = %format!("{e:#}"), "API request failed");
        if unavailable {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the catalog is unreachable; retry later (error id {id})"),
            )
        } else {
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error; the server log has the details under error id {id}"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Invalid(m) => Self::bad_request(m),
            FleetError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, m),
            FleetError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            FleetError::Unavailable(e) => Self::internal(e.into(), true),
            FleetError::Other(e) => Self::internal(e, false),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e, false)
    }
}
