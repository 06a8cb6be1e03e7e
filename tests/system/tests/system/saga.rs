//! The checkout saga as a client and a recovering relay see it: a checkout that outlives its
//! deadline answers 202 with the order's URL and still ends; a late retry of a redemption gets
//! the first answer; a failure names the domain and a stable cause, never an internal address.

use std::time::Duration;

use ctr_system_tests::{World, blackhole, outcomes, problem_type};
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

#[tokio::test]
async fn a_reversal_refused_for_good_leaves_the_order_failed_needing_attention_for_an_operator() {
    // No domain reverses a redemption any more (a cancellation window of zero).
    let domains = ctr_domain_kit::DomainSettings {
        cancel_window: Duration::ZERO,
        ..ctr_system_tests::domain_settings()
    };
    let world = World::start_custom(domains, |s| {
        s.recovery_interval = Duration::from_millis(50);
    })
    .await;
    let completed = world.open_order("c_alice", 4999).await;
    let tokens = world
        .three_tokens(&completed, "c_alice", "pm_alice_visa")
        .await;
    assert_eq!(world.checkout(&completed, &tokens).await.0, 200);
    let failed = world.open_order("c_alice", 4999).await;
    let tokens = world
        .three_tokens(&failed, "c_alice", "pm_alice_declines")
        .await;
    let (status, body) = world.checkout(&failed, &tokens).await;
    assert_eq!((status, problem_type(&body)), (409, "redemption-refused"));

    let view = world
        .ended(world.relay.url(&format!("/service/v1/orders/{failed}")))
        .await;
    assert_eq!(
        (view["status"].as_str(), view["needs_attention"].as_bool()),
        (Some("failed"), Some(true)),
        "{view}"
    );
    let outcomes = outcomes(&view);
    assert_eq!(outcomes, ["unreversed", "unreversed", "failed"], "{view}");
    assert_eq!(
        view["attention"],
        "coupons:redeem: cancellation-window-closed; points:redeem: cancellation-window-closed",
        "in redemption order: {view}"
    );

    // An operator finds it on the admin listener, and in the metrics.
    let (status, listed) = world
        .get(world.relay.admin_url("/admin/v1/orders/attention"))
        .await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_processing_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed.as_str()]);
    let metrics = world
        .metrics_text(&world.relay.admin_url("/admin/v1/metrics"))
        .await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ctr_orders_needing_attention") && l.ends_with(" 1")),
        "{metrics}"
    );
    let (status, _) = world
        .get(world.relay.url("/service/v1/orders/attention"))
        .await;
    assert_ne!(status, 200, "the list is not on the public listener");

    // Past every retention, the janitor forgets the completed order, never the one needing
    // attention.
    world.clock.advance(Duration::from_secs(3 * 3600));
    let gone = world.relay.url(&format!("/service/v1/orders/{completed}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while world.get(gone.clone()).await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, kept) = world
        .get(world.relay.url(&format!("/service/v1/orders/{failed}")))
        .await;
    assert_eq!(
        (status, kept["needs_attention"].as_bool()),
        (200, Some(true))
    );
}

#[tokio::test]
async fn a_panic_in_a_saga_answers_202_and_recovery_finishes_the_checkout() {
    use ctr_system_tests::faults::{Fault, Plan};
    use ctr_system_tests::{CrashableRelay, expire_claims};
    use std::sync::Arc;

    let world = World::start().await;
    let server = world.relay_under_test().await;
    let mut settings = world.relay_settings.clone();
    settings.recovery_interval = Duration::from_millis(50);
    // Operations: open, begin, admit, the coupon's `redeeming` (4), the points' (5): a bug
    // there.
    let plan = Arc::new(Plan::new(Fault::PanicAt(5)));
    let relay = CrashableRelay::start_with_faults(
        server.clone(),
        settings,
        world.clock.clone(),
        Some(plan.clone() as Arc<dyn order_processing::faults::SagaFaults>),
    )
    .await;
    world.wait_until_admin_ready(relay.admin).await;
    let order = world
        .open_order_at(&relay.url("/service/v1/orders"), "c_alice", 4999)
        .await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let response = world
        .customer
        .post(relay.url(&format!("/service/v1/orders/{order}/checkout")))
        .json(&json!({"tokens": tokens}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        202,
        "the outcome is pending, not an error"
    );
    assert_eq!(
        response.headers()["location"],
        format!("/service/v1/orders/{order}").as_str()
    );
    assert!(plan.triggered());
    expire_claims(&server.store_url).await;
    let view = world
        .ended(relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "completed", "{view}");
    let balance = world.balance("c_alice").await;
    assert_eq!(balance["spent"], 500, "points spent once: {balance}");
}

#[tokio::test]
async fn shutdown_lets_a_running_checkout_finish_before_the_relay_exits() {
    let port = blackhole().await;
    let world = World::start_with(|s| {
        s.checkout_deadline = Duration::from_millis(200);
        s.call_timeout = Duration::from_secs(1);
        s.call_retries = 0;
        let payments = s.issuers.get_mut("payments").unwrap();
        payments.redeem_url = format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
    })
    .await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(status, 202, "the capture hangs: {body}");
    let relay = world.relay_state.clone();
    let World { relay: running, .. } = world;
    running.stop().await; // as SIGTERM: drain the listeners, then the sagas
    let id = ctr_service_kit::OrderProcessingId::parse(&order).unwrap();
    let stored = relay.orders.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.compensation_pending),
        (order_processing::OrderStatus::Failed, false),
        "the saga ended before the relay did"
    );
}

#[test]
fn a_checkout_deadline_not_shorter_than_the_request_timeout_is_refused_at_start() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pki = ctr_service_kit::testing::TestPki::new();
        let server = pki.server_config("order-processing");
        let settings = order_processing::RelaySettings {
            checkout_deadline: server.request_timeout,
            ..order_processing::RelaySettings::default()
        };
        let clock = std::sync::Arc::new(ctr_token::SystemClock);
        let Err(error) = order_processing::build_with(&server, &settings, clock).await else {
            panic!("a deadline as long as the request timeout was accepted");
        };
        assert!(
            error.to_string().contains("CTR_CHECKOUT_DEADLINE"),
            "{error}"
        );
    });
}

#[tokio::test]
async fn a_draining_relay_admits_no_new_checkout_and_says_so() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    world.relay_state.drain(Duration::ZERO).await; // what SIGTERM starts
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (503, "shutting-down"),
        "{body}"
    );
    let (_, view) = world
        .get(world.relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "open", "nothing consumed: {view}");
}
