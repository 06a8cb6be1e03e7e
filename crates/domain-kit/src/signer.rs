//! The domain's tokens, signed through the KMS. A domain never verifies its own tokens: a
//! redemption must present the very token issued for the hold (its SHA-256 is kept with it).

use std::sync::Arc;
use std::time::Duration;

use ctr_kms::Kms;
use ctr_service_kit::ApiError;
use ctr_token::{Clock, JwkSet, Settlement, VerifyError};
use serde::Serialize;
use uuid::Uuid;

use crate::issue::{IssuedToken, IssuerConfig, TokenIssuer};

/// The audience of every token: the relay.
pub const AUDIENCE: &str = "order-processing";

/// Signs this domain's tokens.
pub struct Signer {
    issuer: TokenIssuer,
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
        let issuer = TokenIssuer::new(kms, config, clock).map_err(|e| e.to_string())?;
        Ok(Self { issuer })
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
        self.issuer
            .issue_with_jti(jti, sub, jkt, order, settlement, constraints)
            .await
            .map_err(ApiError::internal)
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
