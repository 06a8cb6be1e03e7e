//! The relay with the three domains: the whole flow, over real TLS and mTLS.

use ctr_system_tests::World;

#[tokio::test]
async fn a_checkout_with_coupon_points_and_payment_completes_and_changes_each_domain_once() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    assert_eq!(world.balance("c_alice").await["held"], 500);

    let (status, body) = world.checkout(&order, &tokens).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    let outcomes: Vec<_> = body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["capability"].clone(), t["outcome"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("coupons:redeem", "redeemed"),
            ("points:redeem", "redeemed"),
            ("payments:capture", "redeemed")
        ]
        .map(|(c, o)| (serde_json::json!(c), serde_json::json!(o)))
    );
    assert!(
        !body.to_string().contains(&tokens[0]),
        "the order view never shows a token"
    );

    let balance = world.balance("c_alice").await;
    assert_eq!(
        (
            balance["available"].as_u64(),
            balance["held"].as_u64(),
            balance["spent"].as_u64()
        ),
        (Some(4500), Some(0), Some(500))
    );
    assert_eq!(world.coupon("SPRING10").await["uses"], 1);
    let (_, order_view) = world
        .get(world.relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(order_view["status"], "completed");
}
