//! DPoP proofs: the RFC 9449 and RFC 7638 examples as test vectors, proofs this crate makes,
//! and every hostile proof refused with its own reason.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use ctr_access::dpop::{
    DpopError, ProofKey, ProofRequest, ProofVerifier, access_token_hash, thumbprint,
};
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use reqwest::Url;
use serde_json::{Value, json};

/// The RFC 9449 examples (tests/testdata/rfc9449.json): two proofs, the access token and `ath`
/// of the second, and the thumbprint of their key.
fn rfc9449(name: &str) -> String {
    let vectors: Value = serde_json::from_str(include_str!("testdata/rfc9449.json")).unwrap();
    vectors[name].as_str().unwrap().to_owned()
}

fn verifier() -> ProofVerifier {
    ProofVerifier::new(
        vec![
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
            Algorithm::RS256,
            Algorithm::PS256,
        ],
        60,
        5,
        Vec::new(),
    )
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

#[test]
fn rfc_7638_example_thumbprint() {
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    }))
    .unwrap();
    assert_eq!(
        thumbprint(&jwk).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn rfc_9449_examples_verify() {
    let v = verifier();
    let token_endpoint = url("https://server.example.com/token");
    let proof = v
        .verify(
            &rfc9449("token_endpoint_proof"),
            &ProofRequest {
                method: "POST",
                url: &token_endpoint,
                access_token: None,
            },
            1562262616,
        )
        .unwrap();
    assert_eq!(proof.jkt, rfc9449("jkt"));
    assert_eq!(proof.jti, "-BwC3ESc6acc2lTc");

    let (resource_proof, access_token) = (rfc9449("resource_proof"), rfc9449("access_token"));
    assert_eq!(access_token_hash(&access_token), rfc9449("ath"));
    let resource = url("https://resource.example.org/protectedresource");
    let request = ProofRequest {
        method: "GET",
        url: &resource,
        access_token: Some(&access_token),
    };
    let proof = v.verify(&resource_proof, &request, 1562262618).unwrap();
    assert_eq!(proof.jkt, rfc9449("jkt"));
    assert_eq!(proof.jti, "e1j3V_bKic8-LAEB");
    // The same proof for another access token, method, URL or time is refused.
    let other = ProofRequest {
        access_token: Some("another-token"),
        ..request
    };
    assert_eq!(
        v.verify(&resource_proof, &other, 1562262618),
        Err(DpopError::AccessTokenHash)
    );
    let post = ProofRequest {
        method: "POST",
        ..request
    };
    assert_eq!(
        v.verify(&resource_proof, &post, 1562262618),
        Err(DpopError::Method)
    );
    let elsewhere = url("https://resource.example.org/other");
    let moved = ProofRequest {
        url: &elsewhere,
        ..request
    };
    assert_eq!(
        v.verify(&resource_proof, &moved, 1562262618),
        Err(DpopError::Url)
    );
    assert_eq!(
        v.verify(&resource_proof, &request, 1562262618 + 120),
        Err(DpopError::Expired)
    );
    assert_eq!(
        v.verify(&resource_proof, &request, 1562262618 - 60),
        Err(DpopError::FromFuture)
    );
}

#[test]
fn htu_is_compared_normalised_without_query_or_fragment() {
    let v = verifier();
    let key = ProofKey::generate(Algorithm::ES256).unwrap();
    let served = url("https://localhost:8443/service/v1/orders");
    let now = 1_800_000_000;
    for htu in [
        "https://localhost:8443/service/v1/orders",
        "HTTPS://LOCALHOST:8443/service/v1/orders",
        "https://localhost:8443/service/v1/./orders?x=1#f",
    ] {
        let proof = key.proof_at("POST", htu, Some("at"), now).unwrap();
        let request = ProofRequest {
            method: "POST",
            url: &served,
            access_token: Some("at"),
        };
        assert!(v.verify(&proof, &request, now).is_ok(), "{htu}");
    }
    let default_port = url("https://shop.example/service/v1/orders");
    let proof = key
        .proof_at(
            "POST",
            "https://shop.example:443/service/v1/orders",
            None,
            now,
        )
        .unwrap();
    let request = ProofRequest {
        method: "POST",
        url: &default_port,
        access_token: None,
    };
    assert!(v.verify(&proof, &request, now).is_ok());
    for htu in [
        "http://localhost:8443/service/v1/orders",
        "https://localhost:8444/service/v1/orders",
        "https://evil.example:8443/service/v1/orders",
        "https://localhost:8443/service/v1/orders/",
        "/service/v1/orders",
    ] {
        let proof = key.proof_at("POST", htu, None, now).unwrap();
        let request = ProofRequest {
            method: "POST",
            url: &served,
            access_token: None,
        };
        assert_eq!(
            v.verify(&proof, &request, now),
            Err(DpopError::Url),
            "{htu}"
        );
    }
    // With configured origins, only those (and the request's path).
    let public = ProofVerifier::new(
        vec![Algorithm::ES256],
        60,
        5,
        vec![url("https://shop.example")],
    );
    let inside = url("https://order-processing:8443/service/v1/orders");
    let request = ProofRequest {
        method: "POST",
        url: &inside,
        access_token: None,
    };
    let ok = key
        .proof_at("POST", "https://shop.example/service/v1/orders", None, now)
        .unwrap();
    assert!(public.verify(&ok, &request, now).is_ok());
    let host = key
        .proof_at(
            "POST",
            "https://order-processing:8443/service/v1/orders",
            None,
            now,
        )
        .unwrap();
    assert_eq!(public.verify(&host, &request, now), Err(DpopError::Url));
}

#[test]
fn keys_round_trip_and_prove() {
    let v = verifier();
    let served = url(SERVED);
    let now = NOW;
    for alg in [Algorithm::ES256, Algorithm::ES384] {
        let key = ProofKey::generate(alg).unwrap();
        let again = ProofKey::from_pem(key.pem()).unwrap();
        assert_eq!(again.thumbprint(), key.thumbprint());
        assert_eq!(again.algorithm(), alg);
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let proof = again.proof_at("GET", SERVED, Some("t"), now).unwrap();
        let verified = v
            .verify(
                &proof,
                &ProofRequest {
                    method: "GET",
                    url: &served,
                    access_token: Some("t"),
                },
                now,
            )
            .unwrap();
        assert_eq!(verified.jkt, key.thumbprint());
        assert_eq!(verified.replay_key().len(), 64);
    }
    assert!(ProofKey::from_pem("not a key").is_err());
}

/// The resource several tests' proofs are made for, and when they are checked.
const SERVED: &str = "https://localhost:8443/x";
const NOW: i64 = 1_800_000_000;

/// A POST to `served` carrying the access token `t`.
fn post_to(served: &Url) -> ProofRequest<'_> {
    ProofRequest {
        method: "POST",
        url: served,
        access_token: Some("t"),
    }
}

/// `proof` edited by `edit`, signed again by `key` or keeping its signature.
fn edited(
    key: &ProofKey,
    proof: &str,
    edit: impl FnOnce(&mut Value, &mut Value),
    resign: bool,
) -> String {
    key.edited(proof, edit, resign).unwrap()
}

fn remove(value: &mut Value, name: &str) {
    value.as_object_mut().unwrap().remove(name);
}

#[test]
fn hostile_proofs_are_refused_each_for_its_reason() {
    let v = verifier();
    let key = ProofKey::generate(Algorithm::ES256).unwrap();
    let served = url(SERVED);
    let now = NOW;
    let request = post_to(&served);
    let good = key.proof_at("POST", SERVED, Some("t"), now).unwrap();
    assert!(v.verify(&good, &request, now).is_ok());
    // The re-signing helper itself makes proofs that pass.
    assert!(
        v.verify(&edited(&key, &good, |_, _| {}, true), &request, now)
            .is_ok()
    );
    let refuse = |proof: &str| v.verify(proof, &request, now).unwrap_err();

    assert!(matches!(refuse("a.b"), DpopError::Malformed(_)));
    assert!(matches!(refuse(&"a".repeat(5000)), DpopError::Malformed(_)));
    assert_eq!(
        refuse(&edited(&key, &good, |h, _| h["typ"] = json!("JWT"), true)),
        DpopError::Type
    );
    assert_eq!(
        refuse(&edited(&key, &good, |h, _| remove(h, "typ"), true)),
        DpopError::Type
    );
    // `none` with no signature, and HMAC (keyed with anything).
    let none = edited(&key, &good, |h, _| h["alg"] = json!("none"), false);
    let none = format!("{}.", none.rsplit_once('.').unwrap().0);
    assert_eq!(refuse(&none), DpopError::Algorithm("none".into()));
    assert_eq!(
        refuse(&edited(
            &key,
            &good,
            |h, _| h["alg"] = json!("HS256"),
            false
        )),
        DpopError::Algorithm("HS256".into())
    );
    for name in ["jku", "x5u", "x5c", "crit"] {
        let proof = edited(
            &key,
            &good,
            |h, _| h[name] = json!("https://evil.example/k"),
            true,
        );
        assert_eq!(refuse(&proof), DpopError::Header(name), "{name}");
    }
    assert_eq!(
        refuse(&edited(&key, &good, |h, _| remove(h, "jwk"), true)),
        DpopError::Header("no jwk")
    );
    assert_eq!(
        refuse(&edited(
            &key,
            &good,
            |h, _| h["jwk"]["d"] = json!("AAAA"),
            true
        )),
        DpopError::PrivateKey("d")
    );
    // A P-384 key under ES256, and another key than the signer's.
    let p384 = ProofKey::generate(Algorithm::ES384).unwrap();
    let p384_jwk = serde_json::to_value(p384.jwk()).unwrap();
    assert!(matches!(
        refuse(&edited(&key, &good, |h, _| h["jwk"] = p384_jwk, true)),
        DpopError::Key(_)
    ));
    let other = ProofKey::generate(Algorithm::ES256).unwrap();
    let other_jwk = serde_json::to_value(other.jwk()).unwrap();
    assert_eq!(
        refuse(&edited(&key, &good, |h, _| h["jwk"] = other_jwk, false)),
        DpopError::Signature
    );
    assert_eq!(
        refuse(&edited(&key, &good, |_, c| c["htm"] = json!("GET"), false)),
        DpopError::Signature
    );
    assert_eq!(
        refuse(&edited(&key, &good, |_, c| c["htm"] = json!("GET"), true)),
        DpopError::Method
    );
    assert_eq!(
        refuse(&edited(
            &key,
            &good,
            |_, c| c["htu"] = json!("https://localhost:8443/y"),
            true
        )),
        DpopError::Url
    );
    assert_eq!(
        refuse(&edited(
            &key,
            &good,
            |_, c| c["iat"] = json!(now - 600),
            true
        )),
        DpopError::Expired
    );
    assert_eq!(
        refuse(&edited(
            &key,
            &good,
            |_, c| c["iat"] = json!(now + 600),
            true
        )),
        DpopError::FromFuture
    );
    assert_eq!(
        refuse(&edited(
            &key,
            &good,
            |_, c| c["ath"] = json!(access_token_hash("other")),
            true
        )),
        DpopError::AccessTokenHash
    );
    assert_eq!(
        refuse(&edited(&key, &good, |_, c| remove(c, "ath"), true)),
        DpopError::AccessTokenHash
    );
    for claim in ["jti", "htm", "htu", "iat"] {
        let proof = edited(&key, &good, |_, c| remove(c, claim), true);
        assert!(matches!(refuse(&proof), DpopError::Malformed(_)), "{claim}");
    }
    // Every slug is distinct and listed.
    let mut slugs = DpopError::SLUGS.to_vec();
    slugs.sort_unstable();
    slugs.dedup();
    assert_eq!(slugs.len(), DpopError::SLUGS.len());
}

/// RFC 7518 wants EC coordinates at full length; Authlib drops their leading zero bytes (about
/// one P-256 key in a hundred). Such a proof verifies, and its thumbprint is of the JWK as
/// sent: what its holder, and an issuer binding a token to it, computed. A coordinate longer
/// than the curve's, or empty, is refused.
#[test]
fn a_coordinate_without_its_leading_zero_bytes_is_read_at_full_length() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let v = verifier();
    let served = url(SERVED);
    let now = NOW;
    let request = post_to(&served);
    let (key, member) = (0..20_000)
        .find_map(|_| {
            let key = ProofKey::generate(Algorithm::ES256).unwrap();
            let jwk = serde_json::to_value(key.jwk()).unwrap();
            ["x", "y"]
                .into_iter()
                .find(|member| {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(jwk[*member].as_str().unwrap())
                        .unwrap();
                    bytes[0] == 0
                })
                .map(|member| (key, member))
        })
        .unwrap();
    let good = key.proof_at("POST", SERVED, Some("t"), now).unwrap();
    let strip = |h: &mut Value| {
        let full = URL_SAFE_NO_PAD
            .decode(h["jwk"][member].as_str().unwrap())
            .unwrap();
        let short: Vec<u8> = full.into_iter().skip_while(|b| *b == 0).collect();
        h["jwk"][member] = json!(URL_SAFE_NO_PAD.encode(short));
    };
    let short = edited(&key, &good, |h, _| strip(h), true);
    let verified = v.verify(&short, &request, now).unwrap();
    let mut sent = serde_json::to_value(key.jwk()).unwrap();
    let mut header = json!({"jwk": sent.clone()});
    strip(&mut header);
    sent[member] = header["jwk"][member].clone();
    let sent: Jwk = serde_json::from_value(sent).unwrap();
    assert_eq!(verified.jkt, thumbprint(&sent).unwrap());
    assert_ne!(
        verified.jkt,
        key.thumbprint(),
        "another representation, another thumbprint"
    );

    for bad in [URL_SAFE_NO_PAD.encode([1u8; 33]), String::new()] {
        let proof = edited(&key, &good, |h, _| h["jwk"][member] = json!(bad), true);
        assert!(
            matches!(v.verify(&proof, &request, now), Err(DpopError::Key(_))),
            "{bad}"
        );
    }
}

#[test]
fn a_header_verified_before_still_needs_its_keys_signature_and_carries_its_own_thumbprint() {
    // The verifier keeps a header's parsed key: a thief who copies a victim's header (and
    // so its `jwk`) and signs with another key is refused as before, and two clients'
    // headers never share an entry.
    let v = verifier();
    let served = url(SERVED);
    let now = NOW;
    let request = post_to(&served);
    let (victim, thief) = (
        ProofKey::generate(Algorithm::ES256).unwrap(),
        ProofKey::generate(Algorithm::ES256).unwrap(),
    );
    let proof = |key: &ProofKey| key.proof_at("POST", SERVED, Some("t"), now).unwrap();
    for _ in 0..2 {
        assert_eq!(
            v.verify(&proof(&victim), &request, now).unwrap().jkt,
            victim.thumbprint()
        );
        assert_eq!(
            v.verify(&proof(&thief), &request, now).unwrap().jkt,
            thief.thumbprint()
        );
    }
    let forged = edited(&thief, &proof(&victim), |_, _| {}, true);
    assert_eq!(
        v.verify(&forged, &request, now).unwrap_err(),
        DpopError::Signature,
        "the victim's header, the thief's signature"
    );
}
