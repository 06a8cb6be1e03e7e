//! `ctr` makes what it is asked for once: each command sends a fresh `Idempotency-Key`, and
//! sends the same request again under the same key when the service says to retry.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ctr_service_kit::testing::TestPki;
use ctr_service_kit::{App, ClientAuth, Health, Metrics, Service};
use parking_lot::Mutex;
use serde_json::json;

/// A bearer access token as `ctr` reads one (no `cnf`: no DPoP key needed); the stand-in
/// verifies nothing.
fn bearer_token() -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "c_alice"}),
        &jsonwebtoken::EncodingKey::from_secret(b"a stand-in's token"),
    )
    .unwrap()
}

#[tokio::test]
async fn each_command_sends_a_fresh_key_and_its_retries_the_same_one() {
    let pki = TestPki::new();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = seen.clone();
    // A relay whose store fails the first time it sees a key (503), then finds the first
    // request still running (409 outstanding), then answers.
    let tries: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let open = move |headers: HeaderMap| {
        let (recorded, tries) = (recorded.clone(), tries.clone());
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            recorded.lock().push(key.clone());
            let mut tries = tries.lock();
            let n = tries.entry(key).or_default();
            *n += 1;
            let problem = |status: StatusCode, slug: &str| {
                (
                    status,
                    Json(
                        json!({"type": format!("https://ctr.dev/problems/{slug}"), "status": status.as_u16()}),
                    ),
                )
            };
            match *n {
                1 => problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
                2 => problem(StatusCode::CONFLICT, "idempotency-request-outstanding"),
                _ => (
                    StatusCode::CREATED,
                    Json(json!({"order_processing_id": "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e"})),
                ),
            }
        }
    };
    let server = pki.server_config("order-processing");
    let app = App::build(
        Service {
            name: "order-processing",
            client_auth: ClientAuth::None,
        },
        &server,
        axum::Router::new().route("/service/v1/orders", post(open)),
        Health::default(),
        Metrics::default(),
    )
    .await
    .unwrap();
    let relay = format!("https://127.0.0.1:{}", app.public_addr().port());
    tokio::spawn(app.run_until_stopped());

    let token = bearer_token();
    for _ in 0..2 {
        let (relay, ca, token) = (relay.clone(), server.tls_root.clone(), token.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ctr"))
                .args(["order", "create", "--amount", "4999", "--id-only"])
                .env("CTR_RELAY_URL", relay)
                .env("CTR_CA", ca)
                .env("CTR_ACCESS_TOKEN", token)
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e"
        );
    }
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 6, "three tries per command: {seen:?}");
    assert!(
        seen[..3].iter().all(|k| *k == seen[0]),
        "one key per command: {seen:?}"
    );
    assert!(
        seen[3..].iter().all(|k| *k == seen[3]),
        "one key per command: {seen:?}"
    );
    assert_ne!(seen[0], seen[3], "a fresh key per command");
    for key in [&seen[0], &seen[3]] {
        let inner = key.strip_prefix('"').and_then(|k| k.strip_suffix('"'));
        assert!(
            inner.is_some_and(|k| uuid::Uuid::parse_str(k).is_ok()),
            "a Structured Field string holding a UUID: {key}"
        );
    }
}
