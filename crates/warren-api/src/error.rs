//! One error type for every handler, mapped to a status and the `{"detail": {...}}` body the
//! SDKs parse, in one place. Internal failures become a generic 500; the cause is logged.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;
use warren_control::ControlError;

/// An API error: status, error type and message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `detail.error`.
    pub error: &'static str,
    /// `detail.message`.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    /// 422 validation error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", message)
    }

    /// 500 whose cause is logged, not sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "internal server error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"detail": {"error": self.error, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        use ControlError as E;
        match e {
            E::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "NotFound", m),
            E::Conflict(m) => Self::new(StatusCode::CONFLICT, "Conflict", m),
            E::Invalid { message } => Self::invalid(message),
            E::BadRequest { error, message } => Self::new(StatusCode::BAD_REQUEST, error, message),
            E::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "Forbidden", m),
            E::NotReady(m) => Self::new(StatusCode::BAD_REQUEST, "NotReady", m),
            E::Timeout(m) => Self::new(StatusCode::REQUEST_TIMEOUT, "Timeout", m),
            E::Exhausted(m) => Self::new(StatusCode::TOO_MANY_REQUESTS, "QuotaExceeded", m),
            E::Unavailable(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m)
            }
            E::Agent(e) => {
                tracing::warn!(error = %e, "sandbox agent unreachable");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "ConnectionError",
                    "sandbox is unreachable",
                )
            }
            e @ (E::Store(_) | E::Driver(_)) => Self::internal(&e),
        }
    }
}

/// `Json` whose rejections use the API's error format: bad syntax 400, wrong fields or types
/// 422, a missing JSON content type 415, an oversize body 413.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => Self::data_error(&e.body_text()),
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "InvalidJson", e.body_text())
                }
                JsonRejection::MissingJsonContentType(e) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    e.body_text(),
                ),
                JsonRejection::BytesRejection(e) => {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "PayloadTooLarge",
                            "request body too large",
                        )
                    } else {
                        ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", e.body_text())
                    }
                }
                other => {
                    ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", other.body_text())
                }
            }),
        }
    }
}

impl<T> ApiJson<T> {
    fn data_error(text: &str) -> ApiError {
        // serde's message already names the field ("unknown field `x`", "invalid type ...").
        let msg =
            text.trim_start_matches("Failed to deserialize the JSON body into the target type: ");
        ApiError::invalid(msg.to_owned())
    }
}
