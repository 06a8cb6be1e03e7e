//! Chaos against the images: eight clients run mixed checkouts (valid, declined at capture,
//! amounts that do not add up, replays) for a minute while the relay is SIGKILLed and
//! restarted twice, the points domain restarted, and payments paused for a few seconds.
//! Afterwards every order has ended within the bound, no answer contradicts its order's end,
//! the customer's points are conserved and spent exactly by the completed orders, and each
//! completed order captured its payment while no other did.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ctr_e2e_tests::Stack;
use serde_json::{Value, json};
use testcontainers::ContainerAsync;
use testcontainers::GenericImage;

pub(crate) const CLIENTS: usize = 8;
const RUN: Duration = Duration::from_secs(60);
/// The relay's `CTR_CHECKOUT_BOUND` in this stack.
const BOUND: Duration = Duration::from_secs(30);
/// Points each checkout spends.
pub(crate) const POINTS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Valid,
    Declined,
    /// The payment is a cent short: the checkout is refused, nothing consumed.
    Unbalanced,
    /// A valid checkout whose tokens are presented again afterwards.
    Replay,
}

#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) order: String,
    pub(crate) kind: Kind,
    pub(crate) payment: String,
    /// The checkout's answer; none when the connection broke (the relay was killed).
    pub(crate) answer: Option<(u16, Value)>,
    /// The answer to the tokens presented again (replays only).
    pub(crate) again: Option<(u16, Value)>,
}

pub(crate) fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://ctr.dev/problems/")
}

/// `https://127.0.0.1:<port>` of a container, if it is up.
pub(crate) async fn base(container: &ContainerAsync<GenericImage>) -> Option<String> {
    let port = container.get_host_port_ipv4(8443).await.ok()?;
    Some(format!("https://127.0.0.1:{port}"))
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

pub(crate) async fn post(
    stack: &Stack,
    container: &ContainerAsync<GenericImage>,
    path: &str,
    body: Value,
) -> Option<(u16, Value)> {
    let url = format!("{}{path}", base(container).await?);
    send(stack.client.post(url).json(&body)).await
}

pub(crate) async fn get(
    stack: &Stack,
    container: &ContainerAsync<GenericImage>,
    path: &str,
) -> Option<(u16, Value)> {
    let url = format!("{}{path}", base(container).await?);
    send(stack.client.get(url)).await
}

/// An order and the tokens confirmed for it, not checked out yet.
pub(crate) struct Prepared {
    order: String,
    kind: Kind,
    tokens: Vec<String>,
    payment: String,
}

/// One checkout of `kind`; none when a step before the checkout did not get through (a
/// service was down): nothing was admitted then.
pub(crate) async fn flow(stack: &Stack, kind: Kind) -> Option<Flow> {
    Some(check_out(stack, prepare(stack, kind).await?).await)
}

/// Opens an order and confirms coupon, points and payment for it; none when a step did not
/// get through.
pub(crate) async fn prepare(stack: &Stack, kind: Kind) -> Option<Prepared> {
    let (status, body) = post(
        stack,
        &stack.relay,
        "/service/v1/orders",
        json!({"customer_id": "c_alice", "total": {"amount": 4999, "currency": "EUR"}}),
    )
    .await?;
    if status != 201 {
        return None;
    }
    let order = body["order_processing_id"].as_str()?.to_owned();
    let (method, card) = match kind {
        Kind::Declined => ("pm_alice_declines", 4489),
        Kind::Unbalanced => ("pm_alice_visa", 4488),
        Kind::Valid | Kind::Replay => ("pm_alice_visa", 4489),
    };
    let confirmations = [
        (
            "coupons",
            json!({"order_processing_id": order, "customer_id": "c_alice", "coupon_code": "SPRING10", "order_total": {"amount": 4999, "currency": "EUR"}}),
        ),
        (
            "points",
            json!({"order_processing_id": order, "customer_id": "c_alice", "points": POINTS, "currency": "EUR"}),
        ),
        (
            "payments",
            json!({"order_processing_id": order, "customer_id": "c_alice", "payment_method_id": method, "amount": {"amount": card, "currency": "EUR"}}),
        ),
    ];
    let mut tokens = Vec::new();
    let mut payment = String::new();
    for (domain, body) in confirmations {
        let (status, answer) = post(
            stack,
            stack.domain(domain),
            &format!("/service/v1/{domain}/confirmations"),
            body,
        )
        .await?;
        if status != 201 {
            return None;
        }
        tokens.push(answer["token"].as_str()?.to_owned());
        payment = answer["jti"].as_str()?.to_owned();
    }
    Some(Prepared {
        order,
        kind,
        tokens,
        payment,
    })
}

/// Checks a prepared order out (and, for a replay, presents its tokens again).
pub(crate) async fn check_out(stack: &Stack, prepared: Prepared) -> Flow {
    let Prepared {
        order,
        kind,
        tokens,
        payment,
    } = prepared;
    let checkout = format!("/service/v1/orders/{order}/checkout");
    let answer = post(stack, &stack.relay, &checkout, json!({"tokens": tokens})).await;
    let again = if kind == Kind::Replay && answer.is_some() {
        post(stack, &stack.relay, &checkout, json!({"tokens": tokens})).await
    } else {
        None
    };
    Flow {
        order,
        kind,
        payment,
        answer,
        again,
    }
}

pub(crate) async fn client(stack: &Stack, index: usize, until: Instant, flows: &Mutex<Vec<Flow>>) {
    let kinds = [Kind::Valid, Kind::Declined, Kind::Unbalanced, Kind::Replay];
    let mut n = index;
    while Instant::now() < until {
        let kind = kinds[n % kinds.len()];
        n += 1;
        match flow(stack, kind).await {
            Some(flow) => flows.lock().unwrap().push(flow),
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The faults, on a schedule over the run.
async fn chaos(stack: &Stack) {
    let at = |s: u64| tokio::time::sleep(Duration::from_secs(s));
    at(8).await;
    Stack::docker("kill", &stack.relay);
    stack.relay.start().await.unwrap();
    at(10).await;
    Stack::docker("restart", stack.domain("points"));
    at(10).await;
    Stack::docker("pause", stack.domain("payments"));
    at(4).await;
    Stack::docker("unpause", stack.domain("payments"));
    at(8).await;
    Stack::docker("kill", &stack.relay);
    stack.relay.start().await.unwrap();
}

pub(crate) async fn points_total(stack: &Stack) -> (u64, u64) {
    let balance = stack.points("c_alice").await;
    let n = |key: &str| balance[key].as_u64().unwrap();
    (n("available") + n("held") + n("spent"), n("spent"))
}

/// Polls the order until its checkout ended; answers it and how long that took.
pub(crate) async fn ended(stack: &Stack, order: &str, since: Instant, limit: Duration) -> Value {
    loop {
        if let Some((200, view)) =
            get(stack, &stack.relay, &format!("/service/v1/orders/{order}")).await
            && view["status"] != "checking_out"
            && view["compensation_pending"] == false
        {
            return view;
        }
        assert!(
            since.elapsed() < limit,
            "order {order} has not ended {limit:?} after the run"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the flows ended as.
pub(crate) struct Ended {
    pub(crate) completed: u64,
    pub(crate) counts: std::collections::BTreeMap<(String, String), usize>,
    /// How long after `since` the last order had ended.
    pub(crate) latest: Duration,
}

/// Waits until each flow's order has ended (within `limit` of `since`) and checks it against
/// what its client was told and what payments did: no answer contradicts the order's end, a
/// replay never goes through, and a payment is captured exactly when its order completed.
pub(crate) async fn ended_consistently(
    stack: &Stack,
    flows: &[Flow],
    since: Instant,
    limit: Duration,
) -> Ended {
    let mut latest = Duration::ZERO;
    let mut completed = 0;
    let mut counts = std::collections::BTreeMap::new();
    for flow in flows {
        let view = ended(stack, &flow.order, since, limit).await;
        latest = latest.max(since.elapsed());
        let status = view["status"].as_str().unwrap().to_owned();
        *counts
            .entry((format!("{:?}", flow.kind), status.clone()))
            .or_insert(0) += 1;
        let context = format!("{flow:?} ended {view}");
        if let Some((code, body)) = &flow.answer {
            match code {
                200 => assert_eq!(status, "completed", "{context}"),
                409 | 502
                    if ["redemption-refused", "issuer-unavailable"]
                        .contains(&problem_type(body)) =>
                {
                    assert_eq!(status, "failed", "{context}")
                }
                _ => {}
            }
            assert!(*code < 500 || *code == 502 || *code == 503, "{context}");
        }
        match flow.kind {
            Kind::Unbalanced => assert_eq!(status, "open", "nothing admitted: {context}"),
            Kind::Declined => assert_ne!(status, "completed", "{context}"),
            Kind::Valid | Kind::Replay => assert_ne!(status, "checking_out", "{context}"),
        }
        if let (Some((first, _)), Some((again, body))) = (&flow.answer, &flow.again)
            && *first != 503
        {
            assert_ne!(*again, 200, "a replay went through: {context} {body}");
        }
        if let Some((200, again)) = &flow.again {
            assert_eq!(status, "completed", "{context} {again}");
        }
        let payment = stack.payment(&flow.payment).await;
        assert_eq!(
            payment["status"] == "captured",
            status == "completed",
            "captured exactly when completed: {context} {payment}"
        );
        if status == "completed" {
            completed += 1;
        }
    }
    Ended {
        completed,
        counts,
        latest,
    }
}

#[tokio::test]
async fn mixed_checkouts_under_kills_restarts_and_pauses_end_consistently() {
    let _one_stack = crate::ONE_STACK.lock().await;
    let stack = Stack::start_unlimited(&[("CTR_CHECKOUT_BOUND", "30s")]).await;
    let (total_before, spent_before) = points_total(&stack).await;
    let flows = Mutex::new(Vec::new());
    let until = Instant::now() + RUN;
    let clients = futures::future::join_all((0..CLIENTS).map(|i| client(&stack, i, until, &flows)));
    tokio::join!(clients, chaos(&stack));
    Stack::wait_healthy(&stack.relay).await;
    let ran = Instant::now();
    let flows = flows.into_inner().unwrap();

    // Every checkout has ended within the bound (plus a claim's lease and a recovery pass).
    let limit = BOUND + Duration::from_secs(30);
    let Ended {
        completed, counts, ..
    } = ended_consistently(&stack, &flows, ran, limit).await;
    let (total_after, spent_after) = points_total(&stack).await;
    let unanswered = flows.iter().filter(|f| f.answer.is_none()).count();
    let accepted = flows
        .iter()
        .filter(|f| matches!(f.answer, Some((202, _))))
        .count();
    println!(
        "chaos: {} checkouts in {RUN:?}, {completed} completed, {accepted} answered 202, {unanswered} \
         cut off by a kill; by kind and end: {counts:?}",
        flows.len()
    );
    assert!(completed > 0, "{counts:?}");
    assert_eq!(total_after, total_before, "points conserved");
    assert_eq!(
        spent_after - spent_before,
        POINTS * completed,
        "points spent exactly by the completed orders"
    );
}
