//! The golden tokens in `testdata/tokens/` verify (or fail) as recorded, with a fixed clock,
//! and regenerating them gives the same bytes.

use std::path::PathBuf;
use std::sync::Arc;

use ctr_token::{FakeClock, JwkSet, KeySet, StaticKeys, Verifier, VerifierPolicy};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Golden {
    pub now: i64,
    pub order_processing_id: String,
    pub audience: String,
    pub jwks: std::collections::HashMap<String, JwkSet>,
    pub tokens: Vec<GoldenToken>,
}

#[derive(Deserialize)]
pub struct GoldenToken {
    pub name: String,
    pub token: String,
    pub expect: String,
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokens/golden.json")
}

/// The committed golden tokens.
pub fn load() -> Golden {
    serde_json::from_str(&std::fs::read_to_string(golden_path()).unwrap()).unwrap()
}

#[tokio::test]
async fn golden_tokens_verify_as_recorded() {
    let golden = load();
    let mut keys = StaticKeys::default();
    let mut policy = VerifierPolicy::new(golden.audience);
    for (iss, set) in &golden.jwks {
        keys = keys.with(iss.clone(), KeySet::from_jwks(set).unwrap());
        let capability = if iss == "payments" {
            "payments:capture".to_owned()
        } else {
            format!("{iss}:redeem")
        };
        policy = policy.issuer(iss.clone(), &[capability.as_str()]);
    }
    let verifier = Verifier::new(policy, keys, Arc::new(FakeClock::at_secs(golden.now)));
    assert_eq!(golden.tokens.len(), 9);
    for t in golden.tokens {
        let outcome = match verifier.verify(&t.token, &golden.order_processing_id).await {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.problem_type().to_owned(),
        };
        assert_eq!(outcome, t.expect, "golden token `{}`", t.name);
    }
}

/// The file with every token's signature cut off: what must not change when regenerating
/// (ECDSA signatures are randomized; the keys, headers and claims are not).
fn without_signatures(golden: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(golden).unwrap();
    for token in value["tokens"].as_array_mut().unwrap() {
        let signed = token["token"].as_str().unwrap();
        token["token"] = signed.rsplit_once('.').unwrap().0.into();
    }
    value.to_string()
}

#[test]
fn regenerating_the_golden_tokens_gives_the_same_keys_and_claims() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ctr-golden"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let fresh = std::fs::read_to_string(dir.path().join("golden.json")).unwrap();
    let committed = std::fs::read_to_string(golden_path()).unwrap();
    assert!(
        without_signatures(&fresh) == without_signatures(&committed),
        "testdata/tokens/golden.json is stale: run ctr-golden"
    );
}
