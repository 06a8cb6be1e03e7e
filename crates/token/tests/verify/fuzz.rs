//! Fuzzing the compact parser and the verifier with proptest (a bounded number of cases, so it
//! runs in every `cargo test`: proptest's 256 per property; raise `PROPTEST_CASES` for a longer hunt): whatever the input, the
//! verifier answers (never panics), and a refusal is a typed error with a problem type and a
//! 4xx status whose message does not repeat the token.

use proptest::prelude::*;

use crate::fixture::{Fixture, b64};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Verifies `token` and checks the shape of a refusal; answers whether it verified.
fn check(
    runtime: &tokio::runtime::Runtime,
    fixture: &Fixture,
    token: &str,
) -> Result<bool, TestCaseError> {
    match runtime.block_on(fixture.verify(token)) {
        Ok(_) => Ok(true),
        Err(error) => {
            prop_assert!(!error.problem_type().is_empty());
            prop_assert!((400..500).contains(&error.http_status()), "{error:?}");
            let message = error.to_string();
            prop_assert!(
                token.len() < 12 || !message.contains(token),
                "the message repeats the token: {message}"
            );
            Ok(false)
        }
    }
}

/// A JSON value of any shape, up to a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(Into::into),
        any::<i64>().prop_map(Into::into),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Into::into),
        ".{0,24}".prop_map(Into::into),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Into::into),
            prop::collection::btree_map(
                prop_oneof![
                    Just("alg".to_owned()),
                    Just("typ".to_owned()),
                    Just("kid".to_owned()),
                    Just("iss".to_owned()),
                    Just("aud".to_owned()),
                    Just("exp".to_owned()),
                    Just("jti".to_owned()),
                    Just("settles".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_strings_are_refused_without_a_panic(token in ".{0,600}") {
        let runtime = runtime();
        let fixture = runtime.block_on(Fixture::new());
        prop_assert!(!check(&runtime, &fixture, &token)?);
    }

    #[test]
    fn a_valid_token_with_any_byte_changed_cut_or_extended_is_refused(
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        edit in 0u8..3,
    ) {
        let runtime = runtime();
        let fixture = runtime.block_on(Fixture::new());
        let valid = runtime.block_on(fixture.valid());
        prop_assert!(check(&runtime, &fixture, &valid)?, "the untouched token verifies");
        let mut bytes = valid.clone().into_bytes();
        let at = position.index(bytes.len());
        match edit {
            0 => bytes[at] = byte,
            1 => bytes.truncate(at),
            _ => bytes.insert(at, byte),
        }
        let Ok(mutated) = String::from_utf8(bytes) else { return Ok(()) };
        if mutated != valid {
            // A change in the signature's last character may only flip unused bits of base64:
            // such a token still carries the same signature and may verify; anything else not.
            let verified = check(&runtime, &fixture, &mutated)?;
            prop_assert!(!verified || mutated.len() == valid.len(), "{edit}: a changed token verified");
        }
    }

    #[test]
    fn any_signed_header_and_claims_are_verified_or_refused_without_a_panic(
        header in json(),
        claims in json(),
    ) {
        let runtime = runtime();
        let fixture = runtime.block_on(Fixture::new());
        let token = runtime.block_on(fixture.sign(&header, &claims));
        check(&runtime, &fixture, &token)?;
        let unsigned = format!("{}.{}.", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        prop_assert!(!check(&runtime, &fixture, &unsigned)?);
    }
}
