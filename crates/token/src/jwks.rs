//! JSON Web Key Sets (RFC 7517) of P-384 signing keys.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};

/// One public signing key. Unknown members (a private `d` above all) are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
}

impl Jwk {
    /// The JWK of a P-384 public key given as a SEC1 uncompressed point.
    pub fn p384(kid: impl Into<String>, sec1: &[u8]) -> Result<Self, JwksError> {
        let kid = kid.into();
        if sec1.len() != 97 || sec1[0] != 0x04 {
            return Err(JwksError::InvalidKey {
                kid,
                reason: "not an uncompressed P-384 point",
            });
        }
        Ok(Self {
            kty: "EC".into(),
            crv: "P-384".into(),
            x: URL_SAFE_NO_PAD.encode(&sec1[1..49]),
            y: URL_SAFE_NO_PAD.encode(&sec1[49..97]),
            kid,
            use_: "sig".into(),
            alg: crate::ALGORITHM.into(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("key `{kid}` is unusable: {reason}")]
    InvalidKey { kid: String, reason: &'static str },
    #[error("key id `{0}` appears twice in the set")]
    DuplicateKid(String),
}

/// A key ready for signature checks.
pub struct VerificationKey {
    pub kid: String,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .finish()
    }
}

/// The verified keys of one issuer, by `kid`.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerificationKey>>,
}

impl KeySet {
    /// Checks every key (EC, P-384, ES384, `use: sig`, a point on the curve) and indexes it.
    pub fn from_jwks(set: &JwkSet) -> Result<Self, JwksError> {
        let mut keys = HashMap::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let invalid = |reason| JwksError::InvalidKey {
                kid: jwk.kid.clone(),
                reason,
            };
            if jwk.kid.is_empty() {
                return Err(invalid("empty `kid`"));
            }
            if jwk.kty != "EC" || jwk.crv != "P-384" {
                return Err(invalid("not an EC P-384 key"));
            }
            if jwk.alg != crate::ALGORITHM || jwk.use_ != "sig" {
                return Err(invalid("not an ES384 signing key"));
            }
            let x = URL_SAFE_NO_PAD
                .decode(&jwk.x)
                .map_err(|_| invalid("`x` is not base64url"))?;
            let y = URL_SAFE_NO_PAD
                .decode(&jwk.y)
                .map_err(|_| invalid("`y` is not base64url"))?;
            if x.len() != 48 || y.len() != 48 {
                return Err(invalid("coordinates must be 48 bytes"));
            }
            let mut sec1 = Vec::with_capacity(97);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            p384::PublicKey::from_sec1_bytes(&sec1).map_err(|_| invalid("not a point on P-384"))?;
            let key = VerificationKey {
                kid: jwk.kid.clone(),
                decoding: DecodingKey::from_ec_der(&sec1),
            };
            if keys.insert(jwk.kid.clone(), Arc::new(key)).is_some() {
                return Err(JwksError::DuplicateKid(jwk.kid.clone()));
            }
        }
        Ok(Self { keys })
    }

    pub fn get(&self, kid: &str) -> Option<Arc<VerificationKey>> {
        self.keys.get(kid).cloned()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
