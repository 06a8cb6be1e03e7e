//! A client's DPoP key: P-256 (ES256) or P-384 (ES384), kept as PKCS#8 PEM, signing one proof
//! per request.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::Serialize;

use super::verify::{access_token_hash, thumbprint};

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the DPoP key is neither a P-256 nor a P-384 private key in PKCS#8 PEM")]
    Unreadable,
    #[error("the DPoP key could not be encoded: {0}")]
    Encode(String),
    #[error("the proof could not be signed: {0}")]
    Sign(String),
}

/// A private key that makes DPoP proofs. `Debug` shows the thumbprint only.
pub struct ProofKey {
    alg: Algorithm,
    pem: String,
    encoding: EncodingKey,
    jwk: Jwk,
    jkt: String,
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofKey")
            .field("alg", &self.alg)
            .field("jkt", &self.jkt)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ProofClaims<'a> {
    jti: String,
    htm: &'a str,
    htu: &'a str,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
}

impl ProofKey {
    /// A new random key for `alg` (`ES256` or `ES384`).
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let mut rng = rand_core::OsRng;
        let pem = match alg {
            Algorithm::ES256 => p256::SecretKey::random(&mut rng).to_pkcs8_pem(LineEnding::LF),
            Algorithm::ES384 => p384::SecretKey::random(&mut rng).to_pkcs8_pem(LineEnding::LF),
            other => {
                return Err(KeyError::Encode(format!(
                    "{other:?} keys are not made here"
                )));
            }
        }
        .map_err(|e| KeyError::Encode(e.to_string()))?;
        Self::from_pem(&pem)
    }

    /// A key read from PKCS#8 PEM (as [`Self::pem`] writes it).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (alg, der) = if let Ok(key) = p256::SecretKey::from_pkcs8_pem(pem) {
            (Algorithm::ES256, key.to_pkcs8_der())
        } else if let Ok(key) = p384::SecretKey::from_pkcs8_pem(pem) {
            (Algorithm::ES384, key.to_pkcs8_der())
        } else {
            return Err(KeyError::Unreadable);
        };
        let der = der.map_err(|e| KeyError::Encode(e.to_string()))?;
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let mut jwk =
            Jwk::from_encoding_key(&encoding, alg).map_err(|e| KeyError::Encode(e.to_string()))?;
        // The header's key says what it is, nothing more.
        jwk.common = Default::default();
        let jkt = thumbprint(&jwk).map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(Self {
            alg,
            pem: pem.to_owned(),
            encoding,
            jwk,
            jkt,
        })
    }

    /// The private key as PKCS#8 PEM: store it where only its owner can read it.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The public key as the proofs carry it.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The key's RFC 7638 thumbprint: the `cnf.jkt` of tokens bound to it.
    pub fn thumbprint(&self) -> &str {
        &self.jkt
    }

    /// `proof` with `edit` applied to its header and claims, signed again with this key when
    /// `resign`, else keeping its original signature (which then no longer covers it). For
    /// tests and tools that must make hostile proofs; clients use [`Self::proof`].
    pub fn edited(
        &self,
        proof: &str,
        edit: impl FnOnce(&mut serde_json::Value, &mut serde_json::Value),
        resign: bool,
    ) -> Result<String, KeyError> {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let malformed = || KeyError::Sign("not a compact JWS with JSON header and claims".into());
        let mut parts = proof.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let decode = |part: &str| -> Result<serde_json::Value, KeyError> {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed())?;
            serde_json::from_slice(&bytes).map_err(|_| malformed())
        };
        let (mut header, mut claims) = (decode(header)?, decode(claims)?);
        edit(&mut header, &mut claims);
        let encode = |value: &serde_json::Value| {
            serde_json::to_vec(value)
                .map(|json| URL_SAFE_NO_PAD.encode(json))
                .map_err(|e| KeyError::Sign(e.to_string()))
        };
        let signing = format!("{}.{}", encode(&header)?, encode(&claims)?);
        if !resign {
            return Ok(format!("{signing}.{signature}"));
        }
        let signature = jsonwebtoken::crypto::sign(signing.as_bytes(), &self.encoding, self.alg)
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        Ok(format!("{signing}.{signature}"))
    }

    /// A proof for one request: `method` and `url` (query and fragment are dropped), and
    /// the access token it accompanies (none at a token endpoint).
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<String, KeyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.proof_at(method, url, access_token, now)
    }

    /// As [`Self::proof`], issued at `iat` (tests make old and future proofs with it).
    pub fn proof_at(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        iat: i64,
    ) -> Result<String, KeyError> {
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let mut header = Header::new(self.alg);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.jwk.clone());
        let claims = ProofClaims {
            jti: uuid::Uuid::new_v4().to_string(),
            htm: method,
            htu,
            iat,
            ath: access_token.map(access_token_hash),
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }
}
