//! Safe retries: every POST that makes something (an order, a hold, a checkout) takes an
//! `Idempotency-Key`. A retry of the same request gets the first answer and changes nothing,
//! after a lost answer, a restart or on another replica; another request under the key is 422;
//! one customer's key is nothing to another's. On SQLite and, in CI's second run, PostgreSQL;
//! the retry at another relay replica is in `replicas`.

use ctr_system_tests::proxy::AnswerLoser;
use ctr_system_tests::{Keyed, World, problem_type};
use serde_json::{Value, json};

pub fn new_order(customer: &str, amount: u64) -> Value {
    json!({"customer_id": customer, "total": {"amount": amount, "currency": "EUR"}})
}

fn points(order: &str, customer: &str, points: u64) -> Value {
    json!({"order_processing_id": order, "customer_id": customer, "points": points,
           "currency": "EUR"})
}

/// The customer's points: available, held, spent.
pub async fn ledger(world: &World, customer: &str) -> (u64, u64, u64) {
    let balance = world.balance(customer).await;
    let n = |field: &str| balance[field].as_u64().unwrap();
    (n("available"), n("held"), n("spent"))
}

/// The first answer given again: the same status and body, marked replayed.
pub fn assert_replayed(first: &Keyed, again: &Keyed, why: &str) {
    assert_eq!(
        (again.status, &again.body, &again.location),
        (first.status, &first.body, &first.location),
        "{why}"
    );
    assert!(again.replayed, "{why}: marked Idempotent-Replayed");
}

/// POSTs `body` under `key` through `gateway`, which loses the answer after the service
/// committed (the customer hears 502), then again: answers the retry's answer.
async fn lost_then_retried(
    world: &World,
    gateway: &AnswerLoser,
    url: String,
    body: Value,
    key: &str,
) -> Keyed {
    let lost_before = gateway.lost();
    gateway.lose_next(1);
    let lost = world.post_keyed(url.clone(), body.clone(), key).await;
    assert_eq!(lost.status, 502, "{lost:?}");
    assert_eq!(gateway.lost(), lost_before + 1, "the answer was lost");
    world.post_keyed(url, body, key).await
}

#[tokio::test]
async fn each_post_retried_under_its_key_after_its_answer_was_lost_acts_once_and_gets_the_first_answer()
 {
    let world = World::start().await;
    // Gateways in front of the relay and of points that lose an answer after the service
    // committed it: the customer hears 502 and does not know what happened.
    let relay = AnswerLoser::for_customers(&world.pki, world.relay.url("")).await;
    let points_gateway = AnswerLoser::for_customers(&world.pki, world.points.running.url("")).await;

    let orders_before = world.orders_of("c_alice").await;
    let retried = lost_then_retried(
        &world,
        &relay,
        relay.url("/service/v1/orders"),
        new_order("c_alice", 4999),
        "order-1",
    )
    .await;
    assert_eq!(
        (retried.status, retried.replayed),
        (201, true),
        "{retried:?}"
    );
    let order = retried.body["order_processing_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        retried.location.as_deref(),
        Some(format!("/service/v1/orders/{order}").as_str())
    );
    assert_eq!(
        world.orders_of("c_alice").await,
        orders_before + 1,
        "one order"
    );

    let coupon = world
        .confirm_coupon(&order, "c_alice", "SPRING10", 4999)
        .await;
    assert_eq!(coupon.0, 201, "{}", coupon.1);
    let mut tokens = vec![coupon.1["token"].as_str().unwrap().to_owned()];
    let before = ledger(&world, "c_alice").await;
    let url = points_gateway.url("/service/v1/points/confirmations");
    let held = lost_then_retried(
        &world,
        &points_gateway,
        url.clone(),
        points(&order, "c_alice", 500),
        "hold-1",
    )
    .await;
    assert_eq!((held.status, held.replayed), (201, true), "{held:?}");
    assert_eq!(
        ledger(&world, "c_alice").await,
        (before.0 - 500, before.1 + 500, before.2),
        "the points are held once"
    );
    let again = world
        .post_keyed(url, points(&order, "c_alice", 500), "hold-1")
        .await;
    assert_replayed(&held, &again, "the hold's answer, token included");
    tokens.push(held.body["token"].as_str().unwrap().to_owned());
    let payment = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 3999)
        .await;
    assert_eq!(payment.0, 201, "{}", payment.1);
    tokens.push(payment.1["token"].as_str().unwrap().to_owned());

    let before = ledger(&world, "c_alice").await;
    let checkout = relay.url(&format!("/service/v1/orders/{order}/checkout"));
    let done = lost_then_retried(
        &world,
        &relay,
        checkout.clone(),
        json!({"tokens": tokens}),
        "checkout-1",
    )
    .await;
    assert_eq!((done.status, done.replayed), (200, true), "{done:?}");
    assert_eq!(done.body["status"], "completed", "{done:?}");
    let again = world
        .post_keyed(checkout, json!({"tokens": tokens}), "checkout-1")
        .await;
    assert_replayed(&done, &again, "the checkout's outcome");
    // The held points were spent once: one checkout.
    assert_eq!(
        ledger(&world, "c_alice").await,
        (before.0, before.1 - 500, before.2 + 500)
    );
    assert_eq!(world.coupon("SPRING10").await["uses"], 1);
    assert_eq!(relay.lost(), 2);
    assert_eq!(points_gateway.lost(), 1);
}

#[tokio::test]
async fn a_key_used_again_for_another_request_is_422_and_changes_nothing() {
    let world = World::start().await;
    let orders = world.relay.url("/service/v1/orders");
    let first = world
        .post_keyed(orders.clone(), new_order("c_alice", 4999), "k")
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    let order = first.body["order_processing_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirmations = world.points.running.url("/service/v1/points/confirmations");
    let held = world
        .post_keyed(confirmations.clone(), points(&order, "c_alice", 100), "k")
        .await;
    assert_eq!(held.status, 201, "{held:?}");
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let checkout = |order: &str| {
        world
            .relay
            .url(&format!("/service/v1/orders/{order}/checkout"))
    };
    let done = world
        .post_keyed(checkout(&order), json!({"tokens": tokens}), "k")
        .await;
    assert_eq!(done.status, 200, "{done:?}");

    let other_order = world.open_order("c_alice", 4999).await;
    let other_tokens = world
        .three_tokens(&other_order, "c_alice", "pm_alice_visa")
        .await;
    let rows = world.customer_rows().await;
    let ledgers = ledger(&world, "c_alice").await;
    let cases = [
        (orders, new_order("c_alice", 5000), "another total"),
        (
            confirmations,
            points(&order, "c_alice", 200),
            "other points",
        ),
        (
            checkout(&other_order),
            json!({"tokens": other_tokens}),
            "another order's checkout",
        ),
    ];
    for (url, body, why) in cases {
        let reused = world.post_keyed(url, body, "k").await;
        assert_eq!(
            (reused.status, problem_type(&reused.body)),
            (422, "idempotency-key-reused"),
            "{why}: {reused:?}"
        );
    }
    assert_eq!(world.customer_rows().await, rows, "nothing written");
    assert_eq!(
        ledger(&world, "c_alice").await,
        ledgers,
        "nothing held or spent"
    );
    let (_, other) = world
        .get(
            world
                .relay
                .url(&format!("/service/v1/orders/{other_order}")),
        )
        .await;
    assert_eq!(
        other["status"], "open",
        "the other order is given back: {other}"
    );
    // Its own checkout, under a fresh key, still goes through.
    let fresh = world
        .post_keyed(
            checkout(&other_order),
            json!({"tokens": other_tokens}),
            "k2",
        )
        .await;
    assert_eq!(fresh.status, 200, "{fresh:?}");
}

#[tokio::test]
async fn sixteen_requests_at_once_under_one_key_act_once_and_the_others_get_the_first_answer_or_409()
 {
    let world = World::start().await;
    let orders_before = world.orders_of("c_alice").await;
    let opened = futures::future::join_all((0..16).map(|_| {
        world.post_keyed(
            world.relay.url("/service/v1/orders"),
            new_order("c_alice", 4999),
            "racing-order",
        )
    }))
    .await;
    let order = one_effect(&opened, "order_processing_id");
    assert_eq!(
        world.orders_of("c_alice").await,
        orders_before + 1,
        "one order"
    );

    let before = ledger(&world, "c_alice").await;
    let held = futures::future::join_all((0..16).map(|_| {
        world.post_keyed(
            world.points.running.url("/service/v1/points/confirmations"),
            points(&order, "c_alice", 500),
            "racing-hold",
        )
    }))
    .await;
    one_effect(&held, "jti");
    assert_eq!(
        ledger(&world, "c_alice").await,
        (before.0 - 500, before.1 + 500, before.2),
        "points held once"
    );
    let points_token = held.iter().find(|a| a.status == 201).unwrap().body["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let coupon = world
        .confirm_coupon(&order, "c_alice", "SPRING10", 4999)
        .await;
    let payment = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 3999)
        .await;
    let tokens = [
        &coupon.1["token"],
        &json!(points_token),
        &payment.1["token"],
    ];
    let before = ledger(&world, "c_alice").await;
    let checkouts = futures::future::join_all((0..16).map(|_| {
        world.post_keyed(
            world
                .relay
                .url(&format!("/service/v1/orders/{order}/checkout")),
            json!({"tokens": tokens}),
            "racing-checkout",
        )
    }))
    .await;
    let completed: Vec<&Keyed> = checkouts.iter().filter(|a| a.status == 200).collect();
    assert!(!completed.is_empty(), "{checkouts:?}");
    assert_eq!(
        completed.iter().filter(|a| !a.replayed).count(),
        1,
        "one checkout ran; the others are its answer given again: {checkouts:?}"
    );
    for answer in checkouts.iter().filter(|a| a.status != 200) {
        assert_eq!(answer.status, 409, "{answer:?}");
        assert!(
            ["idempotency-request-outstanding", "checkout-in-progress"]
                .contains(&problem_type(&answer.body)),
            "{answer:?}"
        );
    }
    assert_eq!(
        ledger(&world, "c_alice").await,
        (before.0, before.1 - 500, before.2 + 500)
    );
    assert_eq!(world.coupon("SPRING10").await["uses"], 1);
}

/// Of concurrent answers under one key: one 201 that is not replayed, every other 201 is the
/// same answer replayed, the rest 409 outstanding. Answers the made resource's `id_field`.
fn one_effect(answers: &[Keyed], id_field: &str) -> String {
    let made: Vec<&Keyed> = answers.iter().filter(|a| a.status == 201).collect();
    assert_eq!(
        made.iter().filter(|a| !a.replayed).count(),
        1,
        "one request acted: {answers:?}"
    );
    for answer in &made {
        assert_eq!(answer.body, made[0].body, "the first answer, given again");
    }
    for answer in answers.iter().filter(|a| a.status != 201) {
        assert_eq!(
            (answer.status, problem_type(&answer.body)),
            (409, "idempotency-request-outstanding"),
            "{answer:?}"
        );
    }
    made[0].body[id_field].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bob_reusing_alices_key_gets_his_own_answer_and_sees_nothing_of_hers() {
    let world = World::start().await;
    let orders = world.relay.url("/service/v1/orders");
    let alice = world
        .post_keyed(orders.clone(), new_order("c_alice", 4999), "shared-key")
        .await;
    let bob = world
        .post_keyed(orders.clone(), new_order("c_bob", 4999), "shared-key")
        .await;
    assert_eq!((alice.status, bob.status), (201, 201), "{alice:?} {bob:?}");
    assert!(!bob.replayed, "{bob:?}");
    assert_eq!(bob.body["customer_id"], "c_bob");
    assert_ne!(
        bob.body["order_processing_id"],
        alice.body["order_processing_id"]
    );
    // Even his request identical to hers is his own: the same body under the same key.
    let hers = new_order("c_alice", 4999);
    let as_bob = world
        .post_keyed_with(&world.token("c_bob"), orders, hers, "shared-key")
        .await;
    assert_eq!(
        (as_bob.status, problem_type(&as_bob.body)),
        (403, "customer-mismatch"),
        "Bob cannot open Alice's order, key or not: {as_bob:?}"
    );
    let held_by_bob = world
        .post_keyed(
            world.points.running.url("/service/v1/points/confirmations"),
            points(
                bob.body["order_processing_id"].as_str().unwrap(),
                "c_bob",
                100,
            ),
            "shared-key",
        )
        .await;
    assert_eq!(
        (held_by_bob.status, held_by_bob.replayed),
        (201, false),
        "{held_by_bob:?}"
    );
    assert_eq!(held_by_bob.body["customer_id"], "c_bob");
}

#[tokio::test]
async fn a_retry_after_the_services_restarted_gets_the_first_answer() {
    let world = World::start().await;
    let orders = world.relay.url("/service/v1/orders");
    let opened = world
        .post_keyed(orders.clone(), new_order("c_alice", 4999), "before-restart")
        .await;
    let order = opened.body["order_processing_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirmations = world.points.running.url("/service/v1/points/confirmations");
    let held = world
        .post_keyed(
            confirmations.clone(),
            points(&order, "c_alice", 500),
            "hold-before-restart",
        )
        .await;
    assert_eq!(held.status, 201, "{held:?}");
    let coupon = world
        .confirm_coupon(&order, "c_alice", "SPRING10", 4999)
        .await;
    let payment = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 3999)
        .await;
    let tokens = json!({"tokens": [coupon.1["token"], held.body["token"], payment.1["token"]]});
    let checkout = world
        .relay
        .url(&format!("/service/v1/orders/{order}/checkout"));
    let done = world
        .post_keyed(checkout.clone(), tokens.clone(), "checkout-before-restart")
        .await;
    assert_eq!(done.status, 200, "{done:?}");

    let world = world.restart().await;
    let rows = world.customer_rows().await;
    let again = world
        .post_keyed(orders, new_order("c_alice", 4999), "before-restart")
        .await;
    assert_replayed(&opened, &again, "the order");
    let again = world
        .post_keyed(
            confirmations,
            points(&order, "c_alice", 500),
            "hold-before-restart",
        )
        .await;
    assert_replayed(&held, &again, "the hold");
    let again = world
        .post_keyed(checkout, tokens, "checkout-before-restart")
        .await;
    assert_replayed(&done, &again, "the checkout");
    assert_eq!(world.customer_rows().await, rows, "nothing written");
}

#[tokio::test]
async fn a_service_that_requires_keys_refuses_a_post_without_one_and_every_service_refuses_a_malformed_one()
 {
    let world = World::start_tuned(
        ctr_system_tests::domain_settings(),
        |_| {},
        |server| server.idempotency_required = true,
    )
    .await;
    let rows = world.customer_rows().await;
    let (status, body) = world
        .post(
            world.relay.url("/service/v1/orders"),
            new_order("c_alice", 4999),
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (400, "idempotency-key-missing"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("Idempotency-Key"),
        "{body}"
    );
    let (status, body) = world
        .post(
            world.points.running.url("/service/v1/points/confirmations"),
            points("op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e", "c_alice", 100),
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (400, "idempotency-key-missing"),
        "{body}"
    );
    let keyed = world
        .post_keyed(
            world.relay.url("/service/v1/orders"),
            new_order("c_alice", 4999),
            "k",
        )
        .await;
    assert_eq!(keyed.status, 201, "{keyed:?}");
    let rows_after_one = world.customer_rows().await;
    assert_ne!(rows_after_one, rows);
    let order = keyed.body["order_processing_id"].as_str().unwrap();
    for (value, why) in [
        ("unquoted-key", "not a Structured Field string"),
        ("\"\"", "empty"),
        (&*format!("\"{}\"", "k".repeat(256)), "256 characters"),
    ] {
        for url in [
            world.relay.url("/service/v1/orders"),
            world
                .relay
                .url(&format!("/service/v1/orders/{order}/checkout")),
            world
                .coupons
                .running
                .url("/service/v1/coupons/confirmations"),
        ] {
            let answer = world
                .anonymous()
                .post(&url)
                .bearer_auth(world.token("c_alice"))
                .header("idempotency-key", value)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 400, "{why} at {url}");
            let body: Value = answer.json().await.unwrap();
            assert_eq!(
                problem_type(&body),
                "idempotency-key-invalid",
                "{why} at {url}: {body}"
            );
        }
    }
    assert_eq!(
        world.customer_rows().await,
        rows_after_one,
        "nothing written"
    );
}

#[tokio::test]
async fn a_checkout_that_outlives_its_request_answers_its_202_again_and_later_its_outcome() {
    // Payments never answers a capture: the saga outlives the request's deadline, then fails
    // it after its call's timeout and compensates.
    let port = ctr_system_tests::blackhole().await;
    let world = World::start_with(move |settings| {
        settings.checkout_deadline = std::time::Duration::from_millis(300);
        settings.call_retries = 0;
        settings.issuers.get_mut("payments").unwrap().redeem_url =
            format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
    })
    .await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let checkout = world
        .relay
        .url(&format!("/service/v1/orders/{order}/checkout"));
    let first = world
        .post_keyed(checkout.clone(), json!({"tokens": tokens}), "slow")
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(
        first.location.as_deref(),
        Some(format!("/service/v1/orders/{order}").as_str())
    );
    let again = world
        .post_keyed(checkout.clone(), json!({"tokens": tokens}), "slow")
        .await;
    assert_eq!((again.status, again.replayed), (202, true), "{again:?}");
    assert_eq!(again.location, first.location);
    let view = world
        .ended(world.relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "failed", "{view}");
    let outcome = world
        .post_keyed(checkout, json!({"tokens": tokens}), "slow")
        .await;
    assert_eq!(
        (
            outcome.status,
            problem_type(&outcome.body),
            outcome.replayed
        ),
        (502, "issuer-unavailable", true),
        "the final outcome, for the same key: {outcome:?}"
    );
    assert_eq!(outcome.body["order"]["status"], "failed");
}
