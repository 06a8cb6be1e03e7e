//! Fuzzing every JSON request body over real HTTP with proptest (a bounded number of cases, so
//! it runs in every `cargo test`; raise `PROPTEST_CASES` for a longer hunt): whatever the body,
//! a service answers, never with a 5xx, and every refusal is problem+json.

use ctr_system_tests::World;
use proptest::prelude::*;
use serde_json::Value;

/// The field names the endpoints know, so that generated bodies get past the first check often.
const FIELDS: [&str; 14] = [
    "customer_id",
    "total",
    "amount",
    "currency",
    "tokens",
    "order_processing_id",
    "coupon_code",
    "order_total",
    "points",
    "payment_method_id",
    "token",
    "jti",
    "reason",
    "settles",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Into::into),
        any::<i64>().prop_map(Into::into),
        any::<u64>().prop_map(Into::into),
        (-1e20f64..1e20).prop_map(Into::into),
        prop_oneof![
            Just("EUR".to_owned()),
            Just("c_alice".to_owned()),
            Just("SPRING10".to_owned()),
            Just("pm_alice_visa".to_owned()),
            Just("0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e".to_owned()),
            ".{0,40}",
        ]
        .prop_map(Into::into),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Into::into),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(&FIELDS[..]).prop_map(str::to_owned),
                    "[a-z_]{1,10}"
                ],
                inner,
                0..7,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn any_body_on_any_endpoint_is_answered_and_every_refusal_is_a_problem() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let world = runtime.block_on(World::start());
    let order = runtime.block_on(world.open_order("c_alice", 4999));
    let relay_client = world.as_relay();
    let mut endpoints = vec![
        (
            world.customer.clone(),
            world.relay.url("/service/v1/orders"),
        ),
        (
            world.customer.clone(),
            world
                .relay
                .url(&format!("/service/v1/orders/{order}/checkout")),
        ),
    ];
    for (domain, running) in [
        ("coupons", &world.coupons.running),
        ("points", &world.points.running),
        ("payments", &world.payments.running),
    ] {
        endpoints.push((
            world.customer.clone(),
            running.url(&format!("/service/v1/{domain}/confirmations")),
        ));
        for action in ["redemptions", "cancellations"] {
            endpoints.push((
                relay_client.clone(),
                running.url(&format!("/service/v1/{domain}/{action}")),
            ));
        }
    }
    let post = |client: &reqwest::Client, url: &str, body: Vec<u8>| {
        runtime.block_on(async {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, content_type, body)
        })
    };
    let check = |url: &str, sent: &str, (status, content_type, body): (u16, String, Value)| {
        prop_assert!(status < 500, "{url} answered {status} to {sent}: {body}");
        if status >= 400 {
            prop_assert_eq!(
                content_type.as_str(),
                "application/problem+json",
                "{} {}",
                url,
                sent
            );
            prop_assert!(
                body["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("https://ctr.dev/problems/")),
                "{url}: {body}"
            );
            prop_assert_eq!(body["status"].as_u64(), Some(u64::from(status)));
        }
        Ok(())
    };
    // 64 bodies of each kind unless PROPTEST_CASES says otherwise.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&json(), |body| {
            let sent = body.to_string();
            for (client, url) in &endpoints {
                check(url, &sent, post(client, url, sent.clone().into_bytes()))?;
            }
            Ok(())
        })
        .unwrap();
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..200), |bytes| {
            let sent = String::from_utf8_lossy(&bytes).into_owned();
            for (client, url) in &endpoints {
                check(url, &sent, post(client, url, bytes.clone()))?;
            }
            Ok(())
        })
        .unwrap();
}
