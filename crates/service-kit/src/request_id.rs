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

/// The header a caller's own plain id is kept under, for the request's log span only.
pub const CALLER_HEADER: &str = "x-caller-request-id";

/// A caller's id when it is short and plain.
fn plain(value: Option<&HeaderValue>) -> Option<HeaderValue> {
    value
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .filter(|v| {
            v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        })
        .cloned()
}

/// Every request gets an id made here (a UUIDv7), in its response and in any problem it
/// answers. A caller's `x-request-id` is never adopted, so no answer repeats it; a plain one
/// is logged with the request (`caller_request_id`) to correlate the two.
pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    let caller = plain(request.headers().get(HEADER));
    let headers = request.headers_mut();
    headers.remove(CALLER_HEADER);
    if let Some(caller) = caller {
        headers.insert(CALLER_HEADER, caller);
    }
    let Ok(value) = HeaderValue::from_str(&id) else {
        return next.run(request).await;
    };
    headers.insert(HEADER, value.clone());
    let mut response = REQUEST_ID.scope(id, next.run(request)).await;
    response.headers_mut().insert(HEADER, value);
    response
}
