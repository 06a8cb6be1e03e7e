#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! Its own process: telemetry is global. A configured collector that is down never breaks a
//! request.

use axum::Router;
use axum::routing::get;
use ctr_service_kit::testing::TestPki;
use ctr_service_kit::{App, ClientAuth, Health, Metrics, ServerConfig, Service};

#[test]
fn requests_succeed_while_the_otlp_collector_is_down() {
    let pki = TestPki::new();
    // Port 9 (discard) on loopback: nothing listens, every export fails.
    let config = ServerConfig {
        otlp_endpoint: Some("http://127.0.0.1:9".into()),
        ..pki.server_config("coupons")
    };
    let telemetry = ctr_service_kit::telemetry::init("coupons", &config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let routes = Router::new().route("/service/v1/hello", get(|| async { "hello" }));
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
        let url = format!(
            "https://127.0.0.1:{}/service/v1/hello",
            app.public_addr().port()
        );
        let stop = app.shutdown_token();
        let served = tokio::spawn(app.run_until_stopped());
        let client = pki.client(None);
        for _ in 0..50 {
            assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
        }
        stop.cancel();
        served.await.unwrap().unwrap();
    });
    drop(runtime);
    drop(telemetry);
}
