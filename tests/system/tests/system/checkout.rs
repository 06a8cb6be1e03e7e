//! The relay with the three domains: the whole flow, over real TLS and mTLS.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctr_system_tests::{World, blackhole, outcomes, problem_type};
use serde_json::{Value, json};

/// Balances, coupon use and order status show that nothing was redeemed.
async fn assert_nothing_redeemed(world: &World, order: &str, why: &str) {
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["held"].as_u64(), balance["spent"].as_u64()),
        (Some(500), Some(0)),
        "{why}: points untouched"
    );
    assert_eq!(
        world.coupon("SPRING10").await["uses"],
        0,
        "{why}: coupon unused"
    );
    let (_, view) = world
        .get(world.relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "open", "{why}: the order stays open");
}

#[tokio::test]
async fn a_checkout_with_coupon_points_and_payment_completes_and_changes_each_domain_once() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    assert_eq!(world.balance("c_alice").await["held"], 500);

    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    let outcomes: Vec<_> = body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["capability"].clone(), t["outcome"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("coupons:redeem", "redeemed"),
            ("points:redeem", "redeemed"),
            ("payments:capture", "redeemed")
        ]
        .map(|(c, o)| (json!(c), json!(o)))
    );
    assert!(
        !body.to_string().contains(&tokens[0]),
        "the order view never shows a token"
    );

    let balance = world.balance("c_alice").await;
    assert_eq!(
        (
            balance["available"].as_u64(),
            balance["held"].as_u64(),
            balance["spent"].as_u64()
        ),
        (Some(4500), Some(0), Some(500))
    );
    assert_eq!(world.coupon("SPRING10").await["uses"], 1);
    let payment_jti = body["tokens"][2]["jti"].as_str().unwrap();
    let payment = world.payment_status(payment_jti).await;
    assert_eq!(payment, "captured");
    let (_, view) = world
        .get(world.relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "completed");
}

fn tamper_payload(token: &str, f: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = ctr_system_tests::jws_part(token, 1);
    f(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    )
}

#[tokio::test]
async fn every_envelope_failure_rejects_the_whole_checkout_with_its_problem_type_and_redeems_nothing()
 {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let other_order = world.open_order("c_alice", 4999).await;
    let (_, foreign) = world
        .confirm_coupon(&other_order, "c_alice", "FIVEOFF", 4999)
        .await;
    let foreign = foreign["token"].as_str().unwrap().to_owned();
    let with = |i: usize, token: String| {
        let mut t = tokens.clone();
        t[i] = token;
        t
    };
    let cases: Vec<(&str, Vec<String>, u16, &str)> = vec![
        (
            "a tampered payload",
            with(1, tamper_payload(&tokens[1], |c| c["sub"] = json!("c_bob"))),
            422,
            "token-signature-invalid",
        ),
        (
            "a truncated token",
            with(0, tokens[0][..tokens[0].len() - 4].to_owned()),
            422,
            "token-signature-invalid",
        ),
        (
            "garbage",
            with(2, "not.a.token".into()),
            422,
            "token-malformed",
        ),
        (
            "a token over 8 KiB",
            with(2, "a".repeat(9000)),
            413,
            "token-too-large",
        ),
        (
            "a token of another order",
            with(0, foreign),
            422,
            "order-mismatch",
        ),
        (
            "the same token twice",
            vec![tokens[0].clone(), tokens[0].clone(), tokens[2].clone()],
            422,
            "duplicate-token",
        ),
        (
            "no payment token: coupon and points leave 39.99 unpaid",
            tokens[..2].to_vec(),
            422,
            "settlement-sum-mismatch",
        ),
        ("no tokens", vec![], 422, "invalid-request"),
    ];
    for (why, presented, status, slug) in cases {
        let (got, body) = world.checkout(&order, &presented).await;
        assert_eq!((got, problem_type(&body)), (status, slug), "{why}: {body}");
        assert_nothing_redeemed(&world, &order, why).await;
    }
    // An expired token: the clock moves past the tokens' lifetime and leeway.
    world.clock.advance(Duration::from_secs(126));
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "token-expired"),
        "{body}"
    );
    assert_nothing_redeemed(&world, &order, "expired").await;
}

#[tokio::test]
async fn a_token_confirmed_for_another_customer_is_refused() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let mut tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, bobs) = world.confirm_points(&order, "c_bob", 100).await;
    assert_eq!(status, 201);
    tokens[1] = bobs["token"].as_str().unwrap().to_owned();
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "customer-mismatch"),
        "{body}"
    );
    assert_eq!(world.balance("c_bob").await["spent"], 0);
}

#[tokio::test]
async fn tokens_of_a_completed_order_are_refused_in_a_second_order() {
    let world = World::start().await;
    let first = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&first, "c_alice", "pm_alice_visa").await;
    assert_eq!(world.checkout(&first, &tokens).await.0, 200);
    let (status, body) = world.checkout(&first, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (409, "order-not-open"),
        "{body}"
    );
    let second = world.open_order("c_alice", 4999).await;
    let (status, body) = world.checkout(&second, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "order-mismatch"),
        "{body}"
    );
    assert_eq!(
        world.balance("c_alice").await["spent"],
        500,
        "redeemed once"
    );
    assert_eq!(world.coupon("SPRING10").await["uses"], 1);
}

#[tokio::test]
async fn fifty_concurrent_checkouts_with_the_same_tokens_complete_exactly_once() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let attempts = (0..50).map(|_| world.checkout(&order, &tokens));
    let results = futures::future::join_all(attempts).await;
    world.assert_one_checkout_won(&results).await;
}

#[tokio::test]
async fn a_declined_capture_cancels_the_earlier_redemptions_in_reverse_and_fails_the_order() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world
        .three_tokens(&order, "c_alice", "pm_alice_declines")
        .await;
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (409, "redemption-refused"),
        "{body}"
    );
    assert_eq!(body["failed_capability"], "payments:capture");
    assert_eq!(body["cause"], "payment-declined");

    let (_, view) = world
        .get(world.relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["failure"]["capability"], "payments:capture");
    assert_eq!(view["failure"]["reason"], "payment-declined");
    let outcomes = outcomes(&view);
    assert_eq!(outcomes, ["compensated", "compensated", "failed"]);

    let coupon = world.coupon("SPRING10").await;
    assert_eq!(
        (coupon["uses"].as_u64(), coupon["status"].as_str()),
        (Some(0), Some("available")),
        "coupon back to unused"
    );
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (
            balance["available"].as_u64(),
            balance["held"].as_u64(),
            balance["spent"].as_u64()
        ),
        (Some(5000), Some(0), Some(0))
    );
    let payment_jti = view["tokens"][2]["jti"].as_str().unwrap();
    let payment = world.payment_status(payment_jti).await;
    assert_eq!(payment, "voided", "the declined authorization is voided");
}

#[tokio::test]
async fn a_domain_that_is_down_fails_the_checkout_in_bounded_time_and_compensates() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let World { payments, .. } = &world;
    payments.running.stop.cancel();
    while tokio::net::TcpStream::connect(payments.running.public)
        .await
        .is_ok()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (502, "issuer-unavailable"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no hang: {:?}",
        started.elapsed()
    );
    assert_eq!(body["failed_capability"], "payments:capture");
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["spent"].as_u64()),
        (Some(5000), Some(0))
    );
    assert_eq!(world.coupon("SPRING10").await["uses"], 0);
}

#[tokio::test]
async fn a_domain_that_never_answers_times_out_and_the_checkout_compensates() {
    // The payments redeem URL points at a listener that never speaks.
    let port = blackhole().await;
    let world = World::start_with(|s| {
        let payments = s.issuers.get_mut("payments").unwrap();
        payments.redeem_url = format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
    })
    .await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let started = Instant::now();
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (502, "issuer-unavailable"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by timeouts: {:?}",
        started.elapsed()
    );
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["spent"].as_u64()),
        (Some(5000), Some(0))
    );
    assert_eq!(world.coupon("SPRING10").await["uses"], 0);
}

#[tokio::test]
async fn after_a_key_rotation_old_tokens_still_verify_and_new_ones_after_a_refetch() {
    let world = World::start().await;
    let first = world.open_order("c_alice", 4999).await;
    let old_tokens = world.three_tokens(&first, "c_alice", "pm_alice_visa").await;

    let kms = world.coupons.state.signer.kms().clone();
    kms.rotate("coupons-signing").await.unwrap();
    let (_, jwks) = world
        .get(world.coupons.running.url("/.well-known/jwks.json"))
        .await;
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "both versions are published"
    );

    assert_eq!(
        world.checkout(&first, &old_tokens).await.0,
        200,
        "a v1 token verifies after rotation"
    );

    let second = world.open_order("c_alice", 4999).await;
    let new_tokens = world
        .three_tokens(&second, "c_alice", "pm_alice_visa")
        .await;
    world.clock.advance(Duration::from_secs(6)); // past the relay's JWKS refetch interval
    let (status, body) = world.checkout(&second, &new_tokens).await;
    assert_eq!(
        status, 200,
        "a v2 token verifies once the relay refetched: {body}"
    );
}

#[tokio::test]
async fn a_full_order_store_answers_503_and_keeps_the_orders_it_has() {
    let world = World::start_with(|s| s.max_orders = 2).await;
    let first = world.open_order("c_alice", 4999).await;
    world.open_order("c_bob", 1000).await;

    let (status, body) = world
        .post(
            world.relay.url("/service/v1/orders"),
            json!({"customer_id": "c_carol", "total": {"amount": 100, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (503, "orders-at-capacity"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap_or("").contains("at most 2"),
        "{body}"
    );

    // The stored orders are untouched and still check out.
    let tokens = world.three_tokens(&first, "c_alice", "pm_alice_visa").await;
    let (status, body) = world.checkout(&first, &tokens).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("completed")),
        "{body}"
    );
}

/// How many tokens the relay's store holds as consumed.
async fn consumed(store: &ctr_store::Store) -> i64 {
    let (n,): (i64,) = store
        .fetch_one(ctr_store::query_as("SELECT COUNT(*) FROM replay"))
        .await
        .unwrap();
    n
}

/// The relay consumes a checkout's tokens in one statement: when one of them was consumed
/// before (here written into the relay's store behind its back), the checkout is refused naming
/// that token, and the others are not consumed: the same checkout succeeds once it is gone.
#[tokio::test]
async fn a_token_consumed_before_refuses_the_checkout_naming_it_and_consumes_no_other() {
    use ctr_store::query;
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let claims = ctr_system_tests::jws_part(&tokens[1], 1);
    let (iss, jti) = (
        claims["iss"].as_str().unwrap(),
        claims["jti"].as_str().unwrap(),
    );

    // Behind the relay's back, but through the one owner of its store.
    let store = world.relay_state.orders.store();
    store
        .execute(
            query("INSERT INTO replay (iss, jti, forget_at) VALUES ($1, $2, $3)")
                .bind(iss)
                .bind(jti)
                .bind(i64::MAX),
        )
        .await
        .unwrap();

    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (409, "token-replayed"),
        "{body}"
    );
    assert_eq!(body["token_index"], 1, "{body}");
    assert_eq!(consumed(store).await, 1, "no other token was consumed");
    assert_nothing_redeemed(&world, &order, "a replayed token").await;

    store.execute(query("DELETE FROM replay")).await.unwrap();
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("completed")),
        "{body}"
    );
    assert_eq!(consumed(store).await, 3);
}
