//! Several processes of one service over one PostgreSQL database: rules hold across them
//! (each change applied once, no balance overdrawn) and one relay's recovery worker never
//! takes over another relay's live checkout. Every write of a saga is fenced by the order's
//! generation and leases are judged on the database's clock, so a stalled driver's late writes
//! are refused and a replica whose clock runs ahead takes over nothing that is live. Runs when
//! `CTR_TEST_POSTGRES_URL` is set, and fails without it under `CI=true`; SQLite serves one
//! process per file.

use std::time::Duration;

use std::sync::Arc;

use ctr_system_tests::faults::{Fault, Plan};
use ctr_system_tests::{CrashableRelay, World, blackhole, problem_type, replicas_run};
use ctr_token::{Clock, FakeClock};
use order_processing::faults::SagaFaults;
use serde_json::json;

#[tokio::test]
async fn the_same_tokens_checked_out_through_two_relays_complete_exactly_once() {
    if !replicas_run("the_same_tokens_checked_out_through_two_relays_complete_exactly_once") {
        return;
    }
    let world = World::start().await;
    let second = world.relay_replica().await;
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
    if !replicas_run("concurrent_holds_through_two_points_replicas_never_overdraw") {
        return;
    }
    let world = World::start().await;
    let replica = world.points_replica(world.domain_settings.clone()).await;
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

/// A hangs on the capture (3 s), then fails and compensates. B watches the same store with a
/// recovery pass every 50 ms, its clock `ahead` seconds past A's, and would capture (its
/// payments route works) if it took over.
async fn a_live_checkout_is_left_alone_by_a_replica_ahead_by(ahead: i64) {
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
    let clock = Arc::new(FakeClock::at_secs(world.clock.now_secs() + ahead));
    let second =
        CrashableRelay::start(world.replica_server("order-processing"), watcher, clock).await;
    world.wait_until_admin_ready(second.admin).await;
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
    let voided = world.payment_status(&payment).await;
    assert_eq!(voided, "voided", "B never captured: {voided}");
    drop(second);
}

#[tokio::test]
async fn a_relays_recovery_worker_leaves_another_relays_live_checkout_alone() {
    if !replicas_run("a_relays_recovery_worker_leaves_another_relays_live_checkout_alone") {
        return;
    }
    a_live_checkout_is_left_alone_by_a_replica_ahead_by(0).await;
}

#[tokio::test]
async fn a_replica_whose_clock_runs_150_s_ahead_takes_over_nothing_that_is_live() {
    if !replicas_run("a_replica_whose_clock_runs_150_s_ahead_takes_over_nothing_that_is_live") {
        return;
    }
    // Past A's 30 s claim as A's clock would see it: claims run out on the database's clock.
    a_live_checkout_is_left_alone_by_a_replica_ahead_by(150).await;
}

#[tokio::test]
async fn a_stalled_drivers_late_writes_are_refused_and_the_new_owners_decision_stands() {
    if !replicas_run("a_stalled_drivers_late_writes_are_refused_and_the_new_owners_decision_stands")
    {
        return;
    }
    let world = World::start().await;
    let server = world.relay_under_test().await;
    // A short claim on the database's real clock: 1 s.
    let mut settings = world.relay_settings.clone();
    settings.saga_lease = Duration::from_secs(1);
    settings.call_timeout = Duration::from_millis(300);
    settings.call_retries = 0;
    settings.checkout_deadline = Duration::from_millis(300);
    let mut stalled = settings.clone();
    stalled.recovery_interval = Duration::from_secs(3600);
    // A stalls (a paused process) right after writing the capture `redeeming`: operations
    // open, begin, admit, coupon, points, capture.
    let plan = Arc::new(Plan::new(Fault::StallAfter(6)));
    let a = CrashableRelay::start_with_faults(
        server.clone(),
        stalled,
        world.clock.clone(),
        Some(plan.clone() as Arc<dyn SagaFaults>),
    )
    .await;
    world.wait_until_admin_ready(a.admin).await;
    let order = world
        .open_order_at(&a.url("/service/v1/orders"), "c_alice", 4999)
        .await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, body) = world
        .post(
            a.url(&format!("/service/v1/orders/{order}/checkout")),
            json!({"tokens": tokens}),
        )
        .await;
    assert_eq!(status, 202, "A stalls: {body}");
    plan.wait_triggered().await;
    let payment = body["tokens"][2]["jti"].as_str().unwrap().to_owned();

    // B takes over once A's claim ran out; its payments route is down, so it decides to fail
    // the checkout and compensates everything.
    let port = blackhole().await;
    let mut taking_over = settings.clone();
    taking_over.recovery_interval = Duration::from_millis(100);
    taking_over.issuers.get_mut("payments").unwrap().redeem_url =
        format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
    let b = CrashableRelay::start(server, taking_over, world.clock.clone()).await;
    let view = world
        .ended(b.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "failed", "B's decision: {view}");

    // A wakes up, calls the capture (the hold was voided: refused) and tries to write: its
    // generation is gone, so the write matches nothing and A stops.
    plan.release();
    let metrics = a.admin_url("/admin/v1/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = world.metrics_text(&metrics).await;
        if text.lines().any(|l| {
            l.contains("sagas_interrupted") && l.contains("lease-lost") && l.ends_with(" 1")
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never reported its lost lease:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, after) = world
        .get(b.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(
        after["status"], "failed",
        "A's late writes changed nothing: {after}"
    );
    assert_eq!(after["tokens"], view["tokens"], "{after}");
    let voided = world.payment_status(&payment).await;
    assert_eq!(voided, "voided", "never captured: {voided}");
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["spent"].as_u64()),
        (Some(5000), Some(0)),
        "the points came back once"
    );
}

/// A DPoP proof is accepted once across replicas: the replay cache is the shared store.
/// Behind one public origin (`CTR_AUTH_DPOP_ORIGINS`, what a load balancer in front of the
/// relays needs), the same proof sent to both relays at once creates one order.
#[tokio::test]
async fn a_dpop_proof_replayed_at_another_relay_replica_is_refused() {
    if !replicas_run("a_dpop_proof_replayed_at_another_relay_replica_is_refused") {
        return;
    }
    const ORIGIN: &str = "https://shop.example";
    let world = World::start_tuned(
        ctr_system_tests::domain_settings(),
        |_| {},
        |server| server.access.auth_dpop_origins = Some(ORIGIN.into()),
    )
    .await;
    let mut replica = world.replica_server("order-processing");
    replica.access.auth_dpop_origins = Some(ORIGIN.into());
    let second =
        CrashableRelay::start(replica, world.relay_settings.clone(), world.clock.clone()).await;
    world.wait_until_admin_ready(second.admin).await;
    let alice = crate::dpop::Holder::new(&world, "c_alice");
    let path = "/service/v1/orders";
    let authorization = format!("DPoP {}", alice.token);
    let body = json!({"total": {"amount": 100, "currency": "EUR"}});
    let (one, two) = (world.relay.url(path), second.url(path));
    for round in 0..5 {
        let proof = alice
            .key
            .proof("POST", &format!("{ORIGIN}{path}"), Some(&alice.token))
            .unwrap();
        let (first, second_answer) = tokio::join!(
            crate::dpop::send(
                &world,
                "POST",
                &one,
                Some(body.clone()),
                Some(&authorization),
                std::slice::from_ref(&proof)
            ),
            crate::dpop::send(
                &world,
                "POST",
                &two,
                Some(body.clone()),
                Some(&authorization),
                std::slice::from_ref(&proof)
            ),
        );
        let mut statuses = [
            (first.status, problem_type(&first.body).to_owned()),
            (
                second_answer.status,
                problem_type(&second_answer.body).to_owned(),
            ),
        ];
        statuses.sort();
        assert_eq!(
            statuses,
            [
                (201, String::new()),
                (401, "dpop-proof-replayed".to_owned())
            ],
            "round {round}: {first:?} {second_answer:?}"
        );
    }
}

/// A rolling update of the relay, as Kubernetes runs one: two replicas behind a "Service"
/// that routes each request to a replica whose readiness probe passed at its last poll. The
/// old replica is told to stop (SIGTERM's path) with a shutdown delay: it fails readiness at
/// once, serves on while the Service stops sending it requests, then drains. Clients keep
/// checking out throughout; every checkout completes.
#[tokio::test]
async fn a_rolling_update_of_the_relay_loses_no_checkout() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    if !replicas_run("a_rolling_update_of_the_relay_loses_no_checkout") {
        return;
    }
    let world = Arc::new(World::start().await);
    let mut old_server = world.replica_server("order-processing");
    old_server.shutdown_delay = Duration::from_millis(1500);
    let old = CrashableRelay::start(
        old_server,
        world.relay_settings.clone(),
        world.clock.clone(),
    )
    .await;
    let new = CrashableRelay::start(
        world.replica_server("order-processing"),
        world.relay_settings.clone(),
        world.clock.clone(),
    )
    .await;
    world.wait_until_admin_ready(old.admin).await;
    world.wait_until_admin_ready(new.admin).await;

    // The endpoints: the old replica while its readiness passes, polled every 200 ms.
    let old_ready = Arc::new(AtomicBool::new(true));
    let (poller, poll_world, poll_ready) = (
        old.admin_url("/admin/v1/readyz"),
        world.clone(),
        old_ready.clone(),
    );
    let polling = tokio::spawn(async move {
        loop {
            let ready = poll_world
                .customer
                .get(&poller)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            poll_ready.store(ready, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (old_base, new_base) = (old.url(""), new.url(""));
    let route = {
        let old_ready = old_ready.clone();
        move || {
            if old_ready.load(Ordering::SeqCst) {
                old_base.clone()
            } else {
                new_base.clone()
            }
        }
    };

    let done = Arc::new(AtomicUsize::new(0));
    let finish = Arc::new(AtomicBool::new(false));
    let clients = (0..3).map(|_| {
        let (world, route, done, finish) = (world.clone(), route.clone(), done.clone(), finish.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !finish.load(Ordering::SeqCst) {
                let order = world.open_order_at(&format!("{}/service/v1/orders", route()), "c_alice", 1000).await;
                let (status, confirmed) = world
                    .post(
                        world.payments.running.url("/service/v1/payments/confirmations"),
                        json!({"order_processing_id": order, "customer_id": "c_alice", "payment_method_id": "pm_alice_visa", "amount": {"amount": 1000, "currency": "EUR"}}),
                    )
                    .await;
                assert_eq!(status, 201, "{confirmed}");
                let relay = route();
                let (status, body) = world
                    .post(format!("{relay}/service/v1/orders/{order}/checkout"), json!({"tokens": [confirmed["token"]]}))
                    .await;
                outcomes.push((order, status, body));
                done.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            outcomes
        })
    });
    let clients: Vec<_> = clients.collect();
    while done.load(Ordering::SeqCst) < 9 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The rollout reaches the old replica: SIGTERM's path.
    let (status, _) = world
        .post(old.admin_url("/admin/v1/shutdown"), json!({}))
        .await;
    assert_eq!(status, 202);
    let stopped_at = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = world
        .customer
        .get(old.admin_url("/admin/v1/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        503,
        "readiness fails as soon as the stop begins"
    );
    let live = world
        .customer
        .get(old.admin_url("/admin/v1/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "liveness answers while it drains");
    // Within the delay the old replica still answers new requests.
    let (status, _) = world
        .get(old.url("/service/v1/orders/op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e"))
        .await;
    assert_eq!(
        status, 404,
        "a request reaching it during the delay is served"
    );

    // Clients go on until the old replica has closed its listener, and a while after.
    let deadline = stopped_at + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(old.public).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old replica never stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_close = done.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    finish.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    polling.abort();
    assert!(
        before_close > 9 && outcomes.len() > before_close,
        "checkouts ran through the stop: {before_close} before the close, {} in all",
        outcomes.len()
    );
    for (order, status, body) in &outcomes {
        let completed = match *status {
            200 => body["status"] == "completed",
            // Still running at the deadline: it completes through a replica that stays.
            202 => {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let (_, order_now) = world
                        .get(new.url(&format!("/service/v1/orders/{order}")))
                        .await;
                    if order_now["status"] == "completed" {
                        break true;
                    }
                    if tokio::time::Instant::now() > deadline {
                        break false;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            _ => false,
        };
        assert!(completed, "{order}: {status} {body}");
    }
}

#[tokio::test]
async fn a_retry_on_the_other_relay_replica_gets_the_first_answer() {
    if !replicas_run("a_retry_on_the_other_relay_replica_gets_the_first_answer") {
        return;
    }
    let world = World::start().await;
    let second = world.relay_replica().await;
    let opened = world
        .post_keyed(
            world.relay.url("/service/v1/orders"),
            crate::idempotency::new_order("c_alice", 4999),
            "replica-order",
        )
        .await;
    assert_eq!(opened.status, 201, "{opened:?}");
    let again = world
        .post_keyed(
            second.url("/service/v1/orders"),
            crate::idempotency::new_order("c_alice", 4999),
            "replica-order",
        )
        .await;
    crate::idempotency::assert_replayed(&opened, &again, "the order, at the other replica");
    let order = opened.body["order_processing_id"].as_str().unwrap();
    let tokens = world.three_tokens(order, "c_alice", "pm_alice_visa").await;
    let path = format!("/service/v1/orders/{order}/checkout");
    let done = world
        .post_keyed(
            world.relay.url(&path),
            json!({"tokens": tokens}),
            "replica-checkout",
        )
        .await;
    assert_eq!(done.status, 200, "{done:?}");
    let again = world
        .post_keyed(
            second.url(&path),
            json!({"tokens": tokens}),
            "replica-checkout",
        )
        .await;
    crate::idempotency::assert_replayed(&done, &again, "the checkout, at the other replica");
    let (available, _, spent) = crate::idempotency::ledger(&world, "c_alice").await;
    assert_eq!((available, spent), (4500, 500), "spent once");
    second.kill();
}

#[tokio::test]
async fn two_relays_share_the_outbox_and_deliver_each_event_once_in_order() {
    use ctr_system_tests::receiver::Answering;
    if !replicas_run("two_relays_share_the_outbox_and_deliver_each_event_once_in_order") {
        return;
    }
    let (world, receiver) = crate::events::world_with_receiver(|_| {}).await;
    let second = world.relay_replica().await;
    receiver.answer(Answering::Fail(500));
    let mut orders = Vec::new();
    for i in 0..6 {
        let base = if i % 2 == 0 {
            world.relay.url("/service/v1/orders")
        } else {
            second.url("/service/v1/orders")
        };
        let order = world.open_order_at(&base, "c_alice", 4999).await;
        let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
        let (status, body) = world
            .post(
                format!("{base}/{order}/checkout"),
                json!({"tokens": tokens}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        orders.push(order);
    }
    // Both dispatchers retry meanwhile; then the receiver recovers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.answer(Answering::Accept);
    let events = receiver.wait_for(6, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(events.len(), 6, "{events:?}");
    for order in &orders {
        assert_eq!(
            events
                .iter()
                .filter(|(_, e)| e.data.order_processing_id == *order)
                .count(),
            1,
            "{order}"
        );
    }
    // One attempt in flight per delivery: none was accepted twice.
    let accepted: Vec<String> = receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.answered == Answering::Accept)
        .map(|d| d.id)
        .collect();
    assert_eq!(accepted.len(), 6, "{accepted:?}");
}
