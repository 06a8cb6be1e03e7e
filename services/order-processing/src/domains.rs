//! Talking to the issuing domains: their JWKS over HTTPS, their redemption and cancellation
//! endpoints over mTLS with the relay's client certificate, with timeouts and retries.

use std::time::Duration;

use async_trait::async_trait;
use ctr_service_kit::{PROBLEM_BASE, send_traced};
use ctr_token::{JwkSet, JwksFetcher};
use serde_json::Value;

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

/// Why a call to a domain failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The domain answered 4xx: it refuses, retrying would not help.
    Refused {
        status: u16,
        problem_type: String,
        detail: String,
    },
    /// The domain could not be reached, timed out, or answered 5xx after every attempt.
    Unavailable(String),
}

impl CallError {
    /// The problem type recorded on the order.
    pub fn reason(&self) -> String {
        match self {
            Self::Refused { problem_type, .. } => problem_type.clone(),
            Self::Unavailable(_) => "issuer-unavailable".into(),
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Self::Refused { detail, .. } | Self::Unavailable(detail) => detail.clone(),
        }
    }
}

/// The mTLS client of the relay, with its retry policy.
#[derive(Clone)]
pub struct DomainClient {
    pub client: reqwest::Client,
    pub retries: u32,
}

impl DomainClient {
    /// POSTs `body` to an idempotent endpoint, retrying transport errors and 5xx with backoff.
    pub async fn post_idempotent(&self, url: &str, body: &Value) -> Result<Value, CallError> {
        let mut backoff = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let request = self
                .client
                .post(url)
                .json(body)
                .build()
                .map_err(|e| CallError::Unavailable(e.to_string()))?;
            let response = match send_traced(request, &self.client).await {
                Ok(response) => response,
                Err(error) => {
                    last = format!("{url}: {}", error_chain(&error));
                    tracing::warn!(url, attempt, error = %last, "call failed");
                    continue;
                }
            };
            let status = response.status();
            let body = read_limited(response).await.unwrap_or_default();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(json);
            }
            if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                let problem_type = json["type"].as_str().map_or_else(
                    || format!("http-{}", status.as_u16()),
                    |t| t.strip_prefix(PROBLEM_BASE).unwrap_or(t).to_owned(),
                );
                let detail = json["detail"].as_str().unwrap_or("").to_owned();
                return Err(CallError::Refused {
                    status: status.as_u16(),
                    problem_type,
                    detail,
                });
            }
            last = format!("{url} answered {status}");
            tracing::warn!(url, attempt, %status, "call failed");
        }
        Err(CallError::Unavailable(last))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
