//! One API error type, rendered as RFC 9457 `application/problem+json`.

use std::fmt::Display;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::request_id;

/// The base of every problem `type` URI; the slug follows.
pub const PROBLEM_BASE: &str = "https://ctr.dev/problems/";

/// An error answered to a client. 4xx say what was wrong; 5xx say only the request id (the
/// cause is logged).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extensions: Map<String, Value>,
    /// Seconds after which a retry may succeed: the `Retry-After` header of a 429 or 503.
    pub retry_after: Option<u64>,
    /// A `WWW-Authenticate` challenge (RFC 6750) for a 401 or 403 about an access token.
    pub challenge: Option<Box<str>>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(flatten)]
    extensions: &'a Map<String, Value>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            retry_after: None,
            challenge: None,
        }
    }

    /// 429: this client (a customer, told apart by its id) is over one of its limits.
    pub fn too_many(slug: &'static str, detail: impl Into<String>, retry_after: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            slug,
            "Too many requests",
            detail,
        )
        .retry_after(retry_after)
    }

    /// Answers with `Retry-After: seconds` (at least 1).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }
}

/// Seconds from `now` until the Unix time `at`, for `Retry-After`: at least 1, and 60 when
/// nothing says when (`at` unknown).
pub fn seconds_until(at: Option<i64>, now: i64) -> u64 {
    at.map_or(60, |at| {
        u64::try_from(at.saturating_sub(now)).unwrap_or(0).max(1)
    })
}

impl ApiError {
    /// A field or rule of the request is wrong (422).
    pub fn invalid(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            slug,
            "The request is not acceptable",
            detail,
        )
    }

    pub fn not_found(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, slug, "Not found", detail)
    }

    pub fn conflict(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, slug, "Conflict", detail)
    }

    /// A server-side failure: the cause is logged, the client gets the request id only.
    pub fn internal(cause: impl Display) -> Self {
        let request_id = crate::request_id::current();
        tracing::error!(error = %cause, request_id, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the request failed on the server; quote the request id when reporting it",
        )
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug)
    }
}

impl Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.slug, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = request_id::current();
        let body = Problem {
            type_: self.type_uri(),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            instance: id.as_ref().map(|id| format!("urn:ctr:request:{id}")),
            request_id: id,
            extensions: &self.extensions,
        };
        let mut response = (self.status, Json(body)).into_response();
        response
            .extensions_mut()
            .insert(crate::metrics::ProblemType(self.slug));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self
            .challenge
            .and_then(|c| HeaderValue::try_from(String::from(c)).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl From<ctr_json::Error> for ApiError {
    /// The problem names the path and position of the fault, never the value found there.
    fn from(error: ctr_json::Error) -> Self {
        let problem = match error.kind {
            ctr_json::ErrorKind::Data => Self::invalid("invalid-request", error.to_string()),
            ctr_json::ErrorKind::Syntax | ctr_json::ErrorKind::Eof => Self::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                error.to_string(),
            ),
        };
        let problem = problem
            .with("line", error.line)
            .with("column", error.column);
        if error.path.is_empty() {
            problem
        } else {
            problem.with("field", error.path)
        }
    }
}

/// A JSON request body, decoded with [`ctr_json::decode`]: a refusal is a problem that says
/// where the body is wrong and never repeats what it holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

/// `application/json` or `application/<anything>+json`, as axum's own `Json` accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = json_body(req, state).await?;
        Ok(Self(ctr_json::decode(&body)?))
    }
}

/// The bytes of a request that must be JSON: 415 if it says it is not, 413 if it is larger
/// than the service accepts.
pub(crate) async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    if !is_json(req.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "the body must be JSON, sent with `content-type: application/json`",
        ));
    }
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                "the request body is larger than this service accepts",
            ),
            status => ApiError::new(
                status,
                "bad-request",
                "Bad request",
                "the request body could not be read",
            ),
        })
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("route-not-found", "no route matches this path")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not take that method",
    )
}
