//! `ctr token inspect`: a compact JWS's header and claims, decoded without trusting them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Header and claims as JSON, and the signature's length only: the signature is never shown
/// (with the rest it would make the token whole again, and a token is a bearer capability).
pub fn inspect(token: &str) -> Result<Value, String> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(format!(
            "a compact JWS has three dot-separated parts, this has {}",
            parts.len()
        ));
    };
    let decode = |name: &str, part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("the {name} is not base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the {name} is not JSON: {e}"))
    };
    let signature_bytes = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| format!("the signature is not base64url: {e}"))?
        .len();
    Ok(json!({
        "verified": false,
        "note": "decoded only: the relay and the issuing domain verify the signature, audience, times and single use",
        "header": decode("header", header)?,
        "claims": decode("claims", claims)?,
        "signature_bytes": signature_bytes,
    }))
}

/// The token with one claim changed and the original signature kept: what an attacker would
/// present. For the demo.
pub fn tamper(token: &str, claim: &str, value: Value) -> Result<String, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("not a compact JWS".into());
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(claims)
        .map_err(|e| format!("claims: {e}"))?;
    let mut claims: Value = serde_json::from_slice(&bytes).map_err(|e| format!("claims: {e}"))?;
    claims[claim] = value;
    let claims = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
    Ok(format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims)
    ))
}

/// The `sub` of a token, read without trusting it (whom a given access token acts for).
pub fn subject(token: &str) -> Option<String> {
    inspect(token).ok()?["claims"]["sub"]
        .as_str()
        .map(str::to_owned)
}

/// The `cnf.jkt` of a DPoP-bound token, read without trusting it (which key proves it).
pub fn bound_key(token: &str) -> Option<String> {
    inspect(token).ok()?["claims"]["cnf"]["jkt"]
        .as_str()
        .filter(|jkt| {
            !jkt.is_empty()
                && jkt
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn token() -> String {
        let part = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
        format!(
            "{}.{}.{}",
            part(json!({"alg": "ES384", "kid": "k1", "typ": "JWT"})),
            part(
                json!({"iss": "points", "jti": "j", "settles": {"amount": 10, "currency": "EUR"}})
            ),
            URL_SAFE_NO_PAD.encode([7u8; 96])
        )
    }

    #[test]
    fn inspect_shows_header_and_claims_and_never_the_signature() {
        let token = token();
        let shown = inspect(&token).unwrap();
        assert_eq!(shown["header"]["alg"], "ES384");
        assert_eq!(shown["claims"]["iss"], "points");
        assert_eq!(shown["signature_bytes"], 96);
        assert_eq!(shown["verified"], false);
        let signature = token.rsplit('.').next().unwrap();
        assert!(!shown.to_string().contains(signature));
    }

    #[test]
    fn inspect_refuses_what_is_not_a_compact_jws() {
        assert!(inspect("a.b").unwrap_err().contains("three"));
        assert!(inspect("!!.e30.AA").unwrap_err().contains("header"));
        assert!(
            inspect("e30.bm90IGpzb24.AA")
                .unwrap_err()
                .contains("claims")
        );
    }

    #[test]
    fn tamper_changes_one_claim_and_keeps_header_and_signature() {
        let token = token();
        let bad = tamper(&token, "settles", json!({"amount": 1, "currency": "EUR"})).unwrap();
        let (a, b) = (
            token.split('.').collect::<Vec<_>>(),
            bad.split('.').collect::<Vec<_>>(),
        );
        assert_eq!((a[0], a[2]), (b[0], b[2]));
        assert_ne!(a[1], b[1]);
        assert_eq!(inspect(&bad).unwrap()["claims"]["settles"]["amount"], 1);
    }
}
