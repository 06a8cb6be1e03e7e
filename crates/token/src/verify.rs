use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::Algorithm;
use sha2::{Digest, Sha256};

use crate::compact::SIGNATURE_BYTES;
use crate::{Audience, Claims, Clock, KeyError, UnverifiedToken, VerificationKey, VerifyError};

/// Finds an issuer's verification key by `kid`.
#[async_trait]
pub trait KeyResolver: Send + Sync {
    async fn key(&self, iss: &str, kid: &str) -> Result<Arc<VerificationKey>, KeyError>;
}

/// What the verifier accepts.
#[derive(Debug, Clone)]
pub struct VerifierPolicy {
    /// The single audience every token must name.
    pub audience: String,
    /// Known issuers and the capabilities each may grant.
    pub issuers: HashMap<String, HashSet<String>>,
    /// Tolerated clock skew for `nbf`, `iat` and `exp`.
    pub leeway: Duration,
    /// The longest `exp - iat` accepted.
    pub max_lifetime: Duration,
}

impl VerifierPolicy {
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
    pub const MAX_LIFETIME: Duration = Duration::from_secs(300);

    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            issuers: HashMap::new(),
            leeway: Self::DEFAULT_LEEWAY,
            max_lifetime: Self::MAX_LIFETIME,
        }
    }

    pub fn issuer(mut self, iss: impl Into<String>, capabilities: &[&str]) -> Self {
        self.issuers.insert(
            iss.into(),
            capabilities.iter().map(|c| (*c).to_owned()).collect(),
        );
        self
    }
}

/// A token that passed every envelope check. The only way to get one is [`Verifier::verify`].
/// Its `Debug` shows the token's hash, never the token.
#[derive(Clone)]
pub struct VerifiedToken {
    token: String,
    claims: Claims,
    kid: String,
    token_sha256: String,
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("iss", &self.claims.iss)
            .field("jti", &self.claims.jti)
            .field("kid", &self.kid)
            .field("token_sha256", &self.token_sha256)
            .finish_non_exhaustive()
    }
}

impl VerifiedToken {
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The compact token, to hand back to its issuer. Never log it; log [`Self::token_sha256`].
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Hex SHA-256 of the token: what logs may carry instead of the token.
    pub fn token_sha256(&self) -> &str {
        &self.token_sha256
    }
}

/// Checks token envelopes, in the order of DESIGN.md; each failure is its own error.
#[derive(Debug)]
pub struct Verifier<R> {
    policy: VerifierPolicy,
    keys: R,
    clock: Arc<dyn Clock>,
}

impl<R: KeyResolver> Verifier<R> {
    pub fn new(policy: VerifierPolicy, keys: R, clock: Arc<dyn Clock>) -> Self {
        Self {
            policy,
            keys,
            clock,
        }
    }

    pub fn policy(&self) -> &VerifierPolicy {
        &self.policy
    }

    pub fn keys(&self) -> &R {
        &self.keys
    }

    /// Verifies `token` for the order `expected_order`. Replay is the caller's last step
    /// (`(iss, jti)` consumed in the relay's store): a domain redeems idempotently, the relay
    /// refuses.
    pub async fn verify(
        &self,
        token: &str,
        expected_order: &str,
    ) -> Result<VerifiedToken, VerifyError> {
        let unverified = UnverifiedToken::parse(token)?;
        let claims = &unverified.claims;

        let allowed = self
            .policy
            .issuers
            .get(&claims.iss)
            .ok_or_else(|| VerifyError::UnknownIssuer(claims.iss.chars().take(64).collect()))?;

        let key = self
            .keys
            .key(&claims.iss, &unverified.kid)
            .await
            .map_err(|e| match e {
                KeyError::UnknownKid => VerifyError::UnknownKey {
                    iss: claims.iss.clone(),
                    kid: unverified.kid.clone(),
                },
                KeyError::Unavailable(reason) => {
                    tracing::warn!(iss = %claims.iss, %reason, "issuer keys unavailable");
                    VerifyError::KeysUnavailable {
                        iss: claims.iss.clone(),
                        reason,
                    }
                }
            })?;

        if unverified.signature_len != SIGNATURE_BYTES {
            return Err(VerifyError::SignatureInvalid(
                "an ES384 signature is 96 bytes of r || s",
            ));
        }
        if unverified.high_s {
            return Err(VerifyError::SignatureInvalid(
                "an ES384 signature is accepted only in its canonical form, with the low `s`",
            ));
        }
        let valid = jsonwebtoken::crypto::verify(
            unverified.signature_b64,
            unverified.signing_input.as_bytes(),
            &key.decoding,
            Algorithm::ES384,
        )
        .unwrap_or(false);
        if !valid {
            return Err(VerifyError::SignatureInvalid(
                "it does not match the issuer's key",
            ));
        }

        match &claims.aud {
            Some(Audience::One(aud)) if *aud == self.policy.audience => {}
            _ => {
                return Err(VerifyError::AudienceInvalid {
                    expected: self.policy.audience.clone(),
                });
            }
        }

        self.check_times(claims)?;

        if claims.order_processing_id != expected_order {
            return Err(VerifyError::OrderMismatch);
        }
        if claims.capabilities.is_empty() {
            return Err(VerifyError::InvalidClaims("`capabilities` is empty".into()));
        }
        if let Some(capability) = claims.capabilities.iter().find(|c| !allowed.contains(*c)) {
            return Err(VerifyError::CapabilityRejected {
                iss: claims.iss.clone(),
                capability: capability.chars().take(64).collect(),
            });
        }
        if claims.jti.get_version_num() != 7 {
            return Err(VerifyError::InvalidClaims("`jti` must be a UUIDv7".into()));
        }

        let kid = unverified.kid;
        let claims = unverified.claims;
        Ok(VerifiedToken {
            token: token.to_owned(),
            claims,
            kid,
            token_sha256: sha256_hex(token),
        })
    }

    fn check_times(&self, claims: &Claims) -> Result<(), VerifyError> {
        let now = self.clock.now_secs();
        let leeway = crate::secs(self.policy.leeway);
        if claims.nbf > now + leeway {
            return Err(VerifyError::NotYetValid { nbf: claims.nbf });
        }
        if claims.iat > now + leeway {
            return Err(VerifyError::IssuedInFuture { iat: claims.iat });
        }
        if now >= claims.exp.saturating_add(leeway) {
            return Err(VerifyError::Expired { exp: claims.exp });
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if lifetime <= 0 {
            return Err(VerifyError::LifetimeInvalid(
                "`exp` is not after `iat`".into(),
            ));
        }
        if lifetime > crate::secs(self.policy.max_lifetime) {
            return Err(VerifyError::LifetimeInvalid(format!(
                "`exp - iat` is longer than the maximum of {} s",
                self.policy.max_lifetime.as_secs()
            )));
        }
        Ok(())
    }
}

/// Hex SHA-256, for logging a token without its content.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
