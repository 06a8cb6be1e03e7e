//! `ctr demo`: the happy path and each failure scenario against a running stack, each step
//! checked against what the system must answer.

use serde::Serialize;
use serde_json::{Value, json};

use ctr_access::dpop::ProofKey;
use jsonwebtoken::Algorithm;

use crate::api::{Answer, Domain, Stack, Unreachable};

/// Another demo customer, who must not see Alice's orders.
const OTHER_CUSTOMER: &str = "c_bob";
/// A 49.99 EUR order: SPRING10 (10 %, 5.00) + 10 points (0.10) + 44.89 on a card.
const TOTAL: u64 = 4999;
const POINTS: u64 = 10;
/// What either coupon of the demo takes off 49.99: SPRING10 (10 %, rounded) or FIVEOFF.
const DISCOUNT: u64 = 500;
const CARD: u64 = 4489;

#[derive(Debug, Serialize)]
pub struct Step {
    pub step: String,
    pub expected: String,
    pub observed: String,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Scenario {
    pub scenario: &'static str,
    pub description: &'static str,
    pub ok: bool,
    pub steps: Vec<Step>,
}

/// Records each step and prints a line of progress for it (on stderr when stdout is JSON).
struct Recorder {
    steps: Vec<Step>,
    scenario: &'static str,
    quiet_stdout: bool,
}

impl Recorder {
    fn check(&mut self, step: &str, expected: &str, observed: String, ok: bool) -> bool {
        let line = format!(
            "{} {:<11} {step}: {observed}{}",
            if ok { "ok  " } else { "FAIL" },
            self.scenario,
            if ok {
                String::new()
            } else {
                format!(" (expected {expected})")
            }
        );
        if self.quiet_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        self.steps.push(Step {
            step: step.to_owned(),
            expected: expected.to_owned(),
            observed,
            ok,
        });
        ok
    }

    /// A step that must answer `status` (and, for a problem, the problem type `problem`).
    fn answer(&mut self, step: &str, answer: &Answer, status: u16, problem: Option<&str>) -> bool {
        let expected = match problem {
            Some(problem) => format!("{status} {problem}"),
            None => status.to_string(),
        };
        let observed = if answer.problem().is_empty() {
            answer.status.to_string()
        } else {
            format!("{} {}", answer.status, answer.problem())
        };
        let ok = answer.status == status && problem.is_none_or(|p| answer.problem() == p);
        self.check(step, &expected, observed, ok)
    }
}

type Outcome = Result<(), Unreachable>;

/// What one scenario leaves to the next, so that a run leaves no order open and at most one
/// hold behind (a customer may have only so many of each): the replay's second order is the
/// one the forged token is refused in, and the settlement scenario finishes it with the
/// genuine token the forgery was made from.
#[derive(Default)]
struct Carried {
    happy: Option<Happy>,
    /// The declined scenario's failed order.
    declined: Option<String>,
    open_order: Option<String>,
    genuine_payment: Option<String>,
}

/// Runs every scenario in order; a deviation does not stop the others.
pub async fn run(stack: &Stack, quiet_stdout: bool) -> Result<Vec<Scenario>, Unreachable> {
    let mut scenarios = Vec::new();
    let mut carried = Carried::default();
    for (scenario, description) in [
        (
            "checkout",
            "a 49.99 EUR order paid by coupon SPRING10, 10 points and a card completes",
        ),
        (
            "replay",
            "the same tokens again are refused, in the same order and in another",
        ),
        (
            "tampered",
            "a token whose claims were changed is refused and nothing is redeemed",
        ),
        (
            "declined",
            "a card declined at capture fails the order and the coupon and points are given back",
        ),
        (
            "settlement",
            "tokens that do not add up to the total are refused and the order stays open",
        ),
        (
            "customers",
            "without an access token nothing is answered; another customer cannot see the order",
        ),
        (
            "dpop",
            "Alice's tokens checked out with another key's proof are refused and nothing is redeemed",
        ),
        (
            "events",
            "the receiver got order.completed and order.failed, signed (Standard Webhooks)",
        ),
    ] {
        if scenario == "events" && stack.endpoints.events_url.is_none() {
            continue;
        }
        let mut r = Recorder {
            steps: Vec::new(),
            scenario,
            quiet_stdout,
        };
        match scenario {
            "checkout" => carried.happy = checkout(stack, &mut r).await?,
            "replay" => replay(stack, &mut r, &mut carried).await?,
            "tampered" => tampered(stack, &mut r, &mut carried).await?,
            "declined" => carried.declined = declined(stack, &mut r).await?,
            "settlement" => settlement(stack, &mut r, &mut carried).await?,
            "customers" => customers(stack, &mut r, &carried).await?,
            "dpop" => dpop(stack, &mut r).await?,
            _ => events(stack, &mut r, &carried).await?,
        }
        let ok = !r.steps.is_empty() && r.steps.iter().all(|s| s.ok);
        scenarios.push(Scenario {
            scenario,
            description,
            ok,
            steps: r.steps,
        });
    }
    Ok(scenarios)
}

async fn open_order(
    stack: &Stack,
    r: &mut Recorder,
    total: u64,
) -> Result<Option<String>, Unreachable> {
    let answer = stack.create_order(total, "EUR").await?;
    let ok = r.answer("open an order", &answer, 201, None);
    Ok(ok.then(|| answer.field("order_processing_id")))
}

async fn confirm(
    stack: &Stack,
    r: &mut Recorder,
    domain: Domain,
    order: &str,
    details: Value,
) -> Result<Option<String>, Unreachable> {
    let answer = stack.confirm(domain, order, details).await?;
    let ok = r.answer(
        &format!("confirm with {}", domain.name()),
        &answer,
        201,
        None,
    );
    Ok(ok.then(|| answer.field("token")))
}

/// Coupon, points and card tokens for `order`, paying `TOTAL` with `method`.
async fn three_tokens(
    stack: &Stack,
    r: &mut Recorder,
    order: &str,
    coupon: &str,
    method: &str,
) -> Result<Option<Vec<String>>, Unreachable> {
    let eur = |amount: u64| json!({"amount": amount, "currency": "EUR"});
    let requests = [
        (
            Domain::Coupons,
            json!({"coupon_code": coupon, "order_total": eur(TOTAL)}),
        ),
        (Domain::Points, json!({"points": POINTS, "currency": "EUR"})),
        (
            Domain::Payments,
            json!({"payment_method_id": method, "amount": eur(TOTAL - DISCOUNT - POINTS)}),
        ),
    ];
    let mut tokens = Vec::new();
    for (domain, details) in requests {
        match confirm(stack, r, domain, order, details).await? {
            Some(token) => tokens.push(token),
            None => return Ok(None),
        }
    }
    Ok(Some(tokens))
}

/// A step checking that the customer's available points are still `before`.
async fn points_unchanged(
    stack: &Stack,
    r: &mut Recorder,
    step: &str,
    before: Option<u64>,
) -> Outcome {
    let after = available_points(stack).await?;
    let text = |points: Option<u64>| {
        points.map_or_else(|| "unknown".into(), |p| format!("{p} points available"))
    };
    r.check(
        step,
        &text(before),
        text(after),
        before.is_some() && before == after,
    );
    Ok(())
}

/// A step checking that a refused checkout left its order open.
async fn still_open(stack: &Stack, r: &mut Recorder, order: &str) -> Outcome {
    let status = stack.order(order).await?.field("status");
    let open = status == "open";
    r.check("the order is still open", "open", status, open);
    Ok(())
}

/// A payment confirmation's details: `amount` minor units in EUR on Alice's card.
fn card(amount: u64) -> Value {
    json!({"payment_method_id": "pm_alice_visa", "amount": {"amount": amount, "currency": "EUR"}})
}

/// The order a previous scenario left open, or a new one.
async fn carried_or_new(
    stack: &Stack,
    r: &mut Recorder,
    carried: Option<String>,
) -> Result<Option<String>, Unreachable> {
    match carried {
        Some(order) => Ok(Some(order)),
        None => open_order(stack, r, TOTAL).await,
    }
}

async fn available_points(stack: &Stack) -> Result<Option<u64>, Unreachable> {
    Ok(stack.points_balance().await?.body["available"].as_u64())
}

struct Happy {
    order: String,
    tokens: Vec<String>,
}

async fn checkout(stack: &Stack, r: &mut Recorder) -> Result<Option<Happy>, Unreachable> {
    let Some(order) = open_order(stack, r, TOTAL).await? else {
        return Ok(None);
    };
    let Some(tokens) = three_tokens(stack, r, &order, "SPRING10", "pm_alice_visa").await? else {
        return Ok(None);
    };
    let answer = stack.checkout(&order, &tokens).await?;
    if !r.answer("check out", &answer, 200, None) {
        return Ok(None);
    }
    let settled = answer.body["settled"]["amount"].as_u64();
    r.check(
        "the order is completed and settled",
        &format!("completed, {TOTAL} EUR"),
        format!("{}, {} EUR", answer.field("status"), settled.unwrap_or(0)),
        answer.field("status") == "completed" && settled == Some(CARD + POINTS + DISCOUNT),
    );
    Ok(Some(Happy { order, tokens }))
}

async fn replay(stack: &Stack, r: &mut Recorder, carried: &mut Carried) -> Outcome {
    let Some(happy) = &carried.happy else {
        r.check(
            "replay the completed checkout's tokens",
            "a completed checkout first",
            "the checkout scenario did not complete".into(),
            false,
        );
        return Ok(());
    };
    let before = available_points(stack).await?;
    let again = stack.checkout(&happy.order, &happy.tokens).await?;
    r.answer("the same order again", &again, 409, Some("order-not-open"));
    if let Some(other) = open_order(stack, r, TOTAL).await? {
        let answer = stack.checkout(&other, &happy.tokens).await?;
        r.answer("another order", &answer, 422, Some("order-mismatch"));
        carried.open_order = Some(other);
    }
    points_unchanged(stack, r, "no points spent twice", before).await?;
    Ok(())
}

async fn tampered(stack: &Stack, r: &mut Recorder, carried: &mut Carried) -> Outcome {
    let Some(order) = carried_or_new(stack, r, carried.open_order.clone()).await? else {
        return Ok(());
    };
    carried.open_order = Some(order.clone());
    let Some(token) = confirm(stack, r, Domain::Payments, &order, card(TOTAL)).await? else {
        return Ok(());
    };
    carried.genuine_payment = Some(token.clone());
    // Pay 0.01 for a 49.99 order with the signature of a 49.99 token.
    let Ok(forged) =
        crate::token::tamper(&token, "settles", json!({"amount": 1, "currency": "EUR"}))
    else {
        r.check("forge", "a token", "the token did not decode".into(), false);
        return Ok(());
    };
    let answer = stack.checkout(&order, &[forged]).await?;
    r.answer(
        "check out with the forged token",
        &answer,
        422,
        Some("token-signature-invalid"),
    );
    still_open(stack, r, &order).await?;
    Ok(())
}

/// Answers the failed order.
async fn declined(stack: &Stack, r: &mut Recorder) -> Result<Option<String>, Unreachable> {
    let before = available_points(stack).await?;
    let Some(order) = open_order(stack, r, TOTAL).await? else {
        return Ok(None);
    };
    let Some(tokens) = three_tokens(stack, r, &order, "FIVEOFF", "pm_alice_declines").await? else {
        return Ok(None);
    };
    let answer = stack.checkout(&order, &tokens).await?;
    let ok = r.answer("check out", &answer, 409, Some("redemption-refused"));
    if ok {
        r.check(
            "the cause is the card",
            "payment-declined",
            answer.field("cause"),
            answer.field("cause") == "payment-declined",
        );
    }
    let shown = stack.order(&order).await?;
    let outcomes: Vec<String> = shown.body["tokens"]
        .as_array()
        .map(|tokens| {
            tokens
                .iter()
                .map(|t| t["outcome"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default();
    r.check(
        "the order failed and the coupon and points were compensated",
        "failed: compensated, compensated, failed",
        format!("{}: {}", shown.field("status"), outcomes.join(", ")),
        shown.field("status") == "failed" && outcomes == ["compensated", "compensated", "failed"],
    );
    points_unchanged(stack, r, "the points are back", before).await?;
    Ok(Some(order))
}

/// The completed and the failed order's events, as the receiver verified them (deliveries
/// run apart from checkouts: they may take a moment).
async fn events(stack: &Stack, r: &mut Recorder, carried: &Carried) -> Outcome {
    let Some(url) = &stack.endpoints.events_url else {
        return Ok(());
    };
    let expected = [
        (
            carried.happy.as_ref().map(|h| h.order.clone()),
            "order.completed",
        ),
        (carried.declined.clone(), "order.failed"),
    ];
    for (order, kind) in expected {
        let step = format!("{kind} reached the receiver");
        let Some(order) = order else {
            r.check(&step, kind, "its scenario made no order".into(), false);
            continue;
        };
        let mut seen = Vec::new();
        for _ in 0..40 {
            let answer = stack.get_with(format!("{url}?order={order}"), None).await?;
            seen = answer
                .body
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .map(|e| {
                            format!(
                                "{} {}",
                                e["webhook_id"].as_str().unwrap_or(""),
                                e["event"]["type"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if seen.iter().any(|e| e.ends_with(kind)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let ok = seen.iter().any(|e| e.ends_with(kind));
        let observed = if seen.is_empty() {
            format!("nothing for {order} after 10s")
        } else {
            format!("{order}: {}", seen.join(", "))
        };
        r.check(&step, kind, observed, ok);
    }
    Ok(())
}

async fn settlement(stack: &Stack, r: &mut Recorder, carried: &mut Carried) -> Outcome {
    let Some(order) = carried_or_new(stack, r, carried.open_order.take()).await? else {
        return Ok(());
    };
    let Some(token) = confirm(stack, r, Domain::Payments, &order, card(1)).await? else {
        return Ok(());
    };
    let answer = stack.checkout(&order, &[token]).await?;
    r.answer(
        "check out 0.01 toward 49.99",
        &answer,
        422,
        Some("settlement-sum-mismatch"),
    );
    still_open(stack, r, &order).await?;
    // The genuine 49.99 token of the tampered scenario (same order), or a new one.
    let token = match carried.genuine_payment.take() {
        Some(token) => token,
        None => match confirm(stack, r, Domain::Payments, &order, card(TOTAL)).await? {
            Some(token) => token,
            None => return Ok(()),
        },
    };
    let answer = stack.checkout(&order, &[token]).await?;
    r.answer("check out 49.99 toward 49.99", &answer, 200, None);
    Ok(())
}

/// The summary table printed after a human-readable run.
pub fn summary(scenarios: &[Scenario]) -> String {
    let mut out = format!("\n{:<11} {:<8} {}\n", "scenario", "result", "what it shows");
    for s in scenarios {
        out.push_str(&format!(
            "{:<11} {:<8} {}\n",
            s.scenario,
            if s.ok { "ok" } else { "DEVIATED" },
            s.description
        ));
    }
    let passed = scenarios.iter().filter(|s| s.ok).count();
    out.push_str(&format!(
        "\n{passed} of {} scenarios behaved as expected\n",
        scenarios.len()
    ));
    out
}

async fn customers(stack: &Stack, r: &mut Recorder, carried: &Carried) -> Outcome {
    let Some(happy) = &carried.happy else {
        r.check(
            "read the completed order as others",
            "a completed checkout first",
            "the checkout scenario did not complete".into(),
            false,
        );
        return Ok(());
    };
    let url = format!(
        "{}/service/v1/orders/{}",
        stack.endpoints.relay_url, happy.order
    );
    let answer = stack.get_with(url.clone(), None).await?;
    r.answer(
        "read it with no access token",
        &answer,
        401,
        Some("access-token-missing"),
    );
    let other = stack.login(OTHER_CUSTOMER).await?;
    let answer = stack.get_with(url, Some(&other)).await?;
    r.answer(
        "read it as another customer",
        &answer,
        404,
        Some("order-not-found"),
    );
    Ok(())
}

/// Sender-constrained tokens: Alice confirms with her own key (whatever `--dpop` says), and
/// her access token and confirmation tokens are then presented twice without it: by a thief
/// who has them all but signs the proof with his own key, and by a second login of Alice's
/// whose token is bound to another key. Both are refused before anything is redeemed; then
/// Alice checks out with her key.
async fn dpop(stack: &Stack, r: &mut Recorder) -> Outcome {
    let new_key = || ProofKey::generate(Algorithm::ES256).map_err(|e| Unreachable(e.to_string()));
    let customer = stack.customer();
    let alice = stack.login_with(&customer, Some(new_key()?)).await?;
    let alice_stack = stack.acting_as(alice.clone());
    let before = available_points(&alice_stack).await?;
    let Some(order) = open_order(&alice_stack, r, TOTAL).await? else {
        return Ok(());
    };
    let Some(tokens) = three_tokens(&alice_stack, r, &order, "SPRING10", "pm_alice_visa").await?
    else {
        return Ok(());
    };
    let bound = tokens
        .iter()
        .filter(|t| {
            crate::token::bound_key(t).as_deref() == alice.key.as_ref().map(|k| k.thumbprint())
        })
        .count();
    r.check(
        "every confirmation token is bound to Alice's key (cnf.jkt)",
        "3 of 3",
        format!("{bound} of 3"),
        bound == 3,
    );
    let url = format!(
        "{}/service/v1/orders/{order}/checkout",
        stack.endpoints.relay_url
    );
    let body = json!({ "tokens": tokens });
    let stolen = stack
        .post_proved_by(url.clone(), &body, &alice, new_key()?)
        .await?;
    r.answer(
        "check out with Alice's stolen access and confirmation tokens and another key's proof",
        &stolen,
        401,
        Some("dpop-key-mismatch"),
    );
    let second_login = stack.login_with(&customer, Some(new_key()?)).await?;
    let elsewhere = stack
        .acting_as(second_login)
        .checkout(&order, &tokens)
        .await?;
    r.answer(
        "check out Alice's tokens from a login bound to another key",
        &elsewhere,
        401,
        Some("capability-key-mismatch"),
    );
    still_open(&alice_stack, r, &order).await?;
    points_unchanged(
        &alice_stack,
        r,
        "no points redeemed",
        before.map(|p| p - POINTS),
    )
    .await?;
    let answer = alice_stack.checkout(&order, &tokens).await?;
    r.answer("Alice checks out with her key", &answer, 200, None);
    Ok(())
}
