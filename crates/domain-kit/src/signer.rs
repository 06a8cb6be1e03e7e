//! The domain's tokens: signing through the KMS, and verifying its own tokens at redemption
//! against the keys the KMS publishes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ctr_kms::Kms;
use ctr_service_kit::ApiError;
use ctr_token::{
    CachePolicy, Clock, JwkSet, JwksFetcher, KeyError, KeyResolver, KeySetCache, Settlement,
    VerificationKey, VerifiedToken, Verifier, VerifierPolicy, VerifyError,
};
use serde::Serialize;
use uuid::Uuid;

use crate::issue::{IssuedToken, IssuerConfig, TokenIssuer};

/// The audience of every token: the relay.
pub const AUDIENCE: &str = "order-processing";

struct KmsKeys(TokenIssuer);

#[async_trait]
impl JwksFetcher for KmsKeys {
    async fn fetch(&self) -> Result<JwkSet, String> {
        self.0.jwks().await.map_err(|e| e.to_string())
    }
}

/// This domain's own published keys, as a resolver that knows no other issuer.
struct OwnKeys {
    iss: &'static str,
    cache: KeySetCache,
}

#[async_trait]
impl KeyResolver for OwnKeys {
    async fn key(&self, iss: &str, kid: &str) -> Result<Arc<VerificationKey>, KeyError> {
        if iss != self.iss {
            return Err(KeyError::UnknownKid);
        }
        self.cache.key(kid).await
    }
}

/// Signs this domain's tokens and verifies them when they come back.
pub struct Signer {
    issuer: TokenIssuer,
    verifier: Verifier<OwnKeys>,
}

impl Signer {
    pub async fn new(
        domain: &'static str,
        capability: &'static str,
        kms: Arc<dyn Kms>,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let key_id = format!("{domain}-signing");
        if kms.primary_version(&key_id).await.is_err() {
            kms.create_key(&key_id)
                .await
                .map_err(|e| format!("the signing key could not be created: {e}"))?;
        }
        let config = IssuerConfig {
            iss: domain.into(),
            audience: AUDIENCE.into(),
            key_id,
            capabilities: vec![capability.into()],
            ttl,
        };
        let issuer = TokenIssuer::new(kms, config, clock.clone()).map_err(|e| e.to_string())?;
        // Our own keys change only when we rotate them: refetch on an unknown kid at once.
        let policy = CachePolicy {
            max_age: Duration::from_secs(60),
            min_refetch_interval: Duration::ZERO,
        };
        let cache = KeySetCache::new(KmsKeys(issuer.clone()), policy, clock.clone());
        let verifier = Verifier::new(
            VerifierPolicy::new(AUDIENCE).issuer(domain, &[capability]),
            OwnKeys { iss: domain, cache },
            clock,
        );
        Ok(Self { issuer, verifier })
    }

    pub async fn issue<C: Serialize>(
        &self,
        jti: Uuid,
        sub: &str,
        order: &str,
        settlement: Settlement,
        constraints: &C,
    ) -> Result<IssuedToken, ApiError> {
        self.issuer
            .issue_with_jti(jti, sub, order, settlement, constraints)
            .await
            .map_err(ApiError::internal)
    }

    /// Verifies a token of ours that the relay hands back for redemption: every envelope check
    /// but `exp` (the hold's own expiry bounds a redemption; see
    /// [`Verifier::verify_at_redemption`]).
    pub async fn verify_at_redemption(
        &self,
        token: &str,
        order: &str,
    ) -> Result<VerifiedToken, VerifyError> {
        self.verifier.verify_at_redemption(token, order).await
    }

    pub async fn jwks(&self) -> Result<JwkSet, ApiError> {
        self.issuer.jwks().await.map_err(ApiError::internal)
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
