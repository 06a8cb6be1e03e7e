//! No refusal repeats what the request sent: a problem names fields and positions, never the
//! values, keys, path segments, query or headers it was given (issue: input echoed into problem
//! bodies). Every public endpoint is sent each marker in each place it can go.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctr_system_tests::World;
use reqwest::Method;
use serde_json::json;

/// The strings the answers must not contain: a plain one (it passes as an id or a code) and one
/// shaped like a token, made as a compact JWS is (base64url header and payload, a signature).
fn markers() -> [String; 2] {
    let part = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    [
        "zqMarkerQz7".to_owned(),
        format!(
            "{}.{}.zqMarkerSig",
            part(br#"{"sqMarker"}"#),
            part(b"secret")
        ),
    ]
}

/// Request bodies with `@` where the marker goes (as a JSON string unless it stands alone
/// between braces, where it is a key).
fn bodies(templates: &[&str], marker: &str) -> Vec<String> {
    let quoted = serde_json::to_string(marker).unwrap();
    templates.iter().map(|t| t.replace('@', &quoted)).collect()
}

#[tokio::test]
async fn no_problem_repeats_a_value_key_path_query_or_header_of_the_request() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let relay_client = world.as_relay();
    // A real token of this order; then the marker in each field of each body.
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let token = &tokens[0];
    let mut checked = 0;
    for marker in &markers() {
        let marker = marker.as_str();
        let op = &order;
        let relay = &world.relay;
        let mut requests: Vec<(&reqwest::Client, Method, String, Option<String>)> = Vec::new();
        let customer = &world.customer;
        for body in bodies(
            &[
                r#"{"customer_id": @, "total": {"amount": 100, "currency": "EUR"}}"#,
                r#"{"customer_id": "c_alice", "total": @}"#,
                r#"{"customer_id": "c_alice", "total": {"amount": @, "currency": "EUR"}}"#,
                r#"{"customer_id": "c_alice", "total": {"amount": 100, "currency": @}}"#,
                r#"{"customer_id": "c_alice", "total": {"amount": 100, "currency": "EUR"}, @: 1}"#,
                r#"{"customer_id": "c_alice", "total": {"amount": 100, "currency": "EUR", @: 1}}"#,
                r#"[@]"#,
                r#"{"customer_id": @"#,
            ],
            marker,
        ) {
            requests.push((
                customer,
                Method::POST,
                relay.url("/service/v1/orders"),
                Some(body),
            ));
        }
        let checkout = relay.url(&format!("/service/v1/orders/{op}/checkout"));
        for body in bodies(
            &[
                r#"{"tokens": @}"#,
                r#"{"tokens": [@]}"#,
                r#"{"tokens": [1, @]}"#,
                r#"{@: []}"#,
            ],
            marker,
        ) {
            requests.push((customer, Method::POST, checkout.clone(), Some(body)));
        }
        // A real token spliced with the marker, and one bound to another order.
        let spliced = format!("{token}{marker}");
        let other = world.open_order("c_alice", 4999).await;
        requests.push((
            customer,
            Method::POST,
            relay.url(&format!("/service/v1/orders/{other}/checkout")),
            Some(json!({"tokens": [token]}).to_string()),
        ));
        requests.push((
            customer,
            Method::POST,
            checkout.clone(),
            Some(json!({"tokens": [spliced]}).to_string()),
        ));
        for path in [
            format!("/service/v1/orders/{marker}"),
            format!("/service/v1/orders/{marker}/checkout"),
            format!("/service/v1/{marker}"),
        ] {
            requests.push((customer, Method::GET, relay.url(&path), None));
            requests.push((customer, Method::POST, relay.url(&path), Some("{}".into())));
        }

        let coupons = &world.coupons.running;
        let points = &world.points.running;
        let payments = &world.payments.running;
        let confirmations = [
            (
                coupons.url("/service/v1/coupons/confirmations"),
                vec![
                    r#"{"order_processing_id": @, "customer_id": "c_alice", "coupon_code": "SPRING10", "order_total": {"amount": 4999, "currency": "EUR"}}"#,
                    r#"{"order_processing_id": "OP", "customer_id": @, "coupon_code": "SPRING10", "order_total": {"amount": 4999, "currency": "EUR"}}"#,
                    r#"{"order_processing_id": "OP", "customer_id": "c_alice", "coupon_code": @, "order_total": {"amount": 4999, "currency": "EUR"}}"#,
                    r#"{"order_processing_id": "OP", "customer_id": "c_alice", "coupon_code": "SPRING10", "order_total": {"amount": @, "currency": "EUR"}}"#,
                    r#"{"order_processing_id": "OP", "customer_id": "c_alice", "coupon_code": "SPRING10", "order_total": {"amount": 4999, "currency": @}}"#,
                    r#"{"order_processing_id": "OP", "customer_id": "c_alice", "coupon_code": "SPRING10", "order_total": {"amount": 4999, "currency": "EUR"}, @: 1}"#,
                ],
            ),
            (
                points.url("/service/v1/points/confirmations"),
                vec![
                    r#"{"order_processing_id": "OP", "customer_id": @, "points": 100, "currency": "EUR"}"#,
                    r#"{"order_processing_id": "OP", "customer_id": "c_alice", "points": @, "currency": "EUR"}"#,
                    r#"{"order_processing_id": "OP", "customer_id": "c_alice", "points": 100, "currency": @}"#,
                    r#"{"order_processing_id": "OP", "customer_id": "c_nobody", "points": 100, "currency": "EUR", @: 2}"#,
                ],
            ),
            (
                payments.url("/service/v1/payments/confirmations"),
                vec![
                    r#"{"order_processing_id": "OP", "customer_id": "c_alice", "payment_method_id": @, "amount": {"amount": 100, "currency": "EUR"}}"#,
                    r#"{"order_processing_id": "OP", "customer_id": "c_alice", "payment_method_id": "pm_alice_visa", "amount": {"amount": @, "currency": "EUR"}}"#,
                    r#"{"order_processing_id": "OP", "customer_id": "c_alice", "payment_method_id": "pm_alice_visa", "amount": {"amount": 100, "currency": @}}"#,
                ],
            ),
        ];
        for (url, templates) in confirmations {
            for body in bodies(&templates, marker) {
                let body = body.replace("\"OP\"", &format!("\"{op}\""));
                requests.push((customer, Method::POST, url.clone(), Some(body)));
            }
        }
        for (domain, running) in [
            ("coupons", coupons),
            ("points", points),
            ("payments", payments),
        ] {
            for body in bodies(
                &[
                    r#"{"token": @, "order_processing_id": "OP", "customer_id": "c_alice"}"#,
                    r#"{"token": "TOKEN", "order_processing_id": @, "customer_id": "c_alice"}"#,
                    r#"{"token": "TOKEN", "order_processing_id": "OP", "customer_id": @}"#,
                ],
                marker,
            ) {
                let body = body
                    .replace("\"OP\"", &format!("\"{op}\""))
                    .replace("TOKEN", token);
                requests.push((
                    &relay_client,
                    Method::POST,
                    running.url(&format!("/service/v1/{domain}/redemptions")),
                    Some(body),
                ));
            }
            for body in bodies(
                &[
                    r#"{"jti": @, "order_processing_id": "OP"}"#,
                    r#"{"jti": "0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e", "order_processing_id": @}"#,
                    r#"{"jti": "0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e", "order_processing_id": "OP", "reason": @}"#,
                ],
                marker,
            ) {
                let body = body.replace("\"OP\"", &format!("\"{op}\""));
                requests.push((
                    &relay_client,
                    Method::POST,
                    running.url(&format!("/service/v1/{domain}/cancellations")),
                    Some(body),
                ));
            }
            for path in [
                format!("/service/v1/{domain}/holds/{marker}"),
                format!("/service/v1/{domain}/{marker}"),
            ] {
                requests.push((customer, Method::GET, running.url(&path), None));
            }
        }

        for (client, method, url, body) in requests {
            let url = format!("{url}?{marker}={marker}");
            let mut request = client
                .request(method.clone(), &url)
                .header("x-request-id", marker.split('.').next().unwrap());
            if let Some(body) = &body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.clone());
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            let answer = response.text().await.unwrap();
            if status.is_success() {
                continue;
            }
            checked += 1;
            assert_eq!(
                content_type, "application/problem+json",
                "{method} {url}: {answer}"
            );
            for needle in [marker, marker.split('.').next().unwrap(), token.as_str()] {
                assert!(
                    !answer.contains(needle),
                    "{method} {url} {body:?} answered {status} repeating the request: {answer}"
                );
            }
        }
    }
    assert!(checked > 100, "only {checked} refusals were checked");
}
