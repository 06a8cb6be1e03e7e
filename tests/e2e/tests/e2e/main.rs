#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The system in containers, driven over the published ports. One stack for the whole run
//! (starting it is the expensive part); each step reads as a sentence.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctr_e2e_tests::otlp::Receiver;
use ctr_e2e_tests::{CHECKOUT_SERVICES, DOMAINS, Stack};
use serde_json::{Value, json};

mod chaos;
mod outage;

/// The tests of this binary each run a stack of their own, one after another: two at once on
/// a 2-core machine would make each other's timings.
static ONE_STACK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://ctr.dev/problems/")
}

#[tokio::test]
async fn the_containerised_system_checks_out_refuses_bad_tokens_compensates_and_recovers() {
    let _one_stack = ONE_STACK.lock().await;
    let receiver = Receiver::start().await;
    let stack = Stack::start_with(&receiver.env()).await;
    every_container_reports_healthy(&stack);
    each_container_sees_only_the_trust_anchors_and_its_own_keys(&stack);
    let order = a_full_checkout_completes(&stack).await;
    customers_are_who_their_access_token_says(&stack, &order).await;
    one_checkout_is_one_trace_with_spans_from_all_four_services(&receiver, &order).await;
    a_replayed_token_is_refused(&stack).await;
    a_tampered_token_is_refused(&stack).await;
    a_declining_payment_is_compensated(&stack).await;
    a_stopped_domain_fails_the_checkout_in_bounded_time_and_recovers_when_started(&stack).await;
    every_service_restarted_keeps_its_state_and_earlier_tokens_check_out_once(&stack).await;
    a_relay_killed_during_a_capture_finishes_the_checkout_after_it_restarts(&stack).await;
    events_reach_the_receiver_once_each_across_a_relay_killed_mid_delivery(&stack).await;
    the_ctr_demo_runs_every_scenario_as_expected(&stack);
    pki_init_renews_the_running_stack_and_every_service_serves_its_new_certificate(&stack).await;
}

fn every_container_reports_healthy(stack: &Stack) {
    assert_eq!(Stack::health(&stack.relay), "healthy");
    assert_eq!(Stack::health(&stack.issuer), "healthy");
    for domain in DOMAINS {
        assert_eq!(Stack::health(stack.domain(domain)), "healthy", "{domain}");
    }
}

/// A domain's container cannot read the relay's mTLS key (and call another domain's
/// cancellations as the relay), nor another domain's keys.
fn each_container_sees_only_the_trust_anchors_and_its_own_keys(stack: &Stack) {
    let anchors = ["intermediates.pem", "root.pem"];
    for domain in DOMAINS {
        let mut expected: Vec<String> = anchors.iter().map(|f| (*f).to_owned()).collect();
        expected.extend(["server.key", "server.pem"].map(|f| format!("{domain}/{f}")));
        expected.sort();
        assert_eq!(
            Stack::files_in(stack.domain(domain), "/pki"),
            expected,
            "{domain}"
        );
    }
    let mut expected: Vec<String> = anchors.iter().map(|f| (*f).to_owned()).collect();
    expected.extend(
        [
            "client.key",
            "client.pem",
            "server.key",
            "server.pem",
            "webhook-receiver.key",
        ]
        .map(|f| format!("order-processing/{f}")),
    );
    expected.sort();
    assert_eq!(Stack::files_in(&stack.relay, "/pki"), expected);
}

/// `docker compose run --rm -e CTR_PKI_RENEW_ALL=true pki-init` on a running stack: every
/// service serves its renewed certificate within its reload interval, stays healthy without
/// a restart, and checkouts go on.
async fn pki_init_renews_the_running_stack_and_every_service_serves_its_new_certificate(
    stack: &Stack,
) {
    let mut containers = vec![
        ("order-processing", &stack.relay),
        ("dev-issuer", &stack.issuer),
    ];
    containers.extend(DOMAINS.map(|d| (d, stack.domain(d))));
    let mut before = Vec::new();
    for (_, container) in &containers {
        before.push(stack.served_certificate(container).await);
    }
    let printed = stack.run_pki_init(&[("CTR_PKI_RENEW_ALL", "true")]).await;
    assert!(
        printed.contains("renewed coupons's server certificate: every leaf")
            && printed.contains("renewed order-processing's client certificate"),
        "{printed}"
    );
    let deadline = Instant::now() + Duration::from_secs(45);
    for ((name, container), old) in containers.iter().zip(before) {
        while stack.served_certificate(container).await == old {
            assert!(
                Instant::now() < deadline,
                "{name} still serves its old certificate"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(Stack::health(container), "healthy", "{name}");
    }
    // A card-only checkout: the relay captures at payments with its client certificate.
    let order = stack.open_order("c_alice", 1999).await;
    let (status, answer) = stack
        .post(
            stack.domain_url("payments", "/service/v1/payments/confirmations").await,
            json!({"order_processing_id": order, "customer_id": "c_alice", "payment_method_id": "pm_alice_visa", "amount": {"amount": 1999, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let token = answer["token"].as_str().unwrap().to_owned();
    let (status, body) = stack.checkout(&order, &[token]).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("completed")),
        "{body}"
    );
}

async fn a_full_checkout_completes(stack: &Stack) -> String {
    let order = stack.open_order("c_alice", 4999).await;
    let tokens = stack.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, body) = stack.checkout(&order, &tokens).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    let points = stack.points("c_alice").await;
    assert_eq!(
        (points["available"].as_u64(), points["spent"].as_u64()),
        (Some(4500), Some(500))
    );
    assert_eq!(stack.coupon("SPRING10").await["uses"], 1);
    order
}

/// Without an access token nothing is answered; Bob's token does not open Alice's order; the
/// CLI logs in at the development issuer.
async fn customers_are_who_their_access_token_says(stack: &Stack, order: &str) {
    let url = stack
        .relay_url(&format!("/service/v1/orders/{order}"))
        .await;
    let response = stack.anonymous.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"ctr\", DPoP realm=\"ctr\", algs=\"ES256 ES384 EdDSA PS256 RS256\""
    );
    let bob = stack.token("c_bob").await;
    let response = stack
        .anonymous
        .get(&url)
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let (status, body) = stack.get(url).await;
    assert_eq!(
        (status, &body["customer_id"]),
        (200, &json!("c_alice")),
        "{body}"
    );

    let (code, stdout, stderr) = stack.ctr(&["login", "--customer", "c_bob"]);
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.trim();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "c_bob");
    let (code, _, stderr) = stack.ctr(&["login", "--customer", "c_mallory"]);
    assert_eq!(code, 2, "an unknown client is refused: {stderr}");
}

/// The checkout's server span at the relay roots one trace: the admission and each
/// redemption are spans in it, each redemption call is a client span, and each domain's
/// server span is that client span's child.
async fn one_checkout_is_one_trace_with_spans_from_all_four_services(
    receiver: &Receiver,
    order: &str,
) {
    let path = format!("/service/v1/orders/{order}/checkout");
    let trace = receiver
        .trace_of(
            |s| s.kind == "server" && s.attribute("url.path") == Some(path.as_str()),
            &CHECKOUT_SERVICES,
            Duration::from_secs(30),
        )
        .await;
    let services: std::collections::BTreeSet<&str> =
        trace.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        CHECKOUT_SERVICES.into_iter().collect(),
        "{} spans: {trace:#?}",
        trace.len()
    );
    let root = trace
        .iter()
        .find(|s| s.kind == "server" && s.service == "order-processing")
        .unwrap();
    assert_eq!(root.name, "POST /service/v1/orders/{id}/checkout");
    assert_eq!(
        root.attribute("http.route"),
        Some("/service/v1/orders/{id}/checkout")
    );
    assert!(
        root.parent_span_id.is_empty(),
        "the checkout starts the trace"
    );
    for step in ["checkout.admit", "checkout.saga"] {
        assert!(trace.iter().any(|s| s.name == step), "{step}");
    }
    assert_eq!(
        trace.iter().filter(|s| s.name == "checkout.redeem").count(),
        3
    );
    for domain in DOMAINS {
        let server = trace
            .iter()
            .find(|s| s.service == domain && s.kind == "server" && s.name.ends_with("/redemptions"))
            .unwrap_or_else(|| panic!("{domain} redemption span: {trace:#?}"));
        assert_eq!(
            server.name,
            format!("POST /service/v1/{domain}/redemptions")
        );
        let client = trace
            .iter()
            .find(|s| s.span_id == server.parent_span_id)
            .unwrap_or_else(|| panic!("{domain}: the caller's span: {trace:#?}"));
        assert_eq!(
            (
                client.service.as_str(),
                client.kind.as_str(),
                client.name.as_str()
            ),
            ("order-processing", "client", "POST")
        );
    }
    assert!(
        trace.iter().all(|s| s
            .attributes
            .values()
            .all(|v| !v.to_string().contains("eyJ"))),
        "no span carries a token"
    );
}

async fn a_replayed_token_is_refused(stack: &Stack) {
    let order = stack.open_order("c_alice", 4999).await;
    let tokens = stack.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    assert_eq!(stack.checkout(&order, &tokens).await.0, 200);
    let spent = stack.points("c_alice").await["spent"].clone();
    let (status, body) = stack.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (409, "order-not-open"),
        "{body}"
    );
    let other = stack.open_order("c_alice", 4999).await;
    let (status, body) = stack.checkout(&other, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "order-mismatch"),
        "{body}"
    );
    assert_eq!(
        stack.points("c_alice").await["spent"],
        spent,
        "nothing redeemed twice"
    );
}

async fn a_tampered_token_is_refused(stack: &Stack) {
    let order = stack.open_order("c_alice", 4999).await;
    let mut tokens = stack.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let parts: Vec<&str> = tokens[1].split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["constraints"] = json!({"points": 1});
    tokens[1] = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    let (status, body) = stack.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "token-signature-invalid"),
        "{body}"
    );
}

async fn a_declining_payment_is_compensated(stack: &Stack) {
    let before = stack.points("c_alice").await;
    let uses = stack.coupon("SPRING10").await["uses"].clone();
    let order = stack.open_order("c_alice", 4999).await;
    let tokens = stack
        .three_tokens(&order, "c_alice", "pm_alice_declines")
        .await;
    let (status, body) = stack.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body), body["cause"].as_str()),
        (409, "redemption-refused", Some("payment-declined")),
        "{body}"
    );
    let after = stack.points("c_alice").await;
    assert_eq!(after["spent"], before["spent"], "points refunded");
    assert_eq!(
        after["held"], before["held"],
        "the holds of this order are released"
    );
    assert_eq!(
        stack.coupon("SPRING10").await["uses"],
        uses,
        "coupon back to unused"
    );
}

async fn a_stopped_domain_fails_the_checkout_in_bounded_time_and_recovers_when_started(
    stack: &Stack,
) {
    let before = stack.points("c_alice").await;
    let order = stack.open_order("c_alice", 4999).await;
    let tokens = stack.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let payments = stack.domain("payments");
    payments.stop().await.unwrap();

    let started = Instant::now();
    let (status, body) = stack.checkout(&order, &tokens).await;
    assert_eq!(
        (status, problem_type(&body)),
        (502, "issuer-unavailable"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded: {:?}",
        started.elapsed()
    );
    let after = stack.points("c_alice").await;
    assert_eq!(
        (&after["spent"], &after["held"]),
        (&before["spent"], &before["held"]),
        "points given back"
    );

    payments.start().await.unwrap();
    Stack::wait_healthy(payments).await;
    let order = stack.open_order("c_alice", 4999).await;
    let tokens = stack.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, body) = stack.checkout(&order, &tokens).await;
    assert_eq!(
        status, 200,
        "the system recovers once payments is back: {body}"
    );
}

async fn every_service_restarted_keeps_its_state_and_earlier_tokens_check_out_once(stack: &Stack) {
    let done = stack.open_order("c_alice", 4999).await;
    let tokens = stack.three_tokens(&done, "c_alice", "pm_alice_visa").await;
    let (status, completed) = stack.checkout(&done, &tokens).await;
    assert_eq!(status, 200, "{completed}");
    let captured = completed["tokens"][2]["jti"].as_str().unwrap().to_owned();
    let waiting = stack.open_order("c_alice", 4999).await;
    let confirmed_before = stack
        .three_tokens(&waiting, "c_alice", "pm_alice_visa")
        .await;
    let points = stack.points("c_alice").await;
    let coupon = stack.coupon("SPRING10").await;

    for container in [
        &stack.relay,
        stack.domain("coupons"),
        stack.domain("points"),
        stack.domain("payments"),
    ] {
        container.stop().await.unwrap();
        container.start().await.unwrap();
        Stack::wait_healthy(container).await;
    }

    assert_eq!(
        stack.points("c_alice").await,
        points,
        "balances survive the restart"
    );
    let after = stack.coupon("SPRING10").await;
    assert_eq!(
        (&after["uses"], &after["reserved"]),
        (&coupon["uses"], &coupon["reserved"])
    );
    assert_eq!(stack.payment(&captured).await["status"], "captured");
    let order = stack.order(&done).await;
    assert_eq!(order["status"], "completed", "{order}");
    assert_eq!(order["tokens"], completed["tokens"]);
    let (status, body) = stack.checkout(&waiting, &confirmed_before).await;
    assert_eq!(
        status, 200,
        "tokens confirmed before the restart check out: {body}"
    );
    assert_eq!(
        stack.checkout(&waiting, &confirmed_before).await.0,
        409,
        "once"
    );
}

/// `ctr demo --json`, run from its image on the stack's network as `docker compose run --rm
/// demo` runs it: every scenario behaves as expected, and it says so in its exit code.
fn the_ctr_demo_runs_every_scenario_as_expected(stack: &Stack) {
    let (code, stdout, stderr) = stack.ctr(&["demo", "--json"]);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("demo --json prints JSON ({e}): {stdout}\n{stderr}"));
    let outcomes: Vec<(&str, bool)> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["scenario"].as_str().unwrap(), s["ok"] == true))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("checkout", true),
            ("replay", true),
            ("tampered", true),
            ("declined", true),
            ("settlement", true),
            ("customers", true),
            ("dpop", true),
            ("events", true),
        ],
        "{stdout}\n{stderr}"
    );
    assert_eq!(report["ok"], true);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("ok   checkout"),
        "progress per step: {stderr}"
    );
    assert!(
        !stdout.contains("eyJ") && !stderr.contains("eyJ"),
        "no token printed"
    );

    // A stack it cannot reach is a connection error (2), not a deviation (1).
    let (code, _, stderr) = stack.ctr(&[
        "--relay-url",
        "https://nowhere.invalid:8443",
        "order",
        "show",
        "op_x",
    ]);
    assert_eq!(code, 2, "{stderr}");
}

/// The relay is SIGKILLed while its deliveries hang on a frozen receiver: once both are back,
/// the receiver (`ctr listen`, deduplicating by `webhook-id`) has exactly one event per
/// transition, of the right type, and every earlier order's event too.
async fn events_reach_the_receiver_once_each_across_a_relay_killed_mid_delivery(stack: &Stack) {
    Stack::docker("pause", &stack.receiver);
    let mut expected = Vec::new();
    for (method, status, kind) in [
        ("pm_alice_visa", 200, "order.completed"),
        ("pm_alice_declines", 409, "order.failed"),
    ] {
        let order = stack.open_order("c_alice", 4999).await;
        let tokens = stack.three_tokens(&order, "c_alice", method).await;
        let (answered, body) = stack.checkout(&order, &tokens).await;
        assert_eq!(
            answered, status,
            "a frozen receiver delays no checkout: {body}"
        );
        expected.push((order, kind));
    }
    // The attempts are under way, hanging on the frozen receiver, when the relay dies.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Stack::docker("kill", &stack.relay);
    stack.relay.start().await.unwrap();
    Stack::docker("unpause", &stack.receiver);
    Stack::wait_healthy(&stack.relay).await;
    let started = Instant::now();
    let received = loop {
        let received = stack.received_events().await;
        if expected
            .iter()
            .all(|(order, _)| received.iter().any(|(_, _, o)| o == order))
        {
            break received;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "every event arrives: {received:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for (order, kind) in &expected {
        let events: Vec<&str> = received
            .iter()
            .filter(|(_, _, o)| o == order)
            .map(|(_, k, _)| k.as_str())
            .collect();
        assert_eq!(events, [*kind], "{order}: {received:?}");
    }
    // Every checkout of the run so far has its one event.
    let mut ids: Vec<&str> = received.iter().map(|(id, _, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), received.len(), "one id per event: {received:?}");
}

async fn a_relay_killed_during_a_capture_finishes_the_checkout_after_it_restarts(stack: &Stack) {
    let before = stack.points("c_alice").await;
    let order = stack.open_order("c_alice", 4999).await;
    let tokens = stack.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let payments = stack.domain("payments");
    Stack::docker("pause", payments);
    let (status, body) = stack.checkout(&order, &tokens).await;
    assert_eq!(status, 202, "the capture hangs: {body}");
    let payment = body["tokens"][2]["jti"].as_str().unwrap().to_owned();
    let mut capturing = false;
    for _ in 0..100 {
        if stack.order(&order).await["tokens"][2]["outcome"] == "redeeming" {
            capturing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(capturing, "the log shows the capture under way");
    Stack::docker("kill", &stack.relay);
    Stack::docker("unpause", payments);
    stack.relay.start().await.unwrap();
    Stack::wait_healthy(&stack.relay).await;

    let started = Instant::now();
    let view = loop {
        let view = stack.order(&order).await;
        if view["status"] != "checking_out" && view["compensation_pending"] == false {
            break view;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the recovered checkout ends within its bound: {view}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(stack.payment(&payment).await["status"], "captured");
    let after = stack.points("c_alice").await;
    assert_eq!(
        after["spent"].as_u64().unwrap(),
        before["spent"].as_u64().unwrap() + 500,
        "points spent once"
    );
}
