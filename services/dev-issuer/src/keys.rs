//! The issuer's ES256 key: kept in a PKCS#8 PEM file so that tokens survive a restart, made
//! on the first start.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, jwk::JwkSet};
use sha2::{Digest, Sha256};

pub struct SigningKey {
    encoding: EncodingKey,
    /// The RFC 7638 thumbprint of the public key.
    kid: String,
    jwk: serde_json::Value,
}

impl SigningKey {
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| e.to_string())?;
                let pem = pair.serialize_pem();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                std::fs::write(path, &pem).map_err(|e| format!("{}: {e}", path.display()))?;
                pem
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Self::from_pem(&pem)
    }

    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| e.to_string())?;
        let point = pair.public_key_raw();
        if point.len() != 65 || point[0] != 4 {
            return Err("not an uncompressed P-256 key".into());
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": kid, "use": "sig", "alg": "ES256",
        });
        let encoding = EncodingKey::from_ec_der(&pair.serialize_der());
        Ok(Self { encoding, kid, jwk })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    /// The public key set, typed (for tests that verify what they minted).
    pub fn jwk_set(&self) -> JwkSet {
        serde_json::from_value(self.jwks()).unwrap_or(JwkSet { keys: vec![] })
    }

    /// A compact JWS of `claims` with `header`'s parameters plus `alg: ES256` and our `kid`.
    pub fn sign(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let mut fields = header.as_object().cloned().unwrap_or_default();
        fields.insert("alg".into(), "ES256".into());
        fields
            .entry("kid")
            .or_insert_with(|| self.kid.clone().into());
        let header = URL_SAFE_NO_PAD.encode(serde_json::Value::Object(fields).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let message = format!("{header}.{payload}");
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &self.encoding,
            jsonwebtoken::Algorithm::ES256,
        )
        .unwrap_or_default();
        format!("{message}.{signature}")
    }
}
