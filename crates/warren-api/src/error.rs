//! One error type for every handler, and one `From` per source of errors: each maps to a status
//! and the `{"detail": {...}}` body the SDKs parse, here and nowhere else. Internal failures
//! become a generic 500; the cause is logged.

use axum::Json;
use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use warren_control::{ConfigError, ControlError, ErrorKind, FileOp};
use warren_wire::ErrorBody;

/// An API error: status, error type and message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `detail.error`.
    pub error: &'static str,
    /// `detail.message`.
    pub message: String,
    /// Where in the request a refused value was, when it is sent as a value error (see
    /// [`ApiError::into_value_error`]).
    loc: Option<Vec<String>>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
            loc: None,
        }
    }

    /// For a create's body: a refused value (422 `ValidationError`) is sent as the real
    /// service's validators send one, FastAPI's `{"detail": [{"loc": ["body", <field>], "msg":
    /// <message>, "type": "value_error"}]}`. On create, the Python SDK raises `ValidationError`
    /// only for that shape; any other 422 there is a `ResourceCreationError`. The field is the
    /// first of `fields` the message names.
    pub(crate) fn into_value_error(mut self, fields: &[&str]) -> Self {
        if self.status == StatusCode::UNPROCESSABLE_ENTITY && self.error == "ValidationError" {
            let field = self
                .message
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .find(|w| fields.contains(w));
            self.loc = Some(
                std::iter::once("body")
                    .chain(field)
                    .map(str::to_owned)
                    .collect(),
            );
        }
        self
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    /// Any status with its error name and message.
    pub(crate) fn with(
        status: StatusCode,
        error: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(status, error, message)
    }

    /// 404 for a path no route serves.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", "no such endpoint")
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
        match self.loc {
            Some(loc) => {
                let detail = [serde_json::json!({
                    "loc": loc,
                    "msg": self.message,
                    "type": "value_error",
                })];
                (self.status, Json(serde_json::json!({ "detail": detail }))).into_response()
            }
            None => (self.status, Json(ErrorBody::new(self.error, self.message))).into_response(),
        }
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid(m) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", m)
            }
            ConfigError::Malformed(m) => Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", m),
            ConfigError::Unsupported(m) => Self::new(StatusCode::BAD_REQUEST, "Unsupported", m),
        }
    }
}

/// A file operation's failure, by what the agent said.
fn file_error(op: FileOp, path: &str, kind: ErrorKind, message: String) -> ApiError {
    let error = match op {
        FileOp::Write => "WriteError",
        FileOp::Read => "ReadError",
    };
    match kind {
        ErrorKind::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "FileNotFound",
            format!("File '{path}' not found"),
        ),
        ErrorKind::IsADirectory => ApiError::new(
            StatusCode::BAD_REQUEST,
            error,
            format!("{path} is a directory"),
        ),
        ErrorKind::NotADirectory => ApiError::new(
            StatusCode::BAD_REQUEST,
            error,
            format!("a component of {path} is not a directory"),
        ),
        ErrorKind::PermissionDenied => ApiError::new(
            StatusCode::FORBIDDEN,
            "PermissionDenied",
            format!("permission denied: {path}"),
        ),
        ErrorKind::NoSpace => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            error,
            format!("no space left writing {path}"),
        ),
        // A search the agent refused as asked (an invalid glob).
        ErrorKind::BadRequest => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", message)
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, error, message),
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        use ControlError as E;
        match e {
            E::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "NotFound", m),
            E::Conflict(m) => Self::new(StatusCode::CONFLICT, "Conflict", m),
            E::Config(c) => c.into(),
            E::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "Forbidden", m),
            E::NotReady(m) => Self::new(StatusCode::BAD_REQUEST, "NotReady", m),
            E::Timeout(m) => Self::new(StatusCode::REQUEST_TIMEOUT, "Timeout", m),
            E::Exhausted(m) => Self::new(StatusCode::TOO_MANY_REQUESTS, "QuotaExceeded", m),
            E::Unavailable(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m)
            }
            E::BootFailed(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "SandboxConfig", m),
            E::CommandNotFound(m) => Self::new(StatusCode::NOT_FOUND, "CommandNotFound", m),
            E::Command(m) => Self::new(StatusCode::BAD_REQUEST, "CommandError", m),
            E::File {
                op,
                path,
                kind,
                message,
            } => file_error(op, &path, kind, message),
            E::Driver(d) if d.is_unreachable() => {
                tracing::warn!(error = %d, "sandbox agent unreachable");
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

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("malformed multipart body: {e}"),
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // serde's message already names the field ("unknown field `x`", "invalid type ...").
            JsonRejection::JsonDataError(e) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ValidationError",
                e.body_text()
                    .trim_start_matches(
                        "Failed to deserialize the JSON body into the target type: ",
                    )
                    .to_owned(),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Self::new(StatusCode::BAD_REQUEST, "InvalidJson", e.body_text())
            }
            JsonRejection::MissingJsonContentType(e) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                e.body_text(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PayloadTooLarge",
                    "request body too large",
                )
            }
            other => Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", other.body_text()),
        }
    }
}

/// `Query` whose rejection uses the API's error format: a query string that does not give the
/// endpoint's parameters (`limit=-1`, a missing `path`) is a 422 that names the parameter, as
/// FastAPI answers, not axum's plain-text 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(v) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(v))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ValidationError",
            rejection
                .body_text()
                .trim_start_matches("Failed to deserialize query string: ")
                .to_owned(),
        )
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
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(Self(v))
    }
}
