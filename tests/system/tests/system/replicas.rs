//! Several processes of one service over one PostgreSQL database: rules hold across them
//! (each change applied once, no balance overdrawn) and one relay's recovery worker never
//! takes over another relay's live checkout. Runs when `CTR_TEST_POSTGRES_URL` is set (CI
//! sets it); SQLite serves one process per file.

use std::time::Duration;

use ctr_system_tests::{CrashableRelay, Running, World, blackhole, postgres, problem_type};
use serde_json::json;

fn skipped() -> bool {
    if postgres().is_none() {
        eprintln!("skipped: replicas need PostgreSQL (set CTR_TEST_POSTGRES_URL)");
        return true;
    }
    false
}

#[tokio::test]
async fn the_same_tokens_checked_out_through_two_relays_complete_exactly_once() {
    if skipped() {
        return;
    }
    let world = World::start().await;
    let second = CrashableRelay::start(
        world.replica_server("order-processing"),
        world.relay_settings.clone(),
        world.clock.clone(),
    )
    .await;
    world.wait_until_admin_ready(second.admin).await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let path = format!("/service/v1/orders/{order}/checkout");
    let urls = [world.relay.url(&path), second.url(&path)];
    let attempts = (0..20).map(|i| world.post(urls[i % 2].clone(), json!({"tokens": tokens})));
    let results = futures::future::join_all(attempts).await;
    world.assert_one_checkout_won(&results).await;
    let (_, seen_by_second) = world
        .get(second.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(seen_by_second["status"], "completed");
}

#[tokio::test]
async fn concurrent_holds_through_two_points_replicas_never_overdraw() {
    if skipped() {
        return;
    }
    let world = World::start().await;
    let settings = points::PointsSettings {
        domain: world.domain_settings.clone(),
        ..points::PointsSettings::default()
    };
    let replica = points::build_with(
        &world.replica_server("points"),
        &settings,
        world.clock.clone(),
    )
    .await
    .unwrap();
    let replica = Running::start(replica.app);
    let order = "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e";
    let path = "/service/v1/points/confirmations";
    let urls = [world.points.running.url(path), replica.url(path)];
    // c_bob has 1200 points: twelve holds of 100 fit, whichever replica takes them.
    let attempts = (0..30).map(|i| {
        world.post(
            urls[i % 2].clone(),
            json!({"order_processing_id": order, "customer_id": "c_bob", "points": 100, "currency": "EUR"}),
        )
    });
    let results = futures::future::join_all(attempts).await;
    let held = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(held, 12, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(
            (*status, problem_type(body)),
            (422, "insufficient-points"),
            "{body}"
        );
    }
    let balance = world.balance("c_bob").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["held"].as_u64()),
        (Some(0), Some(1200))
    );
    replica.stop().await;
}

#[tokio::test]
async fn a_relays_recovery_worker_leaves_another_relays_live_checkout_alone() {
    if skipped() {
        return;
    }
    // A hangs on the capture (3 s), then fails and compensates. B watches the same store with
    // a recovery pass every 50 ms and would capture (its payments route works) if it took over.
    let port = blackhole().await;
    let world = World::start_with(|s| {
        s.checkout_deadline = Duration::from_millis(200);
        s.call_timeout = Duration::from_secs(3);
        s.call_retries = 0;
        s.issuers.get_mut("payments").unwrap().redeem_url =
            format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
    })
    .await;
    let mut watcher = world.relay_settings.clone();
    watcher.issuers = ctr_system_tests::issuers_of(&world);
    watcher.recovery_interval = Duration::from_millis(50);
    let second = CrashableRelay::start(
        world.replica_server("order-processing"),
        watcher,
        world.clock.clone(),
    )
    .await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(status, 202, "{body}");
    let payment = body["tokens"][2]["jti"].as_str().unwrap().to_owned();
    let view = world
        .ended(world.relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(
        view["status"], "failed",
        "A's own outcome, untouched by B: {view}"
    );
    let (_, captured) = world
        .get(
            world
                .payments
                .running
                .url(&format!("/service/v1/payments/{payment}")),
        )
        .await;
    assert_eq!(captured["status"], "voided", "B never captured: {captured}");
    drop(second);
}
