//! The golden tokens, checked by code that is not ours: jsonwebtoken's own JWK import and
//! `decode`, and RustCrypto's P-384 ECDSA (a second implementation beside aws-lc). A token we
//! sign must be an ordinary ES384 JWS to any JOSE library, `settles` and `priced_on` included.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;

use crate::golden::{Golden, load};

/// The golden tokens, and every published key as jsonwebtoken reads a JWKS.
fn golden() -> (Golden, Vec<JwkSet>) {
    let golden = load();
    let sets = golden
        .jwks
        .values()
        .map(|set| serde_json::from_value(serde_json::to_value(set).unwrap()).unwrap())
        .collect();
    (golden, sets)
}

fn p384_key(jwk: &Jwk) -> VerifyingKey {
    let Ok(params) = serde_json::to_value(jwk) else {
        panic!("the JWK serialises");
    };
    let mut sec1 = vec![0x04];
    for coordinate in ["x", "y"] {
        let text = params[coordinate].as_str().unwrap();
        sec1.extend(URL_SAFE_NO_PAD.decode(text).unwrap());
    }
    VerifyingKey::from_sec1_bytes(&sec1).unwrap()
}

#[test]
fn every_golden_token_is_a_standard_es384_jws_to_other_jose_code() {
    let (golden, jwks) = golden();
    let mut checked = 0;
    for t in &golden.tokens {
        let header = jsonwebtoken::decode_header(&t.token).unwrap();
        assert_eq!(header.alg, Algorithm::ES384, "{}", t.name);
        let kid = header.kid.unwrap();
        let jwk = jwks
            .iter()
            .find_map(|set| set.find(&kid))
            .unwrap_or_else(|| panic!("{}: kid {kid} is published", t.name));

        // jsonwebtoken: its own JWK import, signature and audience checks; times are checked
        // below against the golden clock.
        let mut validation = Validation::new(Algorithm::ES384);
        validation.set_audience(&["order-processing"]);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let decoded = jsonwebtoken::decode::<Value>(
            &t.token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap_or_else(|e| panic!("{}: jsonwebtoken refused it: {e}", t.name));
        let claims = decoded.claims;
        let exp = claims["exp"].as_i64().unwrap();
        assert_eq!(
            golden.now < exp,
            t.expect != "token-expired",
            "{}: expiry as recorded",
            t.name
        );
        assert!(
            claims["settles"]["amount"].as_u64().is_some(),
            "{}: settles is signed",
            t.name
        );

        // RustCrypto P-384 over the same signing input.
        let (signing_input, signature) = t.token.rsplit_once('.').unwrap();
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
        p384_key(jwk)
            .verify(signing_input.as_bytes(), &signature)
            .unwrap_or_else(|e| panic!("{}: RustCrypto p384 refused it: {e}", t.name));
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[test]
fn a_changed_settlement_fails_the_signature_in_other_jose_code() {
    let (golden, jwks) = golden();
    let t = &golden.tokens[0];
    let (header, rest) = t.token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["settles"]["amount"] = 4999.into();
    let forged = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    let kid = jsonwebtoken::decode_header(&forged).unwrap().kid.unwrap();
    let jwk = jwks.iter().find_map(|set| set.find(&kid)).unwrap();
    let mut validation = Validation::new(Algorithm::ES384);
    validation.set_audience(&["order-processing"]);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    assert!(
        jsonwebtoken::decode::<Value>(&forged, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .is_err(),
        "a raised `settles` no longer matches the signature"
    );
}
