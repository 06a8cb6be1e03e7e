//! The domain's tokens, signed through the KMS. A domain never verifies its own tokens: a
//! redemption must present the very token issued for the hold (its SHA-256 is kept with it).

use std::sync::Arc;
use std::time::Duration;

use ctr_kms::Kms;
use ctr_service_kit::ApiError;
use ctr_token::{Clock, JwkSet, Settlement, VerifyError};
use serde::Serialize;
use uuid::Uuid;

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Semaphore;

use crate::issue::{IssueError, IssuedToken, IssuerConfig, TokenIssuer};

/// Makes sure the KMS holds `key_id` (creating it when missing) and signs with it.
async fn probe(kms: &dyn Kms, key_id: &str) -> Result<(), ctr_kms::KmsError> {
    let version = match kms.primary_version(key_id).await {
        Ok(version) => version,
        Err(ctr_kms::KmsError::KeyNotFound(_)) => kms.create_key(key_id).await?,
        Err(error) => return Err(error),
    };
    kms.sign(key_id, &version, b"readiness").await.map(|_| ())
}

/// 503 `kms-unavailable`: nothing was signed, and the caller may retry.
fn kms_unavailable(detail: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "kms-unavailable",
        "KMS unavailable",
        detail,
    )
    .retry_after(1)
}

/// The audience of every token: the relay.
pub const AUDIENCE: &str = "order-processing";

/// How many signatures may wait on the KMS at once: a slow KMS makes confirmations answer
/// 503 instead of piling up requests.
const KMS_IN_FLIGHT: usize = 64;

/// The labels of a confirmation's signature: which backend, and whether it signed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignatureLabels {
    backend: &'static str,
    outcome: &'static str,
}

/// How long the KMS took to sign each confirmation's token (`ctr_kms_signature_duration_seconds`).
pub type SignatureLatency = Family<SignatureLabels, Histogram, fn() -> Histogram>;

/// Signs this domain's tokens.
pub struct Signer {
    issuer: TokenIssuer,
    /// Whether the KMS holds the signing key and signed with it (readiness).
    ready: Arc<AtomicBool>,
    in_flight: Arc<Semaphore>,
    backend: &'static str,
    latency: SignatureLatency,
}

impl Signer {
    /// The signer for `domain`'s key in `kms`. The key is made (or found) and a test
    /// signature made now; if the KMS cannot, again in the background until it answers, and
    /// meanwhile the `kms` readiness check fails and confirmations answer 503
    /// `kms-unavailable`.
    pub async fn new(
        domain: &'static str,
        capability: &'static str,
        kms: Arc<dyn Kms>,
        backend: &'static str,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let key_id = format!("{domain}-signing");
        let ready = Arc::new(AtomicBool::new(false));
        match probe(kms.as_ref(), &key_id).await {
            Ok(()) => ready.store(true, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(key_id = %key_id, %error, "the KMS cannot sign yet; retrying in the background");
                let (kms, flag, key) = (kms.clone(), Arc::downgrade(&ready), key_id.clone());
                tokio::spawn(async move {
                    let mut backoff = Duration::from_millis(200);
                    loop {
                        tokio::time::sleep(backoff).await;
                        let outcome = probe(kms.as_ref(), &key).await;
                        let Some(flag) = flag.upgrade() else {
                            return;
                        };
                        match outcome {
                            Ok(()) => {
                                flag.store(true, Ordering::Relaxed);
                                tracing::info!(key_id = %key, "the KMS signs with the domain's key");
                                return;
                            }
                            Err(error) => {
                                tracing::warn!(key_id = %key, %error, retry_in = ?backoff, "the KMS cannot sign yet");
                            }
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                });
            }
        }
        let config = IssuerConfig {
            iss: domain.into(),
            audience: AUDIENCE.into(),
            key_id,
            capabilities: vec![capability.into()],
            ttl,
        };
        let issuer = TokenIssuer::new(kms, config, clock).map_err(|e| e.to_string())?;
        Ok(Self {
            issuer,
            ready,
            in_flight: Arc::new(Semaphore::new(KMS_IN_FLIGHT)),
            backend,
            latency: Family::new_with_constructor(ctr_service_kit::latency_histogram),
        })
    }

    /// The signatures' latency by backend and outcome, for the service's metrics.
    pub fn latency(&self) -> &SignatureLatency {
        &self.latency
    }

    /// Whether the KMS has signed with the domain's key since start.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub async fn issue<C: Serialize>(
        &self,
        jti: Uuid,
        sub: &str,
        jkt: Option<&str>,
        order: &str,
        settlement: Settlement,
        constraints: &C,
    ) -> Result<IssuedToken, ApiError> {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(kms_unavailable(
                "too many signatures are waiting on the KMS",
            ));
        };
        let started = std::time::Instant::now();
        let issued = self
            .issuer
            .issue_with_jti(jti, sub, jkt, order, settlement, constraints)
            .await;
        let outcome = if issued.is_ok() { "signed" } else { "failed" };
        self.latency
            .get_or_create(&SignatureLabels {
                backend: self.backend,
                outcome,
            })
            .observe(started.elapsed().as_secs_f64());
        issued.map_err(|error| match error {
            IssueError::Kms(error) => {
                tracing::warn!(key_id = self.key_id(), %error, "the KMS did not sign");
                kms_unavailable("the key management service did not sign; retry shortly")
            }
            other => ApiError::internal(other),
        })
    }

    pub async fn jwks(&self) -> Result<JwkSet, ApiError> {
        self.issuer.jwks().await.map_err(|error| match error {
            IssueError::Kms(error) => {
                tracing::warn!(key_id = self.key_id(), %error, "the KMS did not answer the public keys");
                kms_unavailable("the key management service did not answer; retry shortly")
            }
            other => ApiError::internal(other),
        })
    }

    pub fn kms(&self) -> &Arc<dyn Kms> {
        self.issuer.kms()
    }

    pub fn key_id(&self) -> &str {
        &self.issuer.config().key_id
    }
}

/// A refused token as problem+json, with the token core's problem type.
pub fn token_problem(error: &VerifyError) -> ApiError {
    let status = axum::http::StatusCode::from_u16(error.http_status())
        .unwrap_or(axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    ApiError::new(
        status,
        error.problem_type(),
        "Token refused",
        error.to_string(),
    )
}
