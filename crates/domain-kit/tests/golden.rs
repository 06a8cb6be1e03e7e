//! The committed golden tokens are what `ctr-golden` writes today (they are verified in
//! `ctr-token`'s verify suite; this checks they are not stale).

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::path::PathBuf;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokens/golden.json")
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
