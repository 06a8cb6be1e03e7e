//! Admin probes and metrics.

use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test]
async fn readiness_flips_from_503_naming_the_check_to_200_when_it_passes() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let not_ready = client
        .get(app.admin_url("/admin/v1/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_ready.status(), 503);
    assert_eq!(
        not_ready.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = not_ready.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("warmed-up"),
        "{body}"
    );

    let health: Value = client
        .get(app.admin_url("/admin/v1/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["checks"][0]["name"], "warmed-up");

    app.ready.store(true, Ordering::SeqCst);
    assert_eq!(
        client
            .get(app.admin_url("/admin/v1/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let health = client
        .get(app.admin_url("/admin/v1/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "healthy");
    assert_eq!(
        client
            .get(app.admin_url("/admin/v1/livez"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = TestApp::spawn().await;
    let client = app.client();
    for _ in 0..3 {
        assert_eq!(
            client
                .get(app.public_url("/service/v1/hello"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    client
        .get(app.public_url("/service/v1/nowhere"))
        .send()
        .await
        .unwrap();
    let metrics = client
        .get(app.admin_url("/admin/v1/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = r#"ctr_http_requests_total{listener="public",method="GET",route="/service/v1/hello",status="200"} 3"#;
    assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    assert!(
        metrics.contains(r#"route="unmatched",status="404""#),
        "{metrics}"
    );
    assert!(
        metrics.contains("ctr_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id_of_its_own_and_never_the_callers() {
    let app = TestApp::spawn().await;
    let client = app.client();
    for caller_id in [None, Some("abc-123"), Some("a\"b<script>")] {
        let mut request = client.get(app.public_url("/service/v1/nowhere"));
        if let Some(caller_id) = caller_id {
            request = request.header("x-request-id", caller_id);
        }
        let response = request.send().await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        let body = response.text().await.unwrap();
        assert!(
            body.contains(&id),
            "the problem names the request id: {body}"
        );
        if let Some(caller_id) = caller_id {
            assert!(!body.contains(caller_id), "{body}");
        }
    }
}

#[tokio::test]
async fn made_up_methods_share_one_metric_label() {
    let app = TestApp::spawn().await;
    let client = app.client();
    for method in ["FOO1", "FOO2", "FOO3"] {
        client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.public_url("/service/v1/hello"),
            )
            .send()
            .await
            .unwrap();
    }
    let metrics = client
        .get(app.admin_url("/admin/v1/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("FOO"), "{metrics}");
    assert!(
        metrics.contains(r#"method="OTHER",route="/service/v1/hello",status="405"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn service_clients_never_follow_a_redirect() {
    let app = TestApp::spawn().await;
    let response = app
        .client()
        .get(app.public_url("/service/v1/redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307, "answered as it is, not followed");
    assert_eq!(
        response.headers()["location"],
        "https://attacker.example/steal"
    );
}
