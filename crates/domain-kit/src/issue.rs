//! Issuing: builds compact JWS tokens and signs them through the KMS. It lives here, in the
//! issuing half, and not in `ctr-token`: the relay depends on `ctr-token` alone, so no feature
//! switched on by another package can link signing code or a KMS into it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctr_kms::{KeyVersion, Kms, KmsError};
use serde::Serialize;
use uuid::Uuid;

use ctr_token::{
    ALGORITHM, Audience, Claims, Clock, Confirmation, Constraints, Jwk, JwkSet, JwksError,
    Settlement, TOKEN_TYPE, VerifierPolicy,
};

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The `iss` of every token: the domain's name.
    pub iss: String,
    /// The single `aud`.
    pub audience: String,
    /// The KMS key that signs.
    pub key_id: String,
    /// The capabilities this issuer grants.
    pub capabilities: Vec<String>,
    /// `exp - iat`; at most five minutes.
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the token lifetime {0:?} is not within 1 s and the 5 minute maximum")]
    Lifetime(Duration),
    #[error("the KMS refused to sign: {0}")]
    Kms(#[from] KmsError),
    #[error("the KMS answered a signature that is not DER ECDSA P-384")]
    BadKmsSignature,
    #[error("the claims could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the KMS published an unusable key: {0}")]
    Jwks(#[from] JwksError),
}

/// A freshly signed token and what the issuer tells its caller about it. Its `Debug` shows the
/// token's hash, never the token.
#[derive(Clone)]
pub struct IssuedToken {
    pub token: String,
    pub jti: Uuid,
    pub expires_at: i64,
    pub kid: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_sha256", &ctr_token::sha256_hex(&self.token))
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .field("kid", &self.kid)
            .finish()
    }
}

/// Signs capability tokens for one issuing domain.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    kms: Arc<dyn Kms>,
    config: IssuerConfig,
    clock: Arc<dyn Clock>,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

impl TokenIssuer {
    pub fn new(
        kms: Arc<dyn Kms>,
        config: IssuerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, IssueError> {
        if config.ttl < Duration::from_secs(1) || config.ttl > VerifierPolicy::MAX_LIFETIME {
            return Err(IssueError::Lifetime(config.ttl));
        }
        Ok(Self { kms, config, clock })
    }

    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// Issues a token for `sub` bound to `order_processing_id`, settling `settlement` toward
    /// it and carrying `constraints`.
    pub async fn issue<C: Serialize>(
        &self,
        sub: &str,
        order_processing_id: &str,
        settlement: Settlement,
        constraints: &C,
    ) -> Result<IssuedToken, IssueError> {
        self.issue_with_jti(
            Uuid::now_v7(),
            sub,
            None,
            order_processing_id,
            settlement,
            constraints,
        )
        .await
    }

    /// As [`Self::issue`], with the `jti` chosen by the caller (a domain keys its hold by it)
    /// and, for a customer whose access token is DPoP-bound, `cnf.jkt`: the thumbprint of the
    /// key a checkout must prove.
    pub async fn issue_with_jti<C: Serialize>(
        &self,
        jti: Uuid,
        sub: &str,
        jkt: Option<&str>,
        order_processing_id: &str,
        settlement: Settlement,
        constraints: &C,
    ) -> Result<IssuedToken, IssueError> {
        let now = self.clock.now_secs();
        let ttl = ctr_token::secs(self.config.ttl);
        let claims = Claims {
            iss: self.config.iss.clone(),
            aud: Some(Audience::One(self.config.audience.clone())),
            sub: sub.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl,
            jti,
            order_processing_id: order_processing_id.to_owned(),
            capabilities: self.config.capabilities.clone(),
            settles: settlement.settles,
            priced_on: settlement.priced_on,
            constraints: Constraints::from_value(constraints)?,
            cnf: jkt.map(|jkt| Confirmation {
                jkt: jkt.to_owned(),
            }),
        };
        let (token, kid) = self.sign_claims(&claims).await?;
        Ok(IssuedToken {
            token,
            jti: claims.jti,
            expires_at: claims.exp,
            kid,
        })
    }

    /// Signs the given claims with the primary key version; answers the token and its `kid`.
    pub async fn sign_claims(&self, claims: &Claims) -> Result<(String, String), IssueError> {
        let version = self.kms.primary_version(&self.config.key_id).await?;
        let header = serde_json::to_vec(&Header {
            alg: ALGORITHM,
            typ: TOKEN_TYPE,
            kid: version.as_str(),
        })?;
        let payload = serde_json::to_vec(claims)?;
        let token = self.sign_raw(&version, &header, &payload).await?;
        Ok((token, version.to_string()))
    }

    /// Signs arbitrary header and payload bytes with `version`. For tools and for tests
    /// that must produce hostile tokens with valid signatures; services use [`Self::issue`].
    pub async fn sign_raw(
        &self,
        version: &KeyVersion,
        header: &[u8],
        payload: &[u8],
    ) -> Result<String, IssueError> {
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let der = self
            .kms
            .sign(&self.config.key_id, version, token.as_bytes())
            .await?;
        let signature = der_to_raw(&der)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// The issuer's JWKS: every published key version.
    pub async fn jwks(&self) -> Result<JwkSet, IssueError> {
        let keys = self.kms.public_keys(&self.config.key_id).await?;
        let keys = keys
            .iter()
            .map(|k| Jwk::p384(k.version.as_str(), &k.sec1))
            .collect::<Result<_, _>>()?;
        Ok(JwkSet { keys })
    }

    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.kms
    }
}

/// A DER ECDSA signature as JWS wants it: fixed-width `r || s`, in its one canonical form.
///
/// `(r, s)` and `(r, n - s)` are both valid signatures of the same message; KMSs answer
/// either. The relay accepts only the low `s` (a token has one accepted form, so a twin of a
/// genuine token cannot consume its `jti`), so the high one is turned into it here.
pub fn der_to_raw(der: &[u8]) -> Result<[u8; 96], IssueError> {
    let signature =
        p384::ecdsa::Signature::from_der(der).map_err(|_| IssueError::BadKmsSignature)?;
    let signature = signature.normalize_s().unwrap_or(signature);
    let mut raw = [0u8; 96];
    raw.copy_from_slice(&signature.to_bytes());
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::signature::{Signer as _, Verifier as _};
    use p384::ecdsa::{Signature, SigningKey};

    #[test]
    fn a_kms_signature_with_either_s_becomes_the_one_canonical_form_that_still_verifies() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        for message in (0..32).map(|i| format!("header.payload{i}")) {
            let signed: Signature = key.sign(message.as_bytes());
            let (r, s) = signed.split_scalars();
            let low = signed.normalize_s().unwrap_or(signed);
            let high = Signature::from_scalars(r, -s).unwrap();
            let high = if high.normalize_s().is_some() {
                high
            } else {
                signed
            };
            for answered in [low, high] {
                let raw = der_to_raw(answered.to_der().as_bytes()).unwrap();
                let canonical = Signature::from_slice(&raw).unwrap();
                assert_eq!(canonical, low, "one form whatever the KMS answered");
                assert!(canonical.normalize_s().is_none(), "low s");
                key.verifying_key()
                    .verify(message.as_bytes(), &canonical)
                    .unwrap();
            }
        }
    }
}
