//! Bad requests answer RFC 9457 problem+json.

use serde_json::Value;

use crate::helpers::TestApp;

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], id, "the problem names the request id");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    (status, body)
}

#[tokio::test]
async fn malformed_unsupported_oversized_and_unrouted_requests_answer_problems() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let echo = app.public_url("/service/v1/echo");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "unknown route",
            client.get(app.public_url("/service/v1/nowhere")),
            404,
            "route-not-found",
        ),
        (
            "wrong method",
            client.delete(app.public_url("/service/v1/hello")),
            405,
            "method-not-allowed",
        ),
        (
            "malformed JSON",
            client
                .post(&echo)
                .header("content-type", "application/json")
                .body("{\"a\":"),
            400,
            "malformed-json",
        ),
        (
            "no content type",
            client.post(&echo).body("{}"),
            415,
            "unsupported-media-type",
        ),
        (
            "text content type",
            client
                .post(&echo)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported-media-type",
        ),
        (
            "a body over the limit",
            client
                .post(&echo)
                .header("content-type", "application/json")
                .body(format!("{{\"a\":\"{}\"}}", "x".repeat(70 * 1024))),
            413,
            "body-too-large",
        ),
    ];
    for (why, request, status, slug) in cases {
        let (got, body) = problem(request.send().await.unwrap()).await;
        assert_eq!(got, status, "{why}: {body}");
        assert_eq!(
            body["type"],
            format!("https://ctr.dev/problems/{slug}"),
            "{why}"
        );
    }
}
