//! Each domain on its own: rules, races, idempotent redeem and cancel, hold expiry, mTLS.

use std::time::Duration;

use ctr_system_tests::{World, domain_settings, problem_type};
use serde_json::{Value, json};

const ORDER: &str = "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e";

#[tokio::test]
async fn coupon_rules_refuse_with_a_problem_naming_the_rule_and_change_nothing() {
    let world = World::start().await;
    let url = world
        .coupons
        .running
        .url("/service/v1/coupons/confirmations");
    let request = |code: &str, customer: &str, amount: u64, currency: &str| {
        json!({"order_processing_id": ORDER, "customer_id": customer, "coupon_code": code,
               "order_total": {"amount": amount, "currency": currency}})
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "unknown coupon",
            request("NOPE", "c_alice", 5000, "EUR"),
            404,
            "coupon-not-found",
        ),
        (
            "expired coupon",
            request("WINTER2024", "c_alice", 5000, "EUR"),
            422,
            "coupon-expired",
        ),
        (
            "exhausted coupon",
            request("SOLDOUT", "c_alice", 5000, "EUR"),
            409,
            "coupon-exhausted",
        ),
        (
            "below the minimum",
            request("FIVEOFF", "c_alice", 1000, "EUR"),
            422,
            "coupon-minimum-not-met",
        ),
        (
            "wrong currency",
            request("SPRING10", "c_alice", 5000, "USD"),
            422,
            "currency-mismatch",
        ),
        (
            "another customer's coupon",
            request("WELCOME-ALICE", "c_bob", 5000, "EUR"),
            422,
            "coupon-not-for-customer",
        ),
        (
            "a lowercase currency",
            request("SPRING10", "c_alice", 5000, "eur"),
            422,
            "invalid-request",
        ),
        (
            "a bad order id",
            json!({"order_processing_id": "42", "customer_id": "c_alice", "coupon_code": "SPRING10", "order_total": {"amount": 1, "currency": "EUR"}}),
            422,
            "invalid-order-processing-id",
        ),
        (
            "a missing coupon code",
            json!({"order_processing_id": ORDER, "customer_id": "c_alice", "order_total": {"amount": 1, "currency": "EUR"}}),
            422,
            "invalid-request",
        ),
        (
            "a fractional amount",
            json!({"order_processing_id": ORDER, "customer_id": "c_alice", "coupon_code": "SPRING10", "order_total": {"amount": 49.99, "currency": "EUR"}}),
            422,
            "invalid-request",
        ),
        (
            "a hostile code",
            request("../../etc", "c_alice", 5000, "EUR"),
            422,
            "invalid-request",
        ),
    ];
    for (why, body, status, slug) in cases {
        let (got, answer) = world.post(url.clone(), body).await;
        assert_eq!(
            (got, problem_type(&answer)),
            (status, slug),
            "{why}: {answer}"
        );
    }
    for code in ["SPRING10", "FIVEOFF", "WELCOME-ALICE"] {
        assert_eq!(world.coupon(code).await["reserved"], 0, "{code} untouched");
    }
}

#[tokio::test]
async fn percentage_and_fixed_coupons_compute_their_discount_in_minor_units() {
    let world = World::start().await;
    let (status, spring) = world
        .confirm_coupon(ORDER, "c_alice", "SPRING10", 4999)
        .await;
    assert_eq!(status, 201, "{spring}");
    assert_eq!(
        spring["discount"],
        json!({"amount": 500, "currency": "EUR"}),
        "10 % of 49.99 is 4.999, rounded half up to 5.00"
    );
    assert_eq!(
        spring["settles"], spring["discount"],
        "the token settles the discount"
    );
    assert_eq!(
        spring["priced_on"],
        json!({"amount": 4999, "currency": "EUR"}),
        "priced on the stated total"
    );
    let (_, lower) = world
        .confirm_coupon(ORDER, "c_alice", "SPRING10", 4994)
        .await;
    assert_eq!(
        lower["discount"],
        json!({"amount": 499, "currency": "EUR"}),
        "10 % of 49.94 is 4.994, rounded down to 4.99"
    );
    assert_eq!(spring["capability"], "coupons:redeem");
    assert!(
        spring["jti"].is_string()
            && spring["expires_at"].is_string()
            && spring["token"].is_string()
    );
    let (_, five) = world
        .confirm_coupon(ORDER, "c_alice", "FIVEOFF", 1500)
        .await;
    assert_eq!(five["discount"], json!({"amount": 500, "currency": "EUR"}));
}

#[tokio::test]
async fn concurrent_confirmations_of_a_single_use_coupon_give_exactly_one_token() {
    let world = World::start().await;
    let attempts = (0..20).map(|_| world.confirm_coupon(ORDER, "c_alice", "ONCE", 5000));
    let results = futures::future::join_all(attempts).await;
    let winners = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s != 201)
            .all(|(s, b)| *s == 409 && problem_type(b) == "coupon-reserved")
    );
    assert_eq!(world.coupon("ONCE").await["status"], "reserved");
}

#[tokio::test]
async fn concurrent_points_holds_never_overdraw_a_balance() {
    let world = World::start().await;
    // Bob has 1200 points: twelve holds of 100 fit, the rest must be refused.
    let attempts = (0..30).map(|_| world.confirm_points(ORDER, "c_bob", 100));
    let results = futures::future::join_all(attempts).await;
    let granted = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(granted, 12, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s != 201)
            .all(|(s, b)| *s == 422 && problem_type(b) == "insufficient-points")
    );
    let balance = world.balance("c_bob").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["held"].as_u64()),
        (Some(0), Some(1200))
    );
}

#[tokio::test]
async fn points_and_payment_rules_refuse_with_problems() {
    let world = World::start().await;
    let cases = [
        (
            "zero points",
            world.confirm_points(ORDER, "c_alice", 0).await,
            422,
            "invalid-points",
        ),
        (
            "too many points",
            world.confirm_points(ORDER, "c_alice", 5001).await,
            422,
            "insufficient-points",
        ),
        (
            "unknown customer",
            world.confirm_points(ORDER, "c_nobody", 1).await,
            404,
            "customer-not-found",
        ),
        (
            "a hostile customer id",
            world.confirm_points(ORDER, "c alice'--", 1).await,
            422,
            "invalid-customer-id",
        ),
        (
            "another customer's method",
            world
                .confirm_payment(ORDER, "c_alice", "pm_bob_mastercard", 100)
                .await,
            404,
            "payment-method-not-found",
        ),
        (
            "unknown method",
            world
                .confirm_payment(ORDER, "c_alice", "pm_nope", 100)
                .await,
            404,
            "payment-method-not-found",
        ),
        (
            "over the limit",
            world
                .confirm_payment(ORDER, "c_bob", "pm_bob_mastercard", 20001)
                .await,
            422,
            "over-limit",
        ),
        (
            "wrong currency",
            world
                .confirm_payment(ORDER, "c_carol", "pm_carol_usd", 100)
                .await,
            422,
            "currency-mismatch",
        ),
        (
            "zero amount",
            world
                .confirm_payment(ORDER, "c_alice", "pm_alice_visa", 0)
                .await,
            422,
            "invalid-amount",
        ),
    ];
    for (why, (status, body), expected_status, slug) in cases {
        assert_eq!(
            (status, problem_type(&body)),
            (expected_status, slug),
            "{why}: {body}"
        );
    }
    assert_eq!(world.balance("c_alice").await["available"], 5000);
}

#[tokio::test]
async fn redeem_and_cancel_are_idempotent_and_follow_the_payment_state_machine() {
    let world = World::start().await;
    let relay = world.as_relay();
    let (_, payment) = world
        .confirm_payment(ORDER, "c_alice", "pm_alice_visa", 2500)
        .await;
    assert_eq!(payment["status"], "authorized");
    let (jti, token) = (
        payment["jti"].as_str().unwrap(),
        payment["token"].as_str().unwrap(),
    );
    let redeem = json!({"token": token, "order_processing_id": ORDER, "customer_id": "c_alice"});
    let redeem_url = world
        .payments
        .running
        .url("/service/v1/payments/redemptions");
    let cancel_url = world
        .payments
        .running
        .url("/service/v1/payments/cancellations");
    let cancel = json!({"jti": jti, "order_processing_id": ORDER});

    let (status, first) = world
        .post_as(&relay, redeem_url.clone(), redeem.clone())
        .await;
    assert_eq!(
        (
            status,
            first["status"].as_str(),
            first["replayed"].as_bool()
        ),
        (200, Some("captured"), Some(false)),
        "{first}"
    );
    let (status, again) = world
        .post_as(&relay, redeem_url.clone(), redeem.clone())
        .await;
    assert_eq!(
        (
            status,
            again["status"].as_str(),
            again["replayed"].as_bool()
        ),
        (200, Some("captured"), Some(true)),
        "{again}"
    );

    let (status, refunded) = world
        .post_as(&relay, cancel_url.clone(), cancel.clone())
        .await;
    assert_eq!(
        (status, refunded["status"].as_str()),
        (200, Some("refunded"))
    );
    let (status, again) = world
        .post_as(&relay, cancel_url.clone(), cancel.clone())
        .await;
    assert_eq!(
        (status, again["status"].as_str()),
        (200, Some("refunded")),
        "cancel is idempotent"
    );

    let (status, body) = world.post_as(&relay, redeem_url, redeem).await;
    assert_eq!(
        (status, problem_type(&body)),
        (409, "hold-released"),
        "a refunded payment is not captured again"
    );

    // Points: redeem twice deducts once, cancel refunds once.
    let (_, points) = world.confirm_points(ORDER, "c_alice", 300).await;
    let points_redeem =
        json!({"token": points["token"], "order_processing_id": ORDER, "customer_id": "c_alice"});
    let url = world.points.running.url("/service/v1/points/redemptions");
    for _ in 0..3 {
        assert_eq!(
            world
                .post_as(&relay, url.clone(), points_redeem.clone())
                .await
                .0,
            200
        );
    }
    assert_eq!(world.balance("c_alice").await["spent"], 300);
    let cancel = json!({"jti": points["jti"], "order_processing_id": ORDER});
    for _ in 0..3 {
        assert_eq!(
            world
                .post_as(
                    &relay,
                    world.points.running.url("/service/v1/points/cancellations"),
                    cancel.clone()
                )
                .await
                .0,
            200
        );
    }
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["spent"].as_u64()),
        (Some(5000), Some(0))
    );
}

#[tokio::test]
async fn redemption_checks_the_order_context_the_relay_sends() {
    let world = World::start().await;
    let (_, points) = world.confirm_points(ORDER, "c_alice", 100).await;
    let url = world.points.running.url("/service/v1/points/redemptions");
    let relay = world.as_relay();
    let other_order = "op_0192f0c4-7f3a-7b11-9d55-000000000000";
    let (status, body) = world.post_as(&relay, url.clone(), json!({"token": points["token"], "order_processing_id": other_order, "customer_id": "c_alice"})).await;
    assert_eq!((status, problem_type(&body)), (422, "order-mismatch"));
    let (status, body) = world
        .post_as(
            &relay,
            url,
            json!({"token": points["token"], "order_processing_id": ORDER, "customer_id": "c_bob"}),
        )
        .await;
    assert_eq!((status, problem_type(&body)), (409, "customer-mismatch"));
    assert_eq!(world.balance("c_alice").await["spent"], 0);
}

#[tokio::test]
async fn consumer_endpoints_refuse_callers_without_the_relay_certificate() {
    let world = World::start().await;
    let (_, points) = world.confirm_points(ORDER, "c_alice", 100).await;
    let body =
        json!({"token": points["token"], "order_processing_id": ORDER, "customer_id": "c_alice"});
    for path in [
        "/service/v1/points/redemptions",
        "/service/v1/points/cancellations",
    ] {
        let url = world.points.running.url(path);
        let (status, answer) = world.post(url.clone(), body.clone()).await;
        assert_eq!(
            (status, problem_type(&answer)),
            (401, "client-certificate-required"),
            "{path}"
        );
        let (status, answer) = world
            .post_as(&world.pki.client(Some("intruder")), url, body.clone())
            .await;
        assert_eq!(
            (status, problem_type(&answer)),
            (403, "caller-not-authorized"),
            "{path}"
        );
    }
    assert_eq!(world.balance("c_alice").await["spent"], 0);
}

#[tokio::test]
async fn an_unredeemed_hold_expires_by_itself_its_redemption_is_refused_and_it_is_forgotten_later()
{
    // A hold shorter than its token, so that the hold (not the token) is what has expired.
    let settings = ctr_domain_kit::DomainSettings {
        hold_ttl: Duration::from_secs(60),
        ..domain_settings()
    };
    let world = World::start_custom(settings, |_| {}).await;
    let (_, points) = world.confirm_points(ORDER, "c_alice", 700).await;
    assert_eq!(world.balance("c_alice").await["held"], 700);
    world.clock.advance(Duration::from_secs(61));
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["available"].as_u64(), balance["held"].as_u64()),
        (Some(5000), Some(0)),
        "expiry gave the points back"
    );
    let (status, body) = world
        .post_as(&world.as_relay(), world.points.running.url("/service/v1/points/redemptions"), json!({"token": points["token"], "order_processing_id": ORDER, "customer_id": "c_alice"}))
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (410, "hold-expired"),
        "{body}"
    );
    let hold_url = world.points.running.url(&format!(
        "/service/v1/points/holds/{}",
        points["jti"].as_str().unwrap()
    ));
    let (_, hold) = world.get(hold_url.clone()).await;
    assert_eq!(hold["status"], "expired");

    // An hour (CTR_HOLD_RETENTION) after its expiry the expired hold is forgotten.
    world.clock.advance(Duration::from_secs(3600));
    let (status, body) = world.get(hold_url).await;
    assert_eq!(
        (status, problem_type(&body)),
        (404, "hold-not-found"),
        "{body}"
    );
    assert_eq!(world.balance("c_alice").await["available"], 5000);
}

#[tokio::test]
async fn each_domain_publishes_its_p384_jwks() {
    let world = World::start().await;
    for running in [
        &world.coupons.running,
        &world.points.running,
        &world.payments.running,
    ] {
        let (status, jwks) = world.get(running.url("/.well-known/jwks.json")).await;
        assert_eq!(status, 200);
        let key = &jwks["keys"][0];
        assert_eq!(
            (
                key["kty"].as_str(),
                key["crv"].as_str(),
                key["alg"].as_str(),
                key["use"].as_str()
            ),
            (Some("EC"), Some("P-384"), Some("ES384"), Some("sig"))
        );
        assert!(key.get("d").is_none(), "never a private key");
    }
}

#[tokio::test]
async fn a_redemption_is_reversible_within_the_cancellation_window_and_final_after_it() {
    let world = World::start().await;
    let relay = world.as_relay();
    let window = world.domain_settings.cancel_window;
    let redeem_url = world.points.running.url("/service/v1/points/redemptions");
    let cancel_url = world.points.running.url("/service/v1/points/cancellations");
    let redeemed = |points: &Value| json!({"token": points["token"], "order_processing_id": ORDER, "customer_id": "c_alice"});

    // Within the window: the redemption is reversed.
    let (_, early) = world.confirm_points(ORDER, "c_alice", 100).await;
    let (status, _) = world
        .post_as(&relay, redeem_url.clone(), redeemed(&early))
        .await;
    assert_eq!(status, 200);
    world.clock.advance(window - Duration::from_secs(1));
    let cancel = json!({"jti": early["jti"], "order_processing_id": ORDER});
    let (status, body) = world.post_as(&relay, cancel_url.clone(), cancel).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("reversed")),
        "{body}"
    );

    // Past it: the redemption is final, the cancellation is refused and changes nothing.
    let (_, late) = world.confirm_points(ORDER, "c_alice", 200).await;
    let (status, _) = world.post_as(&relay, redeem_url, redeemed(&late)).await;
    assert_eq!(status, 200);
    world.clock.advance(window + Duration::from_secs(1));
    let cancel = json!({"jti": late["jti"], "order_processing_id": ORDER});
    let (status, body) = world.post_as(&relay, cancel_url, cancel).await;
    assert_eq!(
        (status, problem_type(&body)),
        (409, "cancellation-window-closed"),
        "{body}"
    );
    assert_eq!(body["window_seconds"], window.as_secs());
    let balance = world.balance("c_alice").await;
    assert_eq!(
        (balance["spent"].as_u64(), balance["available"].as_u64()),
        (Some(200), Some(4800)),
        "the late redemption stands"
    );
}
