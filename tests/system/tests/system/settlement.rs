//! Settlement: an order completes only when its tokens pay its total exactly, in its currency,
//! with any discount priced on that total. A refused checkout consumes nothing, so the same
//! order checks out once the tokens are corrected.

use ctr_money::{Currency, Money};
use ctr_system_tests::{World, problem_type};
use ctr_token::Settlement;
use serde_json::{Value, json};

fn token(body: &Value) -> String {
    body["token"].as_str().unwrap().to_owned()
}

fn eur(amount: u64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

#[tokio::test]
async fn coupon_points_and_payment_that_add_up_to_the_total_complete_and_the_order_shows_each_share()
 {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(status, 200, "{body}");
    let shares: Vec<_> = body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["capability"].as_str().unwrap(), t["settles"].clone()))
        .collect();
    assert_eq!(
        shares,
        [
            ("coupons:redeem", eur(500)),
            ("points:redeem", eur(500)),
            ("payments:capture", eur(3999)),
        ]
    );
    assert_eq!(body["settled"], eur(4999), "the shares add up to the total");
    assert_eq!(body["total"], eur(4999));
}

#[tokio::test]
async fn amounts_that_do_not_settle_the_total_are_refused_and_the_same_order_checks_out_after() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let (_, coupon) = world
        .confirm_coupon(&order, "c_alice", "SPRING10", 4999)
        .await;
    let (_, points) = world.confirm_points(&order, "c_alice", 500).await;
    let (_, cent) = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 1)
        .await;
    let (_, double) = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 9998)
        .await;
    let (_, full) = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 4999)
        .await;
    let (_, usd_points) = world.confirm_points_in(&order, "c_alice", 500, "USD").await;
    let (_, repriced) = world
        .confirm_coupon(&order, "c_alice", "FIVEOFF", 9999)
        .await;
    let (_, exact) = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 3999)
        .await;

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "0.01 EUR on a 49.99 EUR order",
            vec![token(&cent)],
            "settlement-sum-mismatch",
        ),
        (
            "twice the total",
            vec![token(&double)],
            "settlement-sum-mismatch",
        ),
        (
            "the full total paid on top of a coupon and points",
            vec![token(&coupon), token(&points), token(&full)],
            "settlement-sum-mismatch",
        ),
        (
            "points that pay in USD on a EUR order",
            vec![token(&coupon), token(&usd_points), token(&exact)],
            "settlement-currency-mismatch",
        ),
        (
            "a coupon priced on 99.99 for a 49.99 order",
            vec![token(&repriced), token(&points), token(&exact)],
            "settlement-priced-on-other-total",
        ),
    ];
    for (why, tokens, slug) in cases {
        let (status, body) = world.checkout(&order, &tokens).await;
        assert_eq!((status, problem_type(&body)), (422, slug), "{why}: {body}");
        let (_, view) = world
            .get(world.relay.url(&format!("/service/v1/orders/{order}")))
            .await;
        assert_eq!(view["status"], "open", "{why}: the order stays open");
        assert_eq!(
            world.balance("c_alice").await["spent"],
            0,
            "{why}: nothing redeemed"
        );
    }

    let (_, body) = world.checkout(&order, &[token(&cent)]).await;
    assert_eq!(body["expected"], eur(4999), "{body}");
    assert_eq!(body["presented"], eur(1), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("4999 EUR"),
        "the detail states both sums: {body}"
    );

    let (status, body) = world
        .checkout(&order, &[token(&coupon), token(&points), token(&exact)])
        .await;
    assert_eq!(
        status, 200,
        "the corrected tokens check out the same order: {body}"
    );
    assert_eq!(body["status"], "completed");
    let (_, captured) = world
        .get(world.payments.running.url(&format!(
            "/service/v1/payments/{}",
            exact["jti"].as_str().unwrap()
        )))
        .await;
    assert_eq!(captured["status"], "captured");
    assert_eq!(captured["amount"], eur(3999));
    let (_, never) = world
        .get(world.payments.running.url(&format!(
            "/service/v1/payments/{}",
            cent["jti"].as_str().unwrap()
        )))
        .await;
    assert_eq!(
        never["status"], "authorized",
        "the refused 0.01 was never captured"
    );
}

#[tokio::test]
async fn an_order_paid_entirely_by_coupon_and_points_needs_no_payment_token() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 2500).await;
    let (status, coupon) = world
        .confirm_coupon(&order, "c_alice", "SPRING10", 2500)
        .await;
    assert_eq!(
        (status, coupon["settles"].clone()),
        (201, eur(250)),
        "{coupon}"
    );
    let (status, points) = world.confirm_points(&order, "c_alice", 2250).await;
    assert_eq!(
        (status, points["value"].clone()),
        (201, eur(2250)),
        "{points}"
    );
    let (status, body) = world
        .checkout(&order, &[token(&coupon), token(&points)])
        .await;
    assert_eq!(
        (status, body["settled"].clone()),
        (200, eur(2500)),
        "{body}"
    );
}

#[tokio::test]
async fn a_coupon_that_would_take_nothing_off_is_refused_at_confirmation_and_stays_unused() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 2).await;
    let (status, body) = world
        .confirm_coupon(&order, "c_alice", "WELCOME-ALICE", 2)
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "coupon-no-discount"),
        "20 % of 0.02 rounds to nothing: {body}"
    );
    assert_eq!(world.coupon("WELCOME-ALICE").await["reserved"], 0);
}

#[tokio::test]
async fn amounts_over_the_maximum_are_refused_naming_the_field() {
    let world = World::start().await;
    let over = Money::MAX_AMOUNT + 1;
    let (status, body) = world
        .post(
            world.relay.url("/service/v1/orders"),
            json!({"customer_id": "c_alice", "total": {"amount": over, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "invalid-request"),
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("total") && detail.contains("`amount` must be at most"),
        "{detail}"
    );

    let (status, body) = world
        .confirm_payment(
            "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e",
            "c_alice",
            "pm_alice_visa",
            over,
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "invalid-request"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("amount"),
        "{body}"
    );

    let (status, body) = world
        .confirm_points(
            "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e",
            "c_alice",
            u64::MAX,
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "invalid-points"),
        "{body}"
    );
}

#[tokio::test]
async fn points_pay_only_in_a_configured_currency_and_say_what_they_are_worth() {
    let world = World::start().await;
    let order = "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e";
    let (status, body) = world.confirm_points_in(order, "c_alice", 10, "GBP").await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "currency-not-supported"),
        "{body}"
    );
    assert_eq!(world.balance("c_alice").await["held"], 0, "nothing held");
    let (status, body) = world.confirm_points(order, "c_alice", 250).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (
            body["value"].clone(),
            body["point_value"].clone(),
            body["settles"].clone()
        ),
        (eur(250), eur(1), eur(250))
    );
}

#[tokio::test]
async fn a_capture_whose_token_settles_another_amount_than_the_authorization_is_refused() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let (_, authorized) = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 100)
        .await;
    let jti = uuid::Uuid::parse_str(authorized["jti"].as_str().unwrap()).unwrap();
    // A token for the same hold that claims more, signed with the payments key itself: what a
    // bug or a stolen key could produce. A domain redeems only the very token it issued for
    // the hold (its SHA-256 is kept with it): this one is refused, and nothing is captured.
    let more = Settlement::pays(Money::checked(4999, Currency::parse("EUR").unwrap()).unwrap());
    let forged = world
        .payments
        .state
        .signer
        .issue(jti, "c_alice", None, &order, more, &json!({}))
        .await
        .unwrap();
    let (status, body) = world
        .post_as(
            &world.as_relay(),
            world
                .payments
                .running
                .url("/service/v1/payments/redemptions"),
            json!({"token": forged.token, "order_processing_id": order, "customer_id": "c_alice"}),
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (401, "token-not-issued"),
        "{body}"
    );
    assert_eq!(
        world
            .get(
                world
                    .payments
                    .running
                    .url(&format!("/service/v1/payments/{jti}"))
            )
            .await
            .1["status"],
        "authorized",
        "nothing was captured"
    );
}
