//! A request id on every request and response (`x-request-id`), reachable from anywhere in the
//! request's task so that errors and logs carry it.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Keeps a caller's id when it is short and plain, otherwise makes a UUIDv7.
fn accept(value: Option<&HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .filter(|v| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = accept(request.headers().get(HEADER));
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(HEADER, value.clone());
        let mut response = REQUEST_ID.scope(id, next.run(request)).await;
        response.headers_mut().insert(HEADER, value);
        return response;
    }
    next.run(request).await
}
