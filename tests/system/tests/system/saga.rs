//! The checkout saga as a client and a recovering relay see it: a checkout that outlives its
//! deadline answers 202 with the order's URL and still ends; a late retry of a redemption gets
//! the first answer; a failure names the domain and a stable cause, never an internal address.

use std::time::Duration;

use ctr_system_tests::{World, blackhole, problem_type};
use serde_json::{Value, json};

#[tokio::test]
async fn a_checkout_still_running_at_its_deadline_answers_202_with_the_order_url_and_ends_later() {
    let port = blackhole().await;
    let world = World::start_with(|s| {
        s.checkout_deadline = Duration::from_millis(200);
        let payments = s.issuers.get_mut("payments").unwrap();
        payments.redeem_url = format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
    })
    .await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let response = world
        .customer
        .post(
            world
                .relay
                .url(&format!("/service/v1/orders/{order}/checkout")),
        )
        .json(&json!({"tokens": tokens}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/service/v1/orders/{order}"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "checking_out", "{body}");

    let view = world.ended(world.relay.url(&location)).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(
        view["failure"],
        json!({"capability": "payments:capture", "reason": "issuer-unavailable",
               "detail": "the domain did not answer in time"}),
        "a stable cause, no URL or error chain"
    );
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["spent"].as_u64()),
        (Some(5000), Some(0)),
        "compensated"
    );
}

#[tokio::test]
async fn an_unavailable_domain_is_named_without_its_internal_address() {
    let port = blackhole().await;
    let world = World::start_with(|s| {
        let payments = s.issuers.get_mut("payments").unwrap();
        payments.redeem_url = format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
    })
    .await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (502, "issuer-unavailable"),
        "{body}"
    );
    let mut answer = body.clone();
    answer["type"] = Value::Null; // the problem type URI is the one URL an answer carries
    let text = answer.to_string();
    for internal in [
        "127.0.0.1",
        &port.to_string(),
        "https://",
        "error sending request",
    ] {
        assert!(!text.contains(internal), "`{internal}` leaked: {text}");
    }
    assert_eq!(body["cause"], "issuer-unavailable");
    assert_eq!(body["failed_capability"], "payments:capture");
}

#[tokio::test]
async fn a_redemption_after_its_token_expired_is_honoured_while_the_hold_is_held() {
    let world = World::start().await;
    let relay = world.as_relay();
    let order = world.open_order("c_alice", 4999).await;
    let (_, captured) = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 100)
        .await;
    let (_, late) = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 200)
        .await;
    let (_, too_late) = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 300)
        .await;
    let url = world
        .payments
        .running
        .url("/service/v1/payments/redemptions");
    let redeem = |token: &Value| json!({"token": token["token"], "order_processing_id": order, "customer_id": "c_alice"});
    let (status, first) = world.post_as(&relay, url.clone(), redeem(&captured)).await;
    assert_eq!(
        (status, first["replayed"].as_bool()),
        (200, Some(false)),
        "{first}"
    );

    world.clock.advance(Duration::from_secs(300)); // past the tokens' exp and leeway
    let (status, again) = world.post_as(&relay, url.clone(), redeem(&captured)).await;
    assert_eq!(
        (
            status,
            again["status"].as_str(),
            again["replayed"].as_bool()
        ),
        (200, Some("captured"), Some(true)),
        "the recorded result, not token-expired: {again}"
    );
    assert_eq!(again["jti"], first["jti"]);

    // The relay consumed a token in its lifetime and redeems it later (a checkout admitted in
    // its last seconds, or resumed by recovery): the hold is still held, so it is honoured.
    let (status, body) = world.post_as(&relay, url.clone(), redeem(&late)).await;
    assert_eq!(
        (status, body["status"].as_str(), body["replayed"].as_bool()),
        (200, Some("captured"), Some(false)),
        "a genuine token of a hold still held: {body}"
    );
    let other_customer =
        json!({"token": captured["token"], "order_processing_id": order, "customer_id": "c_bob"});
    let (status, body) = world.post_as(&relay, url.clone(), other_customer).await;
    assert_eq!(
        (status, problem_type(&body)),
        (409, "customer-mismatch"),
        "the first answer goes only to the same order and customer: {body}"
    );

    world.clock.advance(Duration::from_secs(301)); // past the hold's own expiry (600 s)
    let (status, body) = world.post_as(&relay, url, redeem(&too_late)).await;
    assert_eq!(
        (status, problem_type(&body)),
        (410, "hold-expired"),
        "the hold's expiry bounds a redemption: {body}"
    );
}
