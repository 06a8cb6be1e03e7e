#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! Its own process: telemetry is global. A configured collector that is down never breaks a
//! request, and W3C trace context from a caller reaches the calls a handler makes.

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use ctr_service_kit::testing::TestPki;
use ctr_service_kit::{App, ClientAuth, Health, Metrics, ServerConfig, Service};

/// Answers the `traceparent` this handler would put on an outgoing call.
async fn outgoing_traceparent() -> String {
    let mut headers = HeaderMap::new();
    ctr_service_kit::telemetry::inject_trace_context(&mut headers);
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[test]
fn requests_succeed_while_the_collector_is_down_and_trace_context_crosses_the_hop() {
    let pki = TestPki::new();
    // Port 9 (discard) on loopback: nothing listens, every export fails.
    let config = ServerConfig {
        otlp_endpoint: Some("http://127.0.0.1:9".into()),
        ..pki.server_config("coupons")
    };
    let telemetry = ctr_service_kit::telemetry::init("coupons", &config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let routes = Router::new()
            .route("/service/v1/hello", get(|| async { "hello" }))
            .route("/service/v1/traceparent", get(outgoing_traceparent));
        let service = Service {
            name: "coupons",
            client_auth: ClientAuth::None,
        };
        let app = App::build(
            service,
            &config,
            routes,
            Health::default(),
            Metrics::default(),
        )
        .await
        .unwrap();
        let base = format!("https://127.0.0.1:{}", app.public_addr().port());
        let stop = app.shutdown_token();
        let served = tokio::spawn(app.run_until_stopped());
        let client = pki.client(None);
        for _ in 0..50 {
            assert_eq!(
                client
                    .get(format!("{base}/service/v1/hello"))
                    .send()
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }

        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let incoming = format!("00-{trace_id}-00f067aa0ba902b7-01");
        let outgoing = client
            .get(format!("{base}/service/v1/traceparent"))
            .header("traceparent", &incoming)
            .send()
            .await
            .unwrap();
        let outgoing = outgoing.text().await.unwrap();
        assert!(
            outgoing.starts_with(&format!("00-{trace_id}-")),
            "the caller's trace continues: {outgoing}"
        );
        assert!(
            !outgoing.contains("00f067aa0ba902b7"),
            "with a span of its own: {outgoing}"
        );

        let fresh = client
            .get(format!("{base}/service/v1/traceparent"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            fresh.starts_with("00-") && !fresh.contains(trace_id),
            "a request without context starts a trace: {fresh}"
        );
        stop.cancel();
        served.await.unwrap().unwrap();
    });
    drop(runtime);
    drop(telemetry);
}
