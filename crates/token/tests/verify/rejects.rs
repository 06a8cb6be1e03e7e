//! Every token the verifier must refuse, one row per case, with the reason in the message.

use std::time::Duration;

use aws_lc_rs::hmac;
use serde_json::{Value, json};

use crate::fixture::{Fixture, NOW, ORDER, b64, with_segment};

struct Case {
    why: &'static str,
    token: String,
    problem: &'static str,
}

fn case(why: &'static str, token: String, problem: &'static str) -> Case {
    Case {
        why,
        token,
        problem,
    }
}

fn set(value: &Value, key: &str, to: Value) -> Value {
    let mut value = value.clone();
    value[key] = to;
    value
}

fn without(value: &Value, key: &str) -> Value {
    let mut value = value.clone();
    value.as_object_mut().unwrap().remove(key);
    value
}

async fn header_cases(f: &Fixture) -> Vec<Case> {
    let header = f.header().await;
    let claims = f.claims();
    let kid = f.kid().await;
    let mut cases = vec![
        case(
            "`alg: none` with an empty signature",
            {
                let t = f.sign(&set(&header, "alg", json!("none")), &claims).await;
                with_segment(&t, 2, "")
            },
            "token-malformed",
        ),
        case(
            "`alg: none` with a signature",
            f.sign(&set(&header, "alg", json!("none")), &claims).await,
            "token-algorithm-rejected",
        ),
        case(
            "`alg: ES256`",
            f.sign(&set(&header, "alg", json!("ES256")), &claims).await,
            "token-algorithm-rejected",
        ),
        case(
            "lowercase `alg: es384`",
            f.sign(&set(&header, "alg", json!("es384")), &claims).await,
            "token-algorithm-rejected",
        ),
        case(
            "missing `alg`",
            f.sign(&without(&header, "alg"), &claims).await,
            "token-algorithm-rejected",
        ),
        case(
            "missing `typ`",
            f.sign(&without(&header, "typ"), &claims).await,
            "token-type-rejected",
        ),
        case(
            "`typ: JWT`",
            f.sign(&set(&header, "typ", json!("JWT")), &claims).await,
            "token-type-rejected",
        ),
        case(
            "missing `kid`",
            f.sign(&without(&header, "kid"), &claims).await,
            "token-malformed",
        ),
        case(
            "a header that is an array",
            f.sign_bytes(b"[]", &serde_json::to_vec(&claims).unwrap())
                .await,
            "token-malformed",
        ),
        case(
            "a duplicated header member",
            f.sign_bytes(
                format!(r#"{{"alg":"ES384","typ":"cap+jwt","kid":"{kid}","alg":"ES384"}}"#)
                    .as_bytes(),
                &serde_json::to_vec(&claims).unwrap(),
            )
            .await,
            "token-malformed",
        ),
    ];
    for parameter in ["crit", "jku", "x5u", "jwk", "x5c", "cty", "x5t", "b64"] {
        let why = Box::leak(format!("the header parameter `{parameter}`").into_boxed_str());
        cases.push(case(
            why,
            f.sign(&set(&header, parameter, json!("x")), &claims).await,
            "token-header-rejected",
        ));
    }

    // HS384 keyed with the issuer's public key: the classic algorithm-confusion attack.
    let hs_header = b64(&serde_json::to_vec(&set(&header, "alg", json!("HS384"))).unwrap());
    let payload = b64(&serde_json::to_vec(&claims).unwrap());
    let public = f
        .coupons
        .kms()
        .public_keys("coupons-signing")
        .await
        .unwrap()
        .remove(0)
        .sec1;
    let input = format!("{hs_header}.{payload}");
    let mac = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA384, &public),
        input.as_bytes(),
    );
    cases.push(case(
        "HS384 keyed with the public key",
        format!("{input}.{}", b64(mac.as_ref())),
        "token-algorithm-rejected",
    ));
    cases
}

async fn form_cases(f: &Fixture) -> Vec<Case> {
    let valid = f.valid().await;
    let parts: Vec<&str> = valid.split('.').collect();
    let raw_signature = base64_decode(parts[2]);
    let signature = p384::ecdsa::Signature::from_slice(&raw_signature).unwrap();
    let der = signature.to_der();
    // (r, n - s): as valid a signature of the same input as (r, s), and another token.
    let (r, s) = signature.split_scalars();
    let twin = p384::ecdsa::Signature::from_scalars(r, -s).unwrap();
    let huge = set(
        &f.claims(),
        "constraints",
        json!({"pad": "x".repeat(9 * 1024)}),
    );
    vec![
        case("an empty string", String::new(), "token-malformed"),
        case(
            "two segments",
            format!("{}.{}", parts[0], parts[1]),
            "token-malformed",
        ),
        case(
            "four segments",
            format!("{valid}.{}", parts[2]),
            "token-malformed",
        ),
        case(
            "a padded payload",
            with_segment(&valid, 1, &format!("{}=", parts[1])),
            "token-malformed",
        ),
        case(
            "standard base64 in the signature",
            with_segment(&valid, 2, &format!("+/{}", &parts[2][2..])),
            "token-malformed",
        ),
        case(
            "whitespace inside a segment",
            with_segment(&valid, 1, &format!("{} ", parts[1])),
            "token-malformed",
        ),
        case(
            "a token over 8 KiB",
            f.sign(&f.header().await, &huge).await,
            "token-too-large",
        ),
        case(
            "a tampered header",
            with_segment(
                &valid,
                0,
                &b64(format!(
                    r#"{{"kid": "{}", "typ": "cap+jwt", "alg": "ES384"}}"#,
                    f.kid().await
                )
                .as_bytes()),
            ),
            "token-signature-invalid",
        ),
        case(
            "a tampered payload",
            with_segment(
                &valid,
                1,
                &b64(&serde_json::to_vec(&set(&f.claims(), "sub", json!("c_mallory"))).unwrap()),
            ),
            "token-signature-invalid",
        ),
        case(
            "a tampered signature",
            with_segment(&valid, 2, &b64(&flip_last(&raw_signature))),
            "token-signature-invalid",
        ),
        case(
            "a DER-encoded signature",
            with_segment(&valid, 2, &b64(der.as_bytes())),
            "token-signature-invalid",
        ),
        case(
            "the twin of a genuine signature, (r, n - s)",
            with_segment(&valid, 2, &b64(&twin.to_bytes())),
            "token-signature-invalid",
        ),
        case(
            "a truncated signature",
            with_segment(&valid, 2, &b64(&raw_signature[..95])),
            "token-signature-invalid",
        ),
        case(
            "an all-zero signature",
            with_segment(&valid, 2, &b64(&[0u8; 96])),
            "token-signature-invalid",
        ),
    ]
}

async fn claim_cases(f: &Fixture) -> Vec<Case> {
    let h = f.header().await;
    let c = f.claims();
    let kid = f.kid().await;
    let points_kid = f
        .points
        .kms()
        .primary_version("points-signing")
        .await
        .unwrap();
    let other_issuers_key = {
        let header = serde_json::to_vec(&set(&h, "kid", json!(points_kid.as_str()))).unwrap();
        f.points
            .sign_raw(&points_kid, &header, &serde_json::to_vec(&c).unwrap())
            .await
            .unwrap()
    };
    vec![
        case(
            "an unknown `kid`",
            f.sign(&set(&h, "kid", json!("coupons-signing.v99")), &c)
                .await,
            "token-key-unknown",
        ),
        case(
            "the `kid` of another issuer",
            other_issuers_key,
            "token-key-unknown",
        ),
        case(
            "an unknown `iss`",
            f.sign(&h, &set(&c, "iss", json!("loyalty"))).await,
            "token-issuer-unknown",
        ),
        case(
            "a missing `aud`",
            f.sign(&h, &without(&c, "aud")).await,
            "token-audience-invalid",
        ),
        case(
            "a wrong `aud`",
            f.sign(&h, &set(&c, "aud", json!("payments"))).await,
            "token-audience-invalid",
        ),
        case(
            "several `aud`",
            f.sign(&h, &set(&c, "aud", json!(["order-processing", "payments"])))
                .await,
            "token-audience-invalid",
        ),
        case(
            "`aud` as a one-element array",
            f.sign(&h, &set(&c, "aud", json!(["order-processing"])))
                .await,
            "token-audience-invalid",
        ),
        case(
            "`nbf` in the future",
            f.sign(&h, &set(&c, "nbf", json!(NOW + 60))).await,
            "token-not-yet-valid",
        ),
        case(
            "`iat` in the future",
            f.sign(&h, &set(&c, "iat", json!(NOW + 60))).await,
            "token-issued-in-future",
        ),
        case(
            "`exp` in the past",
            f.sign(
                &h,
                &set(
                    &set(&set(&c, "iat", json!(NOW - 200)), "nbf", json!(NOW - 200)),
                    "exp",
                    json!(NOW - 80),
                ),
            )
            .await,
            "token-expired",
        ),
        case(
            "a lifetime over five minutes",
            f.sign(&h, &set(&c, "exp", json!(NOW + 301))).await,
            "token-lifetime-invalid",
        ),
        case(
            "`exp` equal to `iat`",
            f.sign(&h, &set(&c, "exp", json!(NOW))).await,
            "token-lifetime-invalid",
        ),
        case(
            "a fractional `exp`",
            f.sign(&h, &set(&c, "exp", json!(NOW as f64 + 120.5))).await,
            "token-claims-invalid",
        ),
        case(
            "`exp` as a string",
            f.sign(&h, &set(&c, "exp", json!((NOW + 120).to_string())))
                .await,
            "token-claims-invalid",
        ),
        case(
            "a missing `exp`",
            f.sign(&h, &without(&c, "exp")).await,
            "token-claims-invalid",
        ),
        case(
            "a missing `jti`",
            f.sign(&h, &without(&c, "jti")).await,
            "token-claims-invalid",
        ),
        case(
            "a `jti` that is not a UUIDv7",
            f.sign(
                &h,
                &set(&c, "jti", json!("4f7c2a8e-1b2d-4c3e-8f9a-0b1c2d3e4f50")),
            )
            .await,
            "token-claims-invalid",
        ),
        case(
            "an unknown claim",
            f.sign(&h, &set(&c, "admin", json!(true))).await,
            "token-claims-invalid",
        ),
        case(
            "a missing `settles`",
            f.sign(&h, &without(&c, "settles")).await,
            "token-claims-invalid",
        ),
        case(
            "`settles` in fractional units",
            f.sign(
                &h,
                &set(&c, "settles", json!({"amount": 4.99, "currency": "EUR"})),
            )
            .await,
            "token-claims-invalid",
        ),
        case(
            "a negative `settles`",
            f.sign(
                &h,
                &set(&c, "settles", json!({"amount": -500, "currency": "EUR"})),
            )
            .await,
            "token-claims-invalid",
        ),
        case(
            "`settles` over the maximum amount",
            f.sign(
                &h,
                &set(
                    &c,
                    "settles",
                    json!({"amount": 1_000_000_000_001_u64, "currency": "EUR"}),
                ),
            )
            .await,
            "token-claims-invalid",
        ),
        case(
            "`settles` with an unknown member",
            f.sign(
                &h,
                &set(
                    &c,
                    "settles",
                    json!({"amount": 500, "currency": "EUR", "fx": 1}),
                ),
            )
            .await,
            "token-claims-invalid",
        ),
        case(
            "`priced_on` in a lowercase currency",
            f.sign(
                &h,
                &set(&c, "priced_on", json!({"amount": 4999, "currency": "eur"})),
            )
            .await,
            "token-claims-invalid",
        ),
        case(
            "claims that are not an object",
            f.sign_bytes(&serde_json::to_vec(&h).unwrap(), b"\"coupons\"")
                .await,
            "token-claims-invalid",
        ),
        case(
            "a duplicated claim",
            f.sign_bytes(
                format!(r#"{{"alg":"ES384","typ":"cap+jwt","kid":"{kid}"}}"#).as_bytes(),
                serde_json::to_string(&c)
                    .unwrap()
                    .replacen('{', r#"{"sub":"c_mallory","#, 1)
                    .as_bytes(),
            )
            .await,
            "token-claims-invalid",
        ),
        case(
            "another order",
            f.sign(&h, &set(&c, "order_processing_id", json!("op_other")))
                .await,
            "order-mismatch",
        ),
        case(
            "a capability of another issuer",
            f.sign(&h, &set(&c, "capabilities", json!(["payments:capture"])))
                .await,
            "token-capability-rejected",
        ),
        case(
            "one allowed and one foreign capability",
            f.sign(
                &h,
                &set(
                    &c,
                    "capabilities",
                    json!(["coupons:redeem", "points:redeem"]),
                ),
            )
            .await,
            "token-capability-rejected",
        ),
        case(
            "no capability",
            f.sign(&h, &set(&c, "capabilities", json!([]))).await,
            "token-claims-invalid",
        ),
    ]
}

fn base64_decode(segment: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap()
}

fn flip_last(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    if let Some(last) = bytes.last_mut() {
        *last ^= 0x01;
    }
    bytes
}

#[tokio::test]
async fn the_valid_fixture_token_verifies() {
    let f = Fixture::new().await;
    let verified = f
        .verify(&f.valid().await)
        .await
        .expect("the reference token must verify");
    assert_eq!(verified.claims().order_processing_id, ORDER);
    assert_eq!(verified.claims().iss, "coupons");
}

#[tokio::test]
async fn every_hostile_or_broken_token_is_rejected_with_its_own_problem_type() {
    let f = Fixture::new().await;
    let mut cases = header_cases(&f).await;
    cases.extend(form_cases(&f).await);
    cases.extend(claim_cases(&f).await);
    let mut failures = Vec::new();
    for Case {
        why,
        token,
        problem,
    } in &cases
    {
        match f.verify(token).await {
            Ok(_) => failures.push(format!(
                "{why}: accepted, but must be rejected with `{problem}`"
            )),
            Err(e) if e.problem_type() != *problem => {
                failures.push(format!(
                    "{why}: rejected as `{}` ({e}), expected `{problem}`",
                    e.problem_type()
                ));
            }
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_token_expires_once_the_leeway_has_passed() {
    let f = Fixture::new().await;
    let token = f.valid().await;
    f.clock.advance(Duration::from_secs(120 + 4));
    assert!(
        f.verify(&token).await.is_ok(),
        "still inside the 5 s leeway"
    );
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(
        f.verify(&token).await.unwrap_err().problem_type(),
        "token-expired"
    );
}

#[tokio::test]
async fn the_first_failing_check_in_design_order_is_reported() {
    let f = Fixture::new().await;
    // Wrong audience and expired: the audience step comes first.
    let claims = set(&set(&f.claims(), "aud", json!("x")), "exp", json!(NOW - 10));
    let token = f.sign(&f.header().await, &claims).await;
    assert_eq!(
        f.verify(&token).await.unwrap_err().problem_type(),
        "token-audience-invalid"
    );
    // An unknown issuer is reported before the signature is even looked at.
    let token = with_segment(
        &f.sign(&f.header().await, &set(&f.claims(), "iss", json!("x")))
            .await,
        2,
        &b64(&[0; 96]),
    );
    assert_eq!(
        f.verify(&token).await.unwrap_err().problem_type(),
        "token-issuer-unknown"
    );
}

/// An issuer whose JWKS cannot be fetched; the cause names an internal address.
struct DownKeys;

#[async_trait::async_trait]
impl ctr_token::KeyResolver for DownKeys {
    async fn key(
        &self,
        _iss: &str,
        _kid: &str,
    ) -> Result<std::sync::Arc<ctr_token::VerificationKey>, ctr_token::KeyError> {
        Err(ctr_token::KeyError::Unavailable(
            "https://coupons.internal:8443/.well-known/jwks.json: connection refused".into(),
        ))
    }
}

#[tokio::test]
async fn unavailable_issuer_keys_are_named_without_the_internal_address() {
    let f = Fixture::new().await;
    let verifier = ctr_token::Verifier::new(crate::fixture::policy(), DownKeys, f.clock.clone());
    let error = verifier.verify(&f.valid().await, ORDER).await.unwrap_err();
    assert_eq!(error.problem_type(), "issuer-keys-unavailable");
    let message = error.to_string();
    assert!(message.contains("`coupons`"), "{message}");
    assert!(
        !message.contains("internal") && !message.contains("refused"),
        "{message}"
    );
}
