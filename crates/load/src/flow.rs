//! One virtual customer's flow: open an order, three confirmations, checkout; timed per step.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::{Credential, Targets};

pub const STEPS: [&str; 6] = ["order", "coupon", "points", "payment", "checkout", "flow"];

/// What one flow recorded: latency per step, or the step and problem type that failed it.
pub struct Outcome {
    pub latencies: Vec<(&'static str, Duration)>,
    pub error: Option<String>,
}

/// A virtual customer's client and credentials.
#[derive(Clone, Copy)]
struct Caller<'a> {
    client: &'a reqwest::Client,
    credential: &'a Credential,
    /// Whether each POST carries a fresh `Idempotency-Key`.
    keys: crate::Keys,
}

async fn post(caller: Caller<'_>, url: String, body: Value) -> Result<Value, String> {
    let token = &caller.credential.token;
    let request = match &caller.credential.key {
        None => caller.client.post(url).bearer_auth(token),
        Some(key) => {
            let proof = key
                .proof("POST", &url, Some(token))
                .map_err(|e| format!("proof: {e}"))?;
            caller
                .client
                .post(url)
                .header(reqwest::header::AUTHORIZATION, format!("DPoP {token}"))
                .header("DPoP", proof)
        }
    };
    let request = match caller.keys.fresh() {
        Some(key) => request.header("Idempotency-Key", key),
        None => request,
    };
    let response = request
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        Err(body["type"].as_str().map_or_else(
            || format!("http-{}", status.as_u16()),
            |t| t.rsplit('/').next().unwrap_or(t).to_owned(),
        ))
    }
}

async fn timed(
    latencies: &mut Vec<(&'static str, Duration)>,
    client: Caller<'_>,
    name: &'static str,
    url: String,
    body: Value,
) -> Result<Value, String> {
    let started = Instant::now();
    let answer = post(client, url, body)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    latencies.push((name, started.elapsed()));
    Ok(answer)
}

pub async fn run(client: &reqwest::Client, targets: &Targets, customer: usize) -> Outcome {
    let mut latencies = Vec::with_capacity(STEPS.len());
    let started = Instant::now();
    let caller = Caller {
        client,
        credential: &targets.tokens[customer % targets.tokens.len().max(1)],
        keys: targets.keys,
    };
    let outcome = steps(caller, targets, customer, &mut latencies).await;
    if outcome.is_ok() {
        latencies.push(("flow", started.elapsed()));
    }
    Outcome {
        latencies,
        error: outcome.err(),
    }
}

async fn steps(
    client: Caller<'_>,
    t: &Targets,
    customer: usize,
    l: &mut Vec<(&'static str, Duration)>,
) -> Result<(), String> {
    let total = json!({"amount": 5000, "currency": "EUR"});
    let order = timed(
        l,
        client,
        "order",
        format!("{}/service/v1/orders", t.relay),
        json!({"total": total}),
    )
    .await?;
    let order = order["order_processing_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let base = json!({"order_processing_id": order});
    let with = |extra: Value| {
        let mut body = base.clone();
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        body
    };
    let coupon = timed(
        l,
        client,
        "coupon",
        format!("{}/service/v1/coupons/confirmations", t.coupons),
        with(json!({"coupon_code": "SPRING10", "order_total": total})),
    )
    .await?;
    let points = timed(
        l,
        client,
        "points",
        format!("{}/service/v1/points/confirmations", t.points),
        with(json!({"points": 1, "currency": "EUR"})),
    )
    .await?;
    let payment_body = with(
        json!({"payment_method_id": format!("pm_load_{customer}"), "amount": {"amount": 4499, "currency": "EUR"}}),
    );
    let payment = timed(
        l,
        client,
        "payment",
        format!("{}/service/v1/payments/confirmations", t.payments),
        payment_body,
    )
    .await?;
    let tokens = [&coupon, &points, &payment].map(|c| c["token"].clone());
    timed(
        l,
        client,
        "checkout",
        format!("{}/service/v1/orders/{order}/checkout", t.relay),
        json!({ "tokens": tokens }),
    )
    .await?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct StepStats {
    pub count: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn stats(mut samples: Vec<Duration>, elapsed: Duration) -> StepStats {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e3
    };
    StepStats {
        count: samples.len(),
        per_second: samples.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

pub fn by_step(outcomes: &[Outcome], elapsed: Duration) -> BTreeMap<&'static str, StepStats> {
    STEPS
        .iter()
        .map(|step| {
            let samples = outcomes
                .iter()
                .flat_map(|o| o.latencies.iter())
                .filter(|(s, _)| s == step)
                .map(|(_, d)| *d)
                .collect();
            (*step, stats(samples, elapsed))
        })
        .collect()
}
