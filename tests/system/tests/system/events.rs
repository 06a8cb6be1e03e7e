//! Order events: written with their transitions, delivered as Standard Webhooks to a
//! receiver that may fail, vanish, hang or be dead for good.

use std::time::Duration;

use ctr_service_kit::testing::TestPki;
use ctr_system_tests::receiver::{Answering, Receiver};
use ctr_system_tests::{CrashableRelay, World, domain_settings, expire_claims, relay_events};
use ctr_webhooks::{Event, EventType};
use order_processing::RelaySettings;
use serde_json::{Value, json};

/// A world whose relay delivers its events to a fresh receiver (`shop`), retrying fast.
pub async fn world_with_receiver(tune: impl FnOnce(&mut RelaySettings)) -> (World, Receiver) {
    let pki = TestPki::new();
    let receiver = Receiver::start(&pki).await;
    let endpoint = receiver.endpoint();
    let world = World::start_in(
        pki,
        domain_settings(),
        |s| {
            s.webhooks.insert("shop".into(), endpoint);
            s.webhook_retry_first = Duration::from_millis(100);
            s.webhook_retry_max = Duration::from_millis(400);
            s.recovery_interval = Duration::from_millis(200);
            tune(s);
        },
        |_| {},
    )
    .await;
    (world, receiver)
}

/// Checks out a new 49.99 order of c_alice paid with `method`; answers its id.
pub async fn checked_out(world: &World, method: &str) -> String {
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", method).await;
    let (status, body) = world.checkout(&order, &tokens).await;
    let expected = if method == "pm_alice_declines" {
        409
    } else {
        200
    };
    assert_eq!(status, expected, "{body}");
    order
}

/// The relay's deliveries as its admin listener lists them (`query`: `?state=...`).
async fn listed(world: &World, query: &str) -> Vec<Value> {
    let (status, body) = world
        .get(
            world
                .relay
                .admin_url(&format!("/admin/v1/webhooks/deliveries{query}")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn kinds_of(events: &[(String, Event)], order: &str) -> Vec<EventType> {
    events
        .iter()
        .filter(|(_, e)| e.data.order_processing_id == order)
        .map(|(_, e)| e.kind)
        .collect()
}

#[tokio::test]
async fn each_transition_is_one_signed_event_delivered_once_with_what_happened() {
    let (world, receiver) = world_with_receiver(|_| {}).await;
    let completed = checked_out(&world, "pm_alice_visa").await;
    let failed = checked_out(&world, "pm_alice_declines").await;

    let events = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(kinds_of(&events, &completed), [EventType::OrderCompleted]);
    assert_eq!(kinds_of(&events, &failed), [EventType::OrderFailed]);
    assert_eq!(events.len(), 2, "nothing else happened: {events:?}");
    let (_, done) = events
        .iter()
        .find(|(_, e)| e.kind == EventType::OrderCompleted)
        .unwrap();
    assert_eq!(done.data.customer_id, "c_alice");
    assert_eq!(
        (done.data.total.amount, done.data.total.currency.as_str()),
        (4999, "EUR")
    );
    assert_eq!(done.data.failure, None);
    let (_, lost) = events
        .iter()
        .find(|(_, e)| e.kind == EventType::OrderFailed)
        .unwrap();
    let failure = lost.data.failure.as_ref().unwrap();
    assert_eq!(
        (failure.capability.as_str(), failure.problem_type.as_str()),
        (
            "payments:capture",
            "https://ctr.dev/problems/payment-declined"
        )
    );
    // Every delivery verified under the receiver's secret; the ids are the events'.
    for delivery in receiver.deliveries() {
        assert!(delivery.event.is_some(), "unverified: {delivery:?}");
        assert!(delivery.id.starts_with("evt_"), "{}", delivery.id);
        assert!(
            delivery.signature.starts_with("v1,"),
            "{}",
            delivery.signature
        );
    }
    // The operator's view: both delivered at the first attempt.
    let delivered = listed(&world, "?state=delivered").await;
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert!(
        delivered
            .iter()
            .all(|d| d["attempts"] == 1 && d["endpoint"] == "shop")
    );
    let metrics = world
        .metrics_text(&world.relay.admin_url("/admin/v1/metrics"))
        .await;
    assert!(
        metrics.contains(r#"ctr_webhook_attempts_total{endpoint="shop",outcome="delivered"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_receiver_answering_500_gets_every_event_exactly_once_when_it_recovers() {
    let (world, receiver) = world_with_receiver(|_| {}).await;
    receiver.answer(Answering::Fail(500));
    let mut orders = Vec::new();
    for method in [
        "pm_alice_visa",
        "pm_alice_declines",
        "pm_alice_visa",
        "pm_alice_visa",
    ] {
        orders.push((checked_out(&world, method).await, method));
    }
    // Retried meanwhile: each event tried more than once, pending on the admin listener.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.deliveries().len() < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            receiver.deliveries()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = listed(&world, "?state=pending&endpoint=shop").await;
    assert_eq!(pending.len(), 4, "{pending:?}");
    assert!(
        pending
            .iter()
            .all(|d| d["last_status"] == 500 && d["next_attempt_at"].is_string()),
        "{pending:?}"
    );

    receiver.answer(Answering::Accept);
    let events = receiver.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 4, "{events:?}");
    for (order, method) in &orders {
        let expected = if *method == "pm_alice_declines" {
            EventType::OrderFailed
        } else {
            EventType::OrderCompleted
        };
        assert_eq!(kinds_of(&events, order), [expected], "{order}");
    }
    // Every attempt of one event carried the same id and body.
    for (id, _) in &events {
        let bodies: std::collections::HashSet<String> = receiver
            .deliveries()
            .into_iter()
            .filter(|d| d.id == *id)
            .map(|d| d.body)
            .collect();
        assert_eq!(bodies.len(), 1, "{id}: {bodies:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(listed(&world, "?state=pending").await.is_empty());
    assert_eq!(receiver.events().len(), 4, "nothing more after delivery");
}

#[tokio::test]
async fn events_of_one_order_arrive_in_the_order_they_happened_even_after_an_outage() {
    // A failed order whose compensation is retried past CTR_COMPENSATION_ATTENTION_AFTER
    // (points' cancellation route is wrong), then goes through: failed, needs attention,
    // attention resolved. The receiver answers 500 until all three exist.
    let pki = TestPki::new();
    let receiver = Receiver::start(&pki).await;
    receiver.answer(Answering::Fail(503));
    let world = World::start_in(pki, domain_settings(), |_| {}, |_| {}).await;
    let server = world.relay_under_test().await;
    let store = server.store_url.clone();
    let mut settings = world.relay_settings.clone();
    settings.webhooks.insert("shop".into(), receiver.endpoint());
    settings.webhook_retry_first = Duration::from_millis(100);
    settings.webhook_retry_max = Duration::from_millis(300);
    let (settings, misrouted) = world.misrouted_compensation(settings).await;
    let relay = CrashableRelay::start(server.clone(), misrouted, world.clock.clone()).await;
    world.wait_until_admin_ready(relay.admin).await;
    let (order, status, body) = world.check_out_at(&relay.url(""), "pm_alice_visa").await;
    assert_eq!(status, 502, "{body}");
    let url = relay.url(&format!("/service/v1/orders/{order}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while world.get(url.clone()).await.1["needs_attention"] != true {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.kill();
    let relay = CrashableRelay::start(server, settings, world.clock.clone()).await;
    expire_claims(&store).await;
    let view = world
        .ended(relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["needs_attention"], false, "{view}");

    // Only the first event was ever offered while the receiver failed: a later one waits.
    let offered: std::collections::HashSet<String> =
        receiver.deliveries().into_iter().map(|d| d.id).collect();
    assert_eq!(offered.len(), 1, "{offered:?}");
    receiver.answer(Answering::Accept);
    let events = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(
        kinds_of(&events, &order),
        [
            EventType::OrderFailed,
            EventType::OrderNeedsAttention,
            EventType::OrderAttentionResolved
        ]
    );
    let (_, attention) = &events[1];
    assert!(
        attention
            .data
            .attention
            .as_deref()
            .unwrap()
            .contains("compensation still retried"),
        "{attention:?}"
    );
}

#[tokio::test]
async fn a_receiver_down_for_a_minute_gets_every_event_once_it_is_back() {
    if ctr_system_tests::postgres().is_some() {
        // A minute of waiting that proves nothing about the store: the SQLite pass runs it.
        eprintln!("a_receiver_down_for_a_minute runs in the SQLite pass of the suite");
        return;
    }
    let (world, mut receiver) = world_with_receiver(|s| {
        s.webhook_retry_max = Duration::from_secs(5);
    })
    .await;
    receiver.take_down().await;
    let first = checked_out(&world, "pm_alice_visa").await;
    let second = checked_out(&world, "pm_alice_declines").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let pending = listed(&world, "?state=pending").await;
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(
        pending
            .iter()
            .all(|d| d["attempts"].as_i64() > Some(3) && d["last_error"].is_string()),
        "tried and told why: {pending:?}"
    );
    receiver.bring_back().await;
    let events = receiver.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(kinds_of(&events, &first), [EventType::OrderCompleted]);
    assert_eq!(kinds_of(&events, &second), [EventType::OrderFailed]);
}

#[tokio::test]
async fn a_hanging_receiver_delays_no_checkout_and_holds_no_more_than_the_concurrency() {
    let (world, receiver) = world_with_receiver(|s| {
        s.webhook_timeout = Duration::from_secs(30);
        s.webhook_concurrency = 2;
        // A checkout that waited for a delivery (30 s) would answer 202 at its deadline
        // (CTR_CHECKOUT_DEADLINE, 10 s).
    })
    .await;
    receiver.answer(Answering::Hang);
    for _ in 0..5 {
        // checked_out asserts 200: each completed within its deadline.
        checked_out(&world, "pm_alice_visa").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.most_in_flight(),
        2,
        "at most CTR_WEBHOOK_CONCURRENCY at once"
    );
    assert_eq!(listed(&world, "?state=pending").await.len(), 5);
}

#[tokio::test]
async fn a_dead_endpoint_fails_for_good_after_its_window_and_nothing_is_kept_past_retention() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let pki = TestPki::new();
    let receiver = Receiver::start(&pki).await;
    let mut endpoint = receiver.endpoint();
    endpoint.url = format!("https://127.0.0.1:{dead}/webhooks");
    let world = World::start_in(
        pki,
        domain_settings(),
        |s| {
            s.webhooks.insert("gone".into(), endpoint);
            s.webhook_retry_first = Duration::from_millis(50);
            s.webhook_retry_max = Duration::from_millis(200);
            s.webhook_retry_for = Duration::from_secs(2);
            s.webhook_retention = Duration::from_secs(2);
            s.recovery_interval = Duration::from_millis(200);
        },
        |_| {},
    )
    .await;
    let flood = 8;
    for _ in 0..flood {
        checked_out(&world, "pm_alice_visa").await;
    }
    // Each delivery tried a bounded number of times, then failed, counted and listed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let failed = loop {
        let failed = listed(&world, "?state=failed").await;
        if failed.len() == flood {
            break failed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{failed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        failed.iter().all(|d| d["attempts"].as_i64().unwrap() <= 45
            && d["last_error"].as_str().unwrap().contains("onnect")),
        "{failed:?}"
    );
    let metrics = world
        .metrics_text(&world.relay.admin_url("/admin/v1/metrics"))
        .await;
    assert!(
        metrics.contains(&format!(
            r#"ctr_webhook_attempts_total{{endpoint="gone",outcome="failed"}} {flood}"#
        )),
        "{metrics}"
    );
    // Past CTR_WEBHOOK_RETENTION they and their events are gone: nothing grows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = listed(&world, "").await;
        let events = relay_events(&world.stores.relay).await.len();
        if left.is_empty() && events == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} deliveries, {events} events",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn failed_deliveries_are_redelivered_by_hand_once_the_endpoint_is_mended() {
    let (world, receiver) = world_with_receiver(|s| {
        s.webhook_retry_for = Duration::from_millis(500);
    })
    .await;
    receiver.answer(Answering::Fail(410));
    let order = checked_out(&world, "pm_alice_visa").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let failed = listed(&world, "?state=failed").await;
        if !failed.is_empty() {
            break failed;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed[0]["order_processing_id"], order.as_str());
    assert_eq!(failed[0]["last_status"], 410);
    receiver.answer(Answering::Accept);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        receiver.events().is_empty(),
        "a failed delivery waits for an operator"
    );

    // Unknown endpoints and events are refused, naming what was wrong, and change nothing.
    for (body, slug) in [
        (json!({"endpoint": "nope"}), "webhook-endpoint-unknown"),
        (
            json!({"endpoint": "shop", "event_id": "evt_nope"}),
            "webhook-delivery-not-failed",
        ),
        (json!({"endpoint": "shop", "extra": 1}), "invalid-body"),
    ] {
        let (status, problem) = world
            .post(
                world.relay.admin_url("/admin/v1/webhooks/redeliveries"),
                body,
            )
            .await;
        assert!(status >= 400, "{problem}");
        if slug != "invalid-body" {
            assert_eq!(
                problem["type"],
                format!("https://ctr.dev/problems/{slug}"),
                "{problem}"
            );
        }
    }
    let (status, answer) = world
        .post(
            world.relay.admin_url("/admin/v1/webhooks/redeliveries"),
            json!({"endpoint": "shop", "event_id": failed[0]["event_id"]}),
        )
        .await;
    assert_eq!(
        (status, &answer["redelivered"]),
        (200, &json!(1)),
        "{answer}"
    );
    let events = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(kinds_of(&events, &order), [EventType::OrderCompleted]);
}

#[tokio::test]
async fn a_target_that_resolves_to_a_private_address_is_refused_unless_allowed() {
    let (world, receiver) = world_with_receiver(|s| {
        let shop = s.webhooks.get_mut("shop").unwrap();
        shop.url = shop.url.replace("127.0.0.1", "localhost");
        shop.allow_private = false;
    })
    .await;
    checked_out(&world, "pm_alice_visa").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending = listed(&world, "?state=pending").await;
        if let Some(error) = pending.first().and_then(|d| d["last_error"].as_str()) {
            assert!(error.contains("no public address"), "{error}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        receiver.deliveries().is_empty(),
        "nothing reached the private address"
    );
}

#[tokio::test]
async fn the_standard_webhooks_reference_library_verifies_every_delivery_through_a_rotation() {
    use tokio::io::AsyncBufReadExt as _;
    let Some(python) = ctr_system_tests::authlib_python("the Standard Webhooks interop test")
    else {
        return;
    };
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (ctr_webhooks::new_secret(), ctr_webhooks::new_secret());
    let relay_secret = dir.path().join("relay.secret");
    let receiver_secrets = dir.path().join("receiver.secrets");
    std::fs::write(&relay_secret, format!("{old}\n")).unwrap();
    std::fs::write(&receiver_secrets, format!("{old}\n{new}\n")).unwrap();
    let identity = ctr_pki::IdentityFiles::server(pki.dir(), "payments");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../webhooks/standard_receiver.py"
    );
    let mut receiver = tokio::process::Command::new(python)
        .arg(script)
        .arg(&identity.cert)
        .arg(&identity.key)
        .arg(&receiver_secrets)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .expect("the Python receiver said nothing for 15s")
            .unwrap()
            .unwrap()
    };
    let first = next_line().await;
    let port = first.strip_prefix("listening ").expect(&first).to_owned();
    let endpoint = order_processing::WebhookEndpoint {
        url: format!("https://127.0.0.1:{port}/webhooks"),
        secret_file: relay_secret.clone(),
        allow_private: true,
    };
    let world = World::start_in(
        pki,
        domain_settings(),
        |s| {
            s.webhooks.insert("python".into(), endpoint);
        },
        |_| {},
    )
    .await;

    // Signed with the old secret; then with both during the rotation (two signatures in the
    // header); then with the new one alone. Each time the library verifies the delivery under
    // exactly those secrets and rejects it tampered with, stale or under another secret.
    for (relay_holds, verified_with) in [
        (format!("{old}\n"), json!([0])),
        (format!("{old}\n{new}\n"), json!([0, 1])),
        (format!("{new}\n"), json!([1])),
    ] {
        std::fs::write(&relay_secret, relay_holds).unwrap();
        let order = checked_out(&world, "pm_alice_visa").await;
        let seen: Value = serde_json::from_str(&next_line().await).unwrap();
        assert_eq!(seen["type"], "order.completed", "{seen} ({order})");
        assert_eq!(seen["verified_with"], verified_with, "{seen}");
        for check in [
            "tampered_rejected",
            "stale_rejected",
            "wrong_secret_rejected",
        ] {
            assert_eq!(seen[check], true, "{check}: {seen}");
        }
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_says_so() {
    let (world, receiver) = world_with_receiver(|_| {}).await;
    receiver.answer(Answering::Fail(308));
    checked_out(&world, "pm_alice_visa").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending = listed(&world, "?state=pending").await;
        if let Some(error) = pending.first().and_then(|d| d["last_error"].as_str()) {
            assert!(error.contains("redirects are not followed"), "{error}");
            assert_eq!(pending[0]["last_status"], 308);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(receiver.events().is_empty());
}
