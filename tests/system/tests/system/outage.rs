//! Faults that last longer than a checkout: a domain down for many recovery passes starves no
//! crashed checkout, and a compensation is retried, with backoff, until the domain answers,
//! unless the domain refuses for good.

use std::time::Duration;

use ctr_system_tests::{CrashableRelay, World, blackhole, expire_claims, outcomes, problem_type};
use serde_json::{Value, json};

use crate::durability::checkout_hanging_on_payment;

/// The value of the sample of `metric` (no labels) in the OpenMetrics `text`.
fn sample(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(metric)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn pending_compensations_during_an_outage_never_delay_the_recovery_of_a_crashed_checkout() {
    let world = World::start().await;
    let payments_down = blackhole().await;
    let server = world.relay_under_test().await;
    let store = server.store_url.clone();

    // A relay dies while payments hangs on a capture: its checkout stays `checking_out`.
    let mut dying = world.relay_settings.clone();
    dying.checkout_deadline = Duration::from_millis(300);
    dying.call_timeout = Duration::from_secs(60);
    dying.issuers.get_mut("payments").unwrap().redeem_url =
        format!("https://127.0.0.1:{payments_down}/service/v1/payments/redemptions");
    let relay = CrashableRelay::start(server.clone(), dying, world.clock.clone()).await;
    let (crashed, _) = checkout_hanging_on_payment(&world, &relay).await;
    relay.kill();

    // Another relay over the same store, payments still down, fewer recovery slots than
    // pending compensations: its own checkouts fail at capture, and none of their voids gets
    // through.
    let mut settings = world.relay_settings.clone();
    settings.call_timeout = Duration::from_millis(200);
    settings.call_retries = 0;
    settings.recovery_interval = Duration::from_millis(100);
    settings.recovery_concurrency = 2;
    let payments = settings.issuers.get_mut("payments").unwrap();
    payments.redeem_url =
        format!("https://127.0.0.1:{payments_down}/service/v1/payments/redemptions");
    payments.cancel_url =
        format!("https://127.0.0.1:{payments_down}/service/v1/payments/cancellations");
    let relay = CrashableRelay::start(server, settings, world.clock.clone()).await;
    world.wait_until_admin_ready(relay.admin).await;
    let failing = 6;
    for _ in 0..failing {
        let order = world
            .open_order_at(&relay.url("/service/v1/orders"), "c_bob", 1000)
            .await;
        let (status, payment) = world
            .post_with(
                Some(&world.token("c_bob")),
                world
                    .payments
                    .running
                    .url("/service/v1/payments/confirmations"),
                json!({"order_processing_id": order, "customer_id": "c_bob",
                       "payment_method_id": "pm_bob_mastercard",
                       "amount": {"amount": 1000, "currency": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{payment}");
        let (status, body) = world
            .post_with(
                Some(&world.token("c_bob")),
                relay.url(&format!("/service/v1/orders/{order}/checkout")),
                json!({"tokens": [payment["token"]]}),
            )
            .await;
        assert_eq!(
            (status, problem_type(&body)),
            (502, "issuer-unavailable"),
            "{body}"
        );
    }

    // The dead relay's claim runs out (and every pending compensation falls due): the next
    // pass takes the crashed checkout, however many compensations wait.
    expire_claims(&store).await;
    let url = relay.url(&format!("/service/v1/orders/{crashed}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, view) = world.get(url.clone()).await;
        if view["status"] != "checking_out" {
            assert_eq!(view["status"], "failed", "the capture still hangs: {view}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the crashed checkout was never recovered while {failing} compensations were pending: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The operator sees the backlog: every failed order's compensation pending, and for how
    // long.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = world
            .metrics_text(&relay.admin_url("/admin/v1/metrics"))
            .await;
        let pending = sample(&metrics, "ctr_compensations_pending");
        let oldest = sample(&metrics, "ctr_compensation_oldest_pending_seconds");
        if pending == Some(f64::from(failing + 1)) && oldest.is_some_and(|age| age > 0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pending {pending:?}, oldest {oldest:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_cancellation_refused_for_a_passing_reason_is_retried_needs_attention_when_overdue_and_clears_once_it_succeeds()
 {
    let world = World::start().await;
    let server = world.relay_under_test().await;
    let store = server.store_url.clone();

    // Payments does not capture; points answers its cancellations with a 404 (a route this
    // relay was misconfigured with): not a refusal for good.
    let (settings, misrouted) = world
        .misrouted_compensation(world.relay_settings.clone())
        .await;
    let relay = CrashableRelay::start(server.clone(), misrouted, world.clock.clone()).await;
    world.wait_until_admin_ready(relay.admin).await;
    let (order, status, body) = world.check_out_at(&relay.url(""), "pm_alice_visa").await;
    assert_eq!(
        (status, problem_type(&body)),
        (502, "issuer-unavailable"),
        "{body}"
    );

    // Retried, never `unreversed`; past CTR_COMPENSATION_ATTENTION_AFTER it needs attention,
    // saying why, while the retries go on.
    let url = relay.url(&format!("/service/v1/orders/{order}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let view: Value = loop {
        let (_, view) = world.get(url.clone()).await;
        assert_ne!(
            outcomes(&view)[1],
            "unreversed",
            "a 404 is no refusal for good: {view}"
        );
        if view["needs_attention"] == true {
            break view;
        }
        assert!(tokio::time::Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["compensation_pending"], true, "{view}");
    assert_eq!(
        outcomes(&view),
        ["compensated", "redeemed", "failed"],
        "{view}"
    );
    let attention = view["attention"].as_str().unwrap();
    assert!(
        attention.starts_with("points:redeem: compensation still retried")
            && attention.contains("route-not-found"),
        "{attention}"
    );
    assert_eq!(world.balance("c_alice").await["spent"].as_u64(), Some(500));

    // The route is mended (a relay with the right configuration takes over): the reversal
    // goes through and the order no longer needs attention.
    relay.kill();
    let relay = CrashableRelay::start(server, settings, world.clock.clone()).await;
    expire_claims(&store).await;
    let view = world
        .ended(relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(
        outcomes(&view),
        ["compensated", "compensated", "failed"],
        "{view}"
    );
    assert_eq!(
        (view["needs_attention"].as_bool(), &view["attention"]),
        (Some(false), &Value::Null),
        "{view}"
    );
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["spent"].as_u64()),
        (Some(5000), Some(0)),
        "the points came back"
    );
}
