//! The domains sign through a real KMS: OpenBao's transit engine (`bao server -dev -dev-tls`,
//! `ctr_kms::testing::OpenBao`). A whole checkout, a rotation done in OpenBao that the relay
//! picks up, a KMS that hangs mid-run (503 `kms-unavailable`, no hold left placed, the domain
//! signs again once it answers), and a domain that starts before its KMS answers (unready,
//! naming `kms`, until it does). Needs `CTR_TEST_BAO` (`tests/kms/setup.sh`); CI sets it.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctr_kms::KmsConfig;
use ctr_kms::testing::OpenBao;
use ctr_system_tests::{World, domain_settings, problem_type};
use serde_json::{Value, json};

fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// Authlib's verdict on `token` against `jwks` (tests/oidc/jws_verify.py): the header and
/// claims as JSON, or its refusal. `None` without `CTR_TEST_AUTHLIB_PYTHON` outside CI.
fn authlib_verify(jwks: &Value, token: &str) -> Option<Result<String, String>> {
    let python = ctr_system_tests::authlib_python("the Authlib check of KMS-signed tokens")?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../oidc/jws_verify.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(jwks.to_string())
        .arg(token)
        .output()
        .unwrap();
    Some(if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    })
}

async fn held(world: &World) -> i64 {
    let (n,): (i64,) = world
        .payments
        .state
        .engine
        .store()
        .fetch_one(ctr_store::query_as(
            "SELECT COUNT(*) FROM holds WHERE state = 'held'",
        ))
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn domains_sign_through_openbao_rotate_there_and_survive_a_hung_kms() {
    let Some(bao) = OpenBao::start().await else {
        return;
    };
    let settings = ctr_domain_kit::DomainSettings {
        kms: KmsConfig::Vault(bao.settings()),
        ..domain_settings()
    };
    let world = World::start_custom(settings, |_| {}).await;

    // A whole checkout on tokens OpenBao signed.
    let first = world.open_order("c_alice", 4999).await;
    let old_tokens = world.three_tokens(&first, "c_alice", "pm_alice_visa").await;
    for (token, key) in old_tokens.iter().zip(["coupons", "points", "payments"]) {
        assert!(
            kid(token).starts_with(&format!("{key}-signing.v1.")),
            "{}",
            kid(token)
        );
    }
    // Authlib's JOSE verifies them against the domain's JWKS too, and refuses a forgery.
    let (_, coupons_jwks) = world
        .get(world.coupons.running.url("/.well-known/jwks.json"))
        .await;
    if let Some(verified) = authlib_verify(&coupons_jwks, &old_tokens[0]) {
        let verified: Value = serde_json::from_str(&verified.unwrap()).unwrap();
        assert_eq!(verified["claims"]["iss"], "coupons");
        assert_eq!(verified["header"]["alg"], "ES384");
        let mut forged = old_tokens[0].clone();
        forged.pop();
        forged.push(if old_tokens[0].ends_with('A') {
            'B'
        } else {
            'A'
        });
        assert!(authlib_verify(&coupons_jwks, &forged).unwrap().is_err());
    }
    let second = world.open_order("c_alice", 4999).await;
    let (status, body) = world.checkout(&first, &old_tokens).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("completed")),
        "{body}"
    );

    // Rotate the points key in OpenBao: its JWKS publishes both versions, new tokens carry
    // v2, and the relay verifies them after its unknown-kid refetch.
    bao.root("POST", "transit/keys/points-signing/rotate", json!({}))
        .await;
    let (_, jwks) = world
        .get(world.points.running.url("/.well-known/jwks.json"))
        .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "{jwks}");
    assert!(kids[0].starts_with("points-signing.v2.") && kids[1].starts_with("points-signing.v1."));
    let new_tokens = world
        .three_tokens(&second, "c_alice", "pm_alice_visa")
        .await;
    assert!(kid(&new_tokens[1]).starts_with("points-signing.v2."));
    world.clock.advance(Duration::from_secs(6)); // past the relay's JWKS refetch interval
    let (status, body) = world.checkout(&second, &new_tokens).await;
    assert_eq!(status, 200, "a v2 token after the relay's refetch: {body}");

    // The KMS hangs: the confirmation answers 503 `kms-unavailable` once the call times out,
    // and leaves no hold placed.
    let third = world.open_order("c_alice", 4999).await;
    let before = held(&world).await;
    bao.pause();
    let (status, body) = world
        .confirm_payment(&third, "c_alice", "pm_alice_visa", 4999)
        .await;
    bao.resume();
    assert_eq!(
        (status, problem_type(&body)),
        (503, "kms-unavailable"),
        "{body}"
    );
    assert_eq!(held(&world).await, before, "no hold left placed");
    // Once it answers again, the domain signs again.
    let (status, body) = world
        .confirm_payment(&third, "c_alice", "pm_alice_visa", 4999)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(held(&world).await, before + 1);
}

#[tokio::test]
async fn a_domain_whose_kms_does_not_answer_at_start_is_unready_until_it_does() {
    let Some(bao) = OpenBao::start().await else {
        return;
    };
    let world = World::start().await;
    let settings = ctr_domain_kit::DomainSettings {
        kms: KmsConfig::Vault(bao.settings()),
        ..world.domain_settings.clone()
    };
    bao.pause();
    let replica = world.points_replica(settings).await;
    let readyz = format!("https://127.0.0.1:{}/admin/v1/readyz", replica.admin.port());
    let (status, body): (u16, Value) = {
        let response = world.anonymous().get(&readyz).send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string().contains("kms"),
        "readiness names the KMS: {body}"
    );
    bao.resume();
    world.wait_until_admin_ready(replica.admin).await;
}
