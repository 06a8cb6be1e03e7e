//! State survives restarts, and a relay that dies mid-checkout leaves nothing half done: after
//! it comes back, its recovery worker resumes the redemptions or compensates them.

use std::time::Duration;

use ctr_system_tests::{CrashableRelay, World, blackhole, expire_claims, outcomes};
use serde_json::json;

#[tokio::test]
async fn after_a_restart_of_every_service_balances_payments_and_orders_are_unchanged_and_earlier_tokens_check_out_once()
 {
    let world = World::start().await;
    let done = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&done, "c_alice", "pm_alice_visa").await;
    let (status, completed) = world.checkout(&done, &tokens).await;
    assert_eq!(status, 200, "{completed}");
    let captured = completed["tokens"][2]["jti"].as_str().unwrap().to_owned();
    let waiting = world.open_order("c_alice", 4999).await;
    let confirmed_before = world
        .three_tokens(&waiting, "c_alice", "pm_alice_visa")
        .await;

    let world = world.restart().await;

    let balance = world.balance("c_alice").await;
    assert_eq!(
        (
            balance["available"].as_u64(),
            balance["held"].as_u64(),
            balance["spent"].as_u64()
        ),
        (Some(4000), Some(500), Some(500)),
        "no balance went back to its seed"
    );
    let coupon = world.coupon("SPRING10").await;
    assert_eq!(
        (coupon["uses"].as_u64(), coupon["reserved"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(world.payment_status(&captured).await, "captured");
    let (status, order) = world
        .get(world.relay.url(&format!("/service/v1/orders/{done}")))
        .await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["status"], "completed");
    assert_eq!(
        order["tokens"], completed["tokens"],
        "the order is as it was"
    );

    let (status, body) = world.checkout(&waiting, &confirmed_before).await;
    assert_eq!(
        status, 200,
        "tokens confirmed before the restart check out: {body}"
    );
    let (status, again) = world.checkout(&waiting, &confirmed_before).await;
    assert_eq!(status, 409, "once: {again}");
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (
            balance["available"].as_u64(),
            balance["held"].as_u64(),
            balance["spent"].as_u64()
        ),
        (Some(4000), Some(0), Some(1000))
    );
}

/// Opens an order on `relay`, confirms coupon, points and payment for it, and starts its
/// checkout, which hangs on the payment capture: answers the order and the payment's jti.
pub(crate) async fn checkout_hanging_on_payment(
    world: &World,
    relay: &CrashableRelay,
) -> (String, String) {
    world.wait_until_admin_ready(relay.admin).await;
    let order = world
        .open_order_at(&relay.url("/service/v1/orders"), "c_alice", 4999)
        .await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, body) = world
        .post(
            relay.url(&format!("/service/v1/orders/{order}/checkout")),
            json!({"tokens": tokens}),
        )
        .await;
    assert_eq!(status, 202, "the capture hangs: {body}");
    let payment = body["tokens"][2]["jti"].as_str().unwrap().to_owned();
    // Wait until the log says the capture is under way.
    for _ in 0..100 {
        let (_, view) = world
            .get(relay.url(&format!("/service/v1/orders/{order}")))
            .await;
        if view["tokens"][2]["outcome"] == "redeeming" {
            assert_eq!(view["tokens"][1]["outcome"], "redeemed");
            return (order, payment);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the capture never started");
}

#[tokio::test]
async fn a_relay_killed_during_a_capture_resumes_it_after_restart_and_the_order_completes_once() {
    let world = World::start().await;
    let port = blackhole().await;
    let server = world.relay_under_test().await;
    let mut dying = world.relay_settings.clone();
    dying.checkout_deadline = Duration::from_millis(300);
    dying.call_timeout = Duration::from_secs(60);
    dying.issuers.get_mut("payments").unwrap().redeem_url =
        format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
    let relay = CrashableRelay::start(server.clone(), dying, world.clock.clone()).await;
    let (order, payment) = checkout_hanging_on_payment(&world, &relay).await;
    relay.kill();

    // The relay comes back (payments answers again); once the dead relay's lease has run out,
    // the recovery worker takes the checkout over and captures.
    let mut restarted = world.relay_settings.clone();
    restarted.recovery_interval = Duration::from_millis(100);
    let store = server.store_url.clone();
    let relay = CrashableRelay::start(server, restarted, world.clock.clone()).await;
    expire_claims(&store).await; // the dead relay's claim runs out
    let view = world
        .ended(relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(world.payment_status(&payment).await, "captured");
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (
            balance["available"].as_u64(),
            balance["held"].as_u64(),
            balance["spent"].as_u64()
        ),
        (Some(4500), Some(0), Some(500)),
        "points spent once"
    );
    assert_eq!(world.coupon("SPRING10").await["uses"], 1);
}

#[tokio::test]
async fn a_relay_killed_during_a_capture_that_still_fails_after_restart_compensates_everything() {
    let world = World::start().await;
    let port = blackhole().await;
    let server = world.relay_under_test().await;
    let mut settings = world.relay_settings.clone();
    settings.checkout_deadline = Duration::from_millis(300);
    settings.call_timeout = Duration::from_secs(60);
    settings.issuers.get_mut("payments").unwrap().redeem_url =
        format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
    let relay = CrashableRelay::start(server.clone(), settings.clone(), world.clock.clone()).await;
    let (order, payment) = checkout_hanging_on_payment(&world, &relay).await;
    relay.kill();

    // Payments still does not answer after the restart: the recovered capture times out, and
    // everything redeemed is reversed.
    settings.call_timeout = Duration::from_millis(300);
    settings.call_retries = 0;
    settings.recovery_interval = Duration::from_millis(100);
    let store = server.store_url.clone();
    let relay = CrashableRelay::start(server, settings, world.clock.clone()).await;
    expire_claims(&store).await; // the dead relay's claim runs out
    let view = world
        .ended(relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "failed", "{view}");
    let outcomes = outcomes(&view);
    assert_eq!(outcomes, ["compensated", "compensated", "failed"], "{view}");
    assert_eq!(world.payment_status(&payment).await, "voided");
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["spent"].as_u64()),
        (Some(5000), Some(0)),
        "the points came back"
    );
    assert_eq!(world.coupon("SPRING10").await["uses"], 0);
}
