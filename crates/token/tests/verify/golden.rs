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
