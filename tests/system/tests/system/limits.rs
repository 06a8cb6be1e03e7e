//! Per-customer bounds over real HTTP: open holds, open orders and the rate of new ones. All
//! requests come from one address, as they do behind compose's port proxy: one customer's
//! flood must not throttle another.

use std::time::Duration;

use ctr_domain_kit::DomainSettings;
use ctr_system_tests::{World, domain_settings, problem_type};
use serde_json::{Value, json};

const ORDER: &str = "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e";

/// Sends `request`: its status, its `Retry-After` seconds, its body.
async fn send(request: reqwest::RequestBuilder) -> (u16, Option<u64>, Value) {
    let response = request.send().await.unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (
        response.status().as_u16(),
        retry_after,
        response.json().await.unwrap(),
    )
}

async fn confirm_payment(world: &World, customer: &str, method: &str) -> (u16, Option<u64>, Value) {
    let body = json!({"order_processing_id": ORDER, "customer_id": customer,
                      "payment_method_id": method, "amount": {"amount": 100, "currency": "EUR"}});
    let url = world
        .payments
        .running
        .url("/service/v1/payments/confirmations");
    let token = world.token(customer);
    send(world.anonymous().post(url).bearer_auth(token).json(&body)).await
}

async fn open_order(world: &World, customer: &str) -> (u16, Option<u64>, Value) {
    let body = json!({"customer_id": customer, "total": {"amount": 4999, "currency": "EUR"}});
    send(
        world
            .anonymous()
            .post(world.relay.url("/service/v1/orders"))
            .bearer_auth(world.token(customer))
            .json(&body),
    )
    .await
}

#[tokio::test]
async fn a_customer_at_its_cap_of_open_holds_gets_429_until_one_ends_and_others_are_served() {
    let settings = DomainSettings {
        max_holds_per_customer: 3,
        ..domain_settings()
    };
    let world = World::start_custom(settings, |_| {}).await;
    for _ in 0..3 {
        assert_eq!(
            confirm_payment(&world, "c_alice", "pm_alice_visa").await.0,
            201
        );
    }
    let (status, retry_after, body) = confirm_payment(&world, "c_alice", "pm_alice_visa").await;
    assert_eq!(
        (status, problem_type(&body)),
        (429, "too-many-holds"),
        "{body}"
    );
    let hold_ttl = world.domain_settings.hold_ttl.as_secs();
    assert!(
        retry_after.is_some_and(|s| s > 0 && s <= hold_ttl),
        "{retry_after:?}"
    );
    assert_eq!(
        confirm_payment(&world, "c_bob", "pm_bob_mastercard")
            .await
            .0,
        201,
        "another customer is not held back"
    );
    world.clock.advance(Duration::from_secs(hold_ttl + 1));
    assert_eq!(
        confirm_payment(&world, "c_alice", "pm_alice_visa").await.0,
        201,
        "expired holds free the cap"
    );
}

#[tokio::test]
async fn a_customer_at_its_cap_of_open_orders_gets_429_until_one_expires() {
    let world = World::start_with(|s| s.max_open_orders_per_customer = 2).await;
    assert_eq!(open_order(&world, "c_alice").await.0, 201);
    assert_eq!(open_order(&world, "c_alice").await.0, 201);
    let (status, retry_after, body) = open_order(&world, "c_alice").await;
    assert_eq!(
        (status, problem_type(&body)),
        (429, "too-many-open-orders"),
        "{body}"
    );
    let ttl = world.relay_settings.order_ttl.as_secs();
    assert!(
        retry_after.is_some_and(|s| s > 0 && s <= ttl),
        "{retry_after:?}"
    );
    assert_eq!(open_order(&world, "c_bob").await.0, 201);
    world.clock.advance(Duration::from_secs(ttl + 1));
    assert_eq!(open_order(&world, "c_alice").await.0, 201);
}

#[tokio::test]
async fn a_customer_over_its_rate_gets_429_and_no_other_customer_is_throttled() {
    let world = World::start_tuned(
        domain_settings(),
        |_| {},
        |server| {
            server.customer_rate = 1;
            server.customer_burst = 3;
        },
    )
    .await;
    let mut refused = None;
    for _ in 0..6 {
        let (status, retry_after, body) = open_order(&world, "c_alice").await;
        if status == 429 {
            refused = Some((retry_after, body));
            break;
        }
        assert_eq!(status, 201, "{body}");
    }
    let (retry_after, body) = refused.expect("the burst of 3 is exceeded");
    assert_eq!(problem_type(&body), "rate-limited", "{body}");
    assert_eq!(retry_after, Some(1));
    // Same address, other customers: served.
    assert_eq!(open_order(&world, "c_bob").await.0, 201);
    assert_eq!(
        confirm_payment(&world, "c_bob", "pm_bob_mastercard")
            .await
            .0,
        201
    );
    // Each domain limits on its own: c_alice's orders do not count against her holds.
    assert_eq!(
        confirm_payment(&world, "c_alice", "pm_alice_visa").await.0,
        201
    );
}
