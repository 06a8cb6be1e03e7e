//! `VaultKms` against the real OpenBao server (`ctr_kms::testing::OpenBao`: `bao server -dev
//! -dev-tls` over TLS with the CA it writes). `eval "$(tests/kms/setup.sh)"`;
//! under `CI=true` the tests fail without it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use ctr_kms::testing::{OpenBao, verifies};
use ctr_kms::{Kms, KmsError, VaultKms, VaultSettings};
use serde_json::{Value, json};

fn vault(bao: &OpenBao, settings: VaultSettings) -> VaultKms {
    VaultKms::new(settings, bao.http.clone())
}

#[tokio::test]
async fn transit_keys_sign_rotate_and_retire_through_the_kms_trait() {
    let Some(bao) = OpenBao::start().await else {
        return;
    };
    assert!(bao.settings().validate().is_ok());
    let kms = vault(&bao, bao.settings());
    let first = kms.create_key("coupons-signing").await.unwrap();
    assert!(first.as_str().starts_with("coupons-signing.v1."), "{first}");
    assert_eq!(
        kms.create_key("coupons-signing").await.unwrap(),
        first,
        "creating again changes nothing"
    );
    assert_eq!(kms.primary_version("coupons-signing").await.unwrap(), first);
    let message = b"the header and claims a signature covers";
    let der = kms.sign("coupons-signing", &first, message).await.unwrap();
    let published = kms.public_keys("coupons-signing").await.unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].version, first);
    assert!(verifies(&published[0].sec1, message, &der));
    assert!(!verifies(&published[0].sec1, b"another message", &der));

    // Rotation: the new version signs, both are published, the old one still verifies.
    let second = kms.rotate("coupons-signing").await.unwrap();
    assert!(
        second.as_str().starts_with("coupons-signing.v2."),
        "{second}"
    );
    assert_eq!(
        kms.primary_version("coupons-signing").await.unwrap(),
        second
    );
    let published = kms.public_keys("coupons-signing").await.unwrap();
    assert_eq!(
        published
            .iter()
            .map(|k| k.version.clone())
            .collect::<Vec<_>>(),
        [second.clone(), first.clone()],
        "newest first"
    );
    let der2 = kms.sign("coupons-signing", &second, message).await.unwrap();
    assert!(verifies(&published[0].sec1, message, &der2));
    assert!(verifies(&published[1].sec1, message, &der));

    // Retirement: the primary cannot be retired; the oldest can, and then neither signs nor
    // is published.
    assert!(
        kms.disable_version("coupons-signing", &second)
            .await
            .is_err()
    );
    kms.disable_version("coupons-signing", &first)
        .await
        .unwrap();
    let published = kms.public_keys("coupons-signing").await.unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].version, second);
    assert!(matches!(
        kms.sign("coupons-signing", &first, message).await,
        Err(KmsError::VersionNotFound { .. })
    ));
    // A version of another key, an unknown key, a key of another type.
    assert!(matches!(
        kms.sign("points-signing", &second, message).await,
        Err(KmsError::VersionNotFound { .. })
    ));
    assert!(matches!(
        kms.primary_version("points-signing").await,
        Err(KmsError::KeyNotFound(_))
    ));
    bao.root("POST", "transit/keys/aes", json!({"type": "aes256-gcm96"}))
        .await;
    assert!(matches!(
        kms.primary_version("aes").await,
        Err(KmsError::Backend(_))
    ));
}

#[tokio::test]
async fn approle_logs_in_and_logs_in_again_when_its_token_is_revoked() {
    let Some(bao) = OpenBao::start().await else {
        return;
    };
    bao.root("POST", "sys/auth/approle", json!({"type": "approle"}))
        .await;
    bao.root(
        "POST",
        "sys/policies/acl/coupons-signer",
        json!({"policy": "path \"transit/keys/coupons-signing\" { capabilities = [\"read\", \"create\", \"update\"] }\npath \"transit/sign/coupons-signing/*\" { capabilities = [\"update\"] }"}),
    )
    .await;
    bao.root(
        "POST",
        "auth/approle/role/coupons",
        json!({"token_policies": ["coupons-signer"], "token_ttl": "1h"}),
    )
    .await;
    let role_id = bao
        .root("GET", "auth/approle/role/coupons/role-id", Value::Null)
        .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao
        .root("POST", "auth/approle/role/coupons/secret-id", json!({}))
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_file = bao.dir.path().join("secret-id");
    std::fs::write(&secret_file, &secret_id).unwrap();
    let settings = VaultSettings {
        token_file: None,
        role_id: Some(role_id),
        secret_id_file: Some(secret_file),
        ..bao.settings()
    };
    assert!(settings.validate().is_ok());
    let kms = vault(&bao, settings);
    let version = kms.create_key("coupons-signing").await.unwrap();
    kms.sign("coupons-signing", &version, b"m").await.unwrap();
    // The policy allows this key only.
    assert!(matches!(
        kms.create_key("points-signing").await,
        Err(KmsError::Backend(_))
    ));
    // Revoke every token AppRole issued: the next call is refused, logs in again and succeeds.
    bao.root(
        "POST",
        "sys/leases/revoke-prefix/auth/approle/login",
        json!({}),
    )
    .await;
    kms.sign("coupons-signing", &version, b"m").await.unwrap();
}

#[tokio::test]
async fn settings_that_cannot_log_in_are_refused_and_an_unreachable_server_is_unavailable() {
    let base = VaultSettings {
        addr: "https://127.0.0.1:1".into(),
        mount: "transit".into(),
        namespace: None,
        token_file: Some("/nonexistent".into()),
        role_id: None,
        secret_id_file: None,
        approle_mount: "approle".into(),
        ca_file: None,
    };
    assert!(base.validate().is_ok());
    for addr in ["vault:8200", "http://vault:8200"] {
        let settings = VaultSettings {
            addr: addr.into(),
            ..base.clone()
        };
        assert!(settings.validate().is_err(), "{addr}");
    }
    assert!(
        VaultSettings {
            token_file: None,
            ..base.clone()
        }
        .validate()
        .is_err()
    );
    assert!(
        VaultSettings {
            role_id: Some("r".into()),
            ..base.clone()
        }
        .validate()
        .is_err(),
        "a token file and an AppRole at once"
    );
    let Some(bao) = OpenBao::start().await else {
        return;
    };
    let kms = vault(
        &bao,
        VaultSettings {
            addr: "https://127.0.0.1:1".into(),
            ..bao.settings()
        },
    );
    assert!(matches!(
        kms.primary_version("coupons-signing").await,
        Err(KmsError::Unavailable(_))
    ));
    let wrong_token = vault(
        &bao,
        VaultSettings {
            token_file: Some(bao.token_file("not-a-token")),
            ..bao.settings()
        },
    );
    assert!(matches!(
        wrong_token.create_key("coupons-signing").await,
        Err(KmsError::Backend(_))
    ));
}
