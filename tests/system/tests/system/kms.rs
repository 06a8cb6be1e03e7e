//! The domains sign through real KMSs: OpenBao's transit engine (`bao server -dev -dev-tls`,
//! `ctr_kms::testing::OpenBao`), AWS KMS as moto's server emulates it (`testing::Moto`) and
//! a SoftHSM2 token through PKCS#11. For each: a whole checkout on tokens it signed (Authlib's
//! JOSE verifies them against the domain's JWKS), a rotation done in the backend that the
//! relay picks up while tokens signed before it still check out, and a KMS that stops
//! answering mid-run (503 `kms-unavailable`, no hold left placed, signing again once it
//! answers; the token instead loses the process's login, and the domain logs in again
//! before it signs). A domain that starts before its KMS answers is unready, naming `kms`, until it
//! does. Needs `CTR_TEST_BAO`, `CTR_TEST_MOTO` with AWS credentials, and `SOFTHSM2_CONF`
//! (guide: Tests); CI sets them.

use std::sync::Arc;
use std::time::Duration;

use ctr_kms::testing::{Moto, OpenBao};
use ctr_kms::{Kms, KmsConfig, Pkcs11Settings};
use ctr_system_tests::{World, domain_settings, problem_type};
use serde_json::{Value, json};

/// A KMS the domains sign through, and what an operator does to it.
enum Backend {
    OpenBao(OpenBao),
    Moto(Moto),
    SoftHsm(Pkcs11Settings),
}

impl Backend {
    fn config(&self) -> KmsConfig {
        match self {
            Self::OpenBao(bao) => KmsConfig::Vault(bao.settings()),
            Self::Moto(moto) => KmsConfig::Aws(moto.settings()),
            Self::SoftHsm(settings) => KmsConfig::Pkcs11(settings.clone()),
        }
    }

    /// Rotates `key` as an operator would: in OpenBao its own `rotate`; in AWS and on the
    /// token a new version made by a client of its own (what `<domain> keys rotate` runs).
    async fn rotate(&self, key: &str) {
        match self {
            Self::OpenBao(bao) => {
                bao.root("POST", &format!("transit/keys/{key}/rotate"), json!({}))
                    .await;
            }
            other => {
                let operator: Arc<dyn Kms> = other.config().build().await.unwrap();
                operator.rotate(key).await.unwrap();
            }
        }
    }

    /// Makes the KMS stop answering (the network servers hang); the token, a library in
    /// process, loses the process's login instead, as after an HSM restart.
    fn pause(&self) {
        match self {
            Self::OpenBao(bao) => bao.pause(),
            Self::Moto(moto) => moto.pause(),
            Self::SoftHsm(settings) => ctr_kms::testing::pkcs11_log_out(settings),
        }
    }

    fn resume(&self) {
        match self {
            Self::OpenBao(bao) => bao.resume(),
            Self::Moto(moto) => moto.resume(),
            Self::SoftHsm(_) => {}
        }
    }
}

fn kid(token: &str) -> String {
    ctr_system_tests::jws_part(token, 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned()
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

/// Whether `token`'s signature is in its one accepted form: `s` in the lower half of the
/// group order, whatever the KMS answered.
fn canonical(token: &str) -> bool {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.rsplit('.').next().unwrap())
        .unwrap();
    p384::ecdsa::Signature::from_slice(&raw)
        .unwrap()
        .normalize_s()
        .is_none()
}

/// The `n` of a `<key>.v<n>.<fingerprint>` kid.
fn version_number(kid: &str) -> u64 {
    kid.split('.')
        .nth(1)
        .unwrap()
        .trim_start_matches('v')
        .parse()
        .unwrap()
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
    if let Some(bao) = OpenBao::start().await {
        signs_rotates_and_survives_a_hung_kms(Backend::OpenBao(bao)).await;
    }
}

#[tokio::test]
async fn domains_sign_through_aws_kms_rotate_there_and_survive_a_hung_kms() {
    if let Some(moto) = Moto::start().await {
        signs_rotates_and_survives_a_hung_kms(Backend::Moto(moto)).await;
    }
}

#[tokio::test]
async fn domains_sign_through_a_pkcs11_token_rotate_there_and_survive_a_lost_login() {
    if let Some(settings) = ctr_kms::testing::softhsm() {
        signs_rotates_and_survives_a_hung_kms(Backend::SoftHsm(settings)).await;
    }
}

async fn signs_rotates_and_survives_a_hung_kms(backend: Backend) {
    let settings = ctr_domain_kit::DomainSettings {
        kms: Some(backend.config()),
        ..domain_settings()
    };
    let world = World::start_custom(settings, |_| {}).await;

    // A whole checkout on tokens the KMS signed.
    let first = world.open_order("c_alice", 4999).await;
    let old_tokens = world.three_tokens(&first, "c_alice", "pm_alice_visa").await;
    for (token, key) in old_tokens.iter().zip(["coupons", "points", "payments"]) {
        assert!(
            kid(token).starts_with(&format!("{key}-signing.v")),
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
    let (status, body) = world.checkout(&first, &old_tokens).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("completed")),
        "{body}"
    );

    // Tokens confirmed before the rotation, checked out after it.
    let second = world.open_order("c_alice", 4999).await;
    let before_rotation = world
        .three_tokens(&second, "c_alice", "pm_alice_visa")
        .await;
    let old_kid = kid(&before_rotation[1]);
    let n = version_number(&old_kid);

    // Rotate the points key in the backend: its JWKS publishes the new version first and
    // keeps the old one, new tokens carry the new version, and the relay verifies them after
    // its unknown-kid refetch. (A SoftHSM2 token outlives one run of the suite: versions are
    // counted from the one found.)
    backend.rotate("points-signing").await;
    // AWS: every replica lists the ring again within its refresh (1 s), and only then does
    // the new version sign.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, jwks) = world
        .get(world.points.running.url("/.well-known/jwks.json"))
        .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(version_number(kids[0]), n + 1, "{jwks}");
    assert!(kids.contains(&old_kid.as_str()), "{jwks}");
    let third = world.open_order("c_alice", 4999).await;
    let new_tokens = world.three_tokens(&third, "c_alice", "pm_alice_visa").await;
    assert_eq!(kid(&new_tokens[1]), kids[0]);
    for token in old_tokens.iter().chain(&before_rotation).chain(&new_tokens) {
        assert!(
            canonical(token),
            "one accepted form (low s): {}",
            kid(token)
        );
    }
    world.clock.advance(Duration::from_secs(6)); // past the relay's JWKS refetch interval
    let (status, body) = world.checkout(&third, &new_tokens).await;
    assert_eq!(
        status, 200,
        "a new version's token after the relay's refetch: {body}"
    );
    let (status, body) = world.checkout(&second, &before_rotation).await;
    assert_eq!(status, 200, "a token signed before the rotation: {body}");

    // The KMS hangs: the confirmation answers 503 `kms-unavailable` once the call times out,
    // and leaves no hold placed.
    let fourth = world.open_order("c_alice", 4999).await;
    let before = held(&world).await;
    backend.pause();
    let (status, body) = world
        .confirm_payment(&fourth, "c_alice", "pm_alice_visa", 4999)
        .await;
    backend.resume();
    if let Backend::SoftHsm(_) = backend {
        // The domain logs in again before it signs: the confirmation does not notice.
        assert_eq!(status, 201, "{body}");
        assert_eq!(held(&world).await, before + 1);
        return;
    }
    assert_eq!(
        (status, problem_type(&body)),
        (503, "kms-unavailable"),
        "{body}"
    );
    assert_eq!(held(&world).await, before, "no hold left placed");
    // Once it answers again, the domain signs again.
    let (status, body) = world
        .confirm_payment(&fourth, "c_alice", "pm_alice_visa", 4999)
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
        kms: Some(KmsConfig::Vault(bao.settings())),
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

#[tokio::test]
async fn a_confirmation_whose_client_gives_up_while_the_kms_hangs_leaves_no_hold_behind() {
    let Some(bao) = OpenBao::start().await else {
        return;
    };
    let settings = ctr_domain_kit::DomainSettings {
        kms: Some(KmsConfig::Vault(bao.settings())),
        ..domain_settings()
    };
    let world = World::start_custom(settings, |_| {}).await;
    let order = world.open_order("c_alice", 4999).await;
    let before = held(&world).await;

    // The hold is placed, then the signature hangs; the client gives up and goes.
    bao.pause();
    let gave_up = world
        .customer
        .post(
            world
                .payments
                .running
                .url("/service/v1/payments/confirmations"),
        )
        .json(
            &json!({"order_processing_id": order, "payment_method_id": "pm_alice_visa",
                      "amount": {"amount": 4999, "currency": "EUR"}}),
        )
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up: {gave_up:?}");
    assert_eq!(
        held(&world).await,
        before + 1,
        "the hold waits for its token"
    );

    // The KMS answers again: the token that nobody waits for is dropped and its hold given
    // back (or, had the KMS stayed silent, the signing timeout would end it the same way).
    bao.resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while held(&world).await != before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hold of a dropped confirmation is still held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the domain signs again.
    let (status, body) = world
        .confirm_payment(&order, "c_alice", "pm_alice_visa", 4999)
        .await;
    assert_eq!(status, 201, "{body}");
}
