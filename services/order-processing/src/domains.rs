//! Talking to the issuing domains: their JWKS over HTTPS, their redemption and cancellation
//! endpoints over mTLS with the relay's client certificate, with timeouts and retries.

use std::time::Duration;

use async_trait::async_trait;
use ctr_relay_api::{CallFailure, HoldReply};
use ctr_service_kit::{PROBLEM_BASE, send_traced};
use ctr_token::{JwkSet, JwksFetcher};
use serde::{Deserialize, Serialize};

/// The largest JWKS or domain answer read.
const MAX_BODY: usize = 64 * 1024;

/// Fetches one issuer's JWKS.
pub struct HttpJwks {
    pub client: reqwest::Client,
    pub url: String,
}

#[async_trait]
impl JwksFetcher for HttpJwks {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let request = self
            .client
            .get(&self.url)
            .build()
            .map_err(|e| e.to_string())?;
        let response = send_traced(request, &self.client)
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        if !response.status().is_success() {
            return Err(format!("{} answered {}", self.url, response.status()));
        }
        let body = read_limited(response).await?;
        serde_json::from_slice(&body).map_err(|e| format!("{}: not a JWKS: {e}", self.url))
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err("the answer is too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The mTLS client of the relay, with its retry policy.
#[derive(Clone)]
pub struct DomainClient {
    pub client: reqwest::Client,
    pub retries: u32,
}

impl DomainClient {
    /// POSTs `body` to an idempotent endpoint, retrying transport errors and 5xx with backoff.
    /// The cause of an unavailable domain (its URL, the error chain) is logged, not returned.
    pub async fn post_idempotent<B: Serialize>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<HoldReply, CallFailure> {
        let mut backoff = Duration::from_millis(100);
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(jittered(backoff)).await;
                backoff *= 2;
            }
            let request = self.client.post(url).json(body).build().map_err(|e| {
                tracing::error!(url, error = %e, "the request could not be built");
                CallFailure::Unavailable
            })?;
            let response = match send_traced(request, &self.client).await {
                Ok(response) => response,
                Err(error) => {
                    tracing::warn!(url, attempt, error = %error_chain(&error), "call failed");
                    continue;
                }
            };
            let status = response.status();
            let body = read_limited(response).await.unwrap_or_default();
            if status.is_success() {
                match serde_json::from_slice::<HoldReply>(&body) {
                    Ok(reply) => return Ok(reply),
                    Err(error) => {
                        tracing::warn!(url, attempt, %error, "the domain's answer breaks the contract");
                        continue;
                    }
                }
            }
            if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                let problem = serde_json::from_slice::<Problem>(&body).unwrap_or_default();
                let problem_type = problem.type_.map_or_else(
                    || format!("http-{}", status.as_u16()),
                    |t| t.strip_prefix(PROBLEM_BASE).unwrap_or(&t).to_owned(),
                );
                return Err(CallFailure::Refused {
                    problem_type,
                    detail: problem.detail.unwrap_or_default(),
                });
            }
            tracing::warn!(url, attempt, %status, "call failed");
        }
        Err(CallFailure::Unavailable)
    }
}

/// The members of a domain's problem+json answer the relay keeps.
#[derive(Default, Deserialize)]
struct Problem {
    #[serde(rename = "type")]
    type_: Option<String>,
    detail: Option<String>,
}

/// `backoff` scaled by a random factor in [0.5, 1.5), so that relays retrying after one
/// outage do not call in step.
fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(0.5 + random_unit())
}

/// The wait before retry `attempts + 1` of work retried later (a compensation, a webhook
/// delivery): `first` doubled `attempts` times, at most `cap`, the upper half of it drawn at
/// random so that what failed together is not retried together.
pub(crate) fn doubling_backoff(first: Duration, attempts: i64, cap: Duration) -> Duration {
    let doublings = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    first
        .saturating_mul(1 << doublings)
        .min(cap)
        .mul_f64(0.5 + random_unit() / 2.0)
}

/// A random number in [0, 1], for jitter.
pub(crate) fn random_unit() -> f64 {
    f64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng)) / f64::from(u32::MAX)
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
