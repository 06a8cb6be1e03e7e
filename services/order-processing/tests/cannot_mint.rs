//! The relay cannot mint: no signing key, no KMS client, no issuing code can reach its binary.
//! Its dependency closure is taken over every dependency any feature could switch on (cargo
//! unifies features across the packages of one build), so this holds for whatever build a
//! feature of another package might leak into.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly"
)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// What only an issuer may link.
const ISSUING: [&str; 2] = ["ctr-kms", "ctr-domain-kit"];

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version=1", "--locked"])
        .arg("--manifest-path")
        .arg(manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Every package reachable from `root` through normal and build dependencies, optional ones
/// included; each with the path that reaches it.
fn closure(metadata: &Value, root: &str) -> HashMap<String, Vec<String>> {
    let mut dependencies: HashMap<&str, Vec<&str>> = HashMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let deps = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .map(|d| d["name"].as_str().unwrap());
        dependencies
            .entry(package["name"].as_str().unwrap())
            .or_default()
            .extend(deps);
    }
    let mut reached = HashMap::from([(root.to_owned(), vec![root.to_owned()])]);
    let mut pending = vec![root.to_owned()];
    while let Some(name) = pending.pop() {
        let path = reached[&name].clone();
        for dep in dependencies.get(name.as_str()).into_iter().flatten() {
            if !reached.contains_key(*dep) {
                let mut to = path.clone();
                to.push((*dep).to_owned());
                reached.insert((*dep).to_owned(), to);
                pending.push((*dep).to_owned());
            }
        }
    }
    reached
}

#[test]
fn no_feature_of_any_package_can_link_issuing_into_the_relay() {
    let metadata = metadata();
    let reached = closure(&metadata, "order-processing");
    let leaks: BTreeSet<String> = ISSUING
        .iter()
        .filter_map(|name| reached.get(*name).map(|path| path.join(" -> ")))
        .collect();
    assert!(leaks.is_empty(), "the relay can link issuing: {leaks:?}");
    // The closure is real: it reaches the verifier and its crypto.
    for expected in ["ctr-token", "jsonwebtoken", "aws-lc-rs"] {
        assert!(reached.contains_key(expected), "{expected} not reached");
    }
}

#[test]
fn the_issuers_do_link_issuing() {
    let metadata = metadata();
    for domain in ["coupons", "points", "payments"] {
        let reached = closure(&metadata, domain);
        for name in ISSUING {
            assert!(reached.contains_key(name), "{domain} does not reach {name}");
        }
    }
}
