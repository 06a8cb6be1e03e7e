//! `AwsKms` against moto's server mode (`ctr_kms::testing::Moto`: AWS KMS emulated, over TLS
//! with a private CA), through the SDK and the standard AWS credentials chain. Needs
//! `CTR_TEST_MOTO` and `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`; CI sets them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use ctr_kms::testing::{Moto, verifies};
use ctr_kms::{AwsSettings, KmsConfig, KmsError};

#[tokio::test]
async fn aws_keys_sign_rotate_behind_aliases_and_retire() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let kms = KmsConfig::Aws(moto.settings()).build().await.unwrap();
    let key = "coupons-signing";
    assert!(matches!(
        kms.primary_version(key).await,
        Err(KmsError::KeyNotFound(_))
    ));
    let first = kms.create_key(key).await.unwrap();
    assert!(first.as_str().starts_with("coupons-signing.v1."), "{first}");
    assert_eq!(
        kms.create_key(key).await.unwrap(),
        first,
        "creating again changes nothing"
    );
    let message = b"the header and claims a signature covers";
    let der = kms.sign(key, &first, message).await.unwrap();
    let published = kms.public_keys(key).await.unwrap();
    assert_eq!(published.len(), 1);
    assert!(
        verifies(&published[0].sec1, message, &der),
        "ECDSA_SHA_384 over the raw message, DER"
    );
    assert!(!verifies(&published[0].sec1, b"another message", &der));

    // A second replica (its own client and cache) sees the same ring, and a rotation it
    // makes is what the first signs with once it lists the ring again.
    let replica = KmsConfig::Aws(moto.settings()).build().await.unwrap();
    assert_eq!(replica.primary_version(key).await.unwrap(), first);
    let second = replica.rotate(key).await.unwrap();
    assert!(
        second.as_str().starts_with("coupons-signing.v2."),
        "{second}"
    );
    // Once every replica has listed the ring again (the settings' refresh, 1 s), the new
    // version signs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(kms.primary_version(key).await.unwrap(), second);
    let published = kms.public_keys(key).await.unwrap();
    assert_eq!(
        published
            .iter()
            .map(|k| k.version.clone())
            .collect::<Vec<_>>(),
        [second.clone(), first.clone()],
        "newest first, the old version still published"
    );
    let der2 = kms.sign(key, &second, message).await.unwrap();
    assert!(verifies(&published[0].sec1, message, &der2));
    assert!(!verifies(&published[1].sec1, message, &der2));

    assert!(
        kms.disable_version(key, &second).await.is_err(),
        "never the primary"
    );
    kms.disable_version(key, &first).await.unwrap();
    assert_eq!(kms.public_keys(key).await.unwrap().len(), 1);
    assert!(matches!(
        kms.sign(key, &first, message).await,
        Err(KmsError::VersionNotFound { .. })
    ));
    assert!(format!("{kms:?}").contains("alias/ctr/"));
}

#[tokio::test]
async fn a_rotation_is_published_by_every_replica_before_any_replica_signs_with_it() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let key = "points-signing";
    let signer = KmsConfig::Aws(moto.settings()).build().await.unwrap();
    let first = signer.create_key(key).await.unwrap();
    // Another replica has listed the ring (and keeps it for the refresh, 1 s).
    let publisher = KmsConfig::Aws(moto.settings()).build().await.unwrap();
    assert_eq!(publisher.public_keys(key).await.unwrap().len(), 1);

    let second = signer.rotate(key).await.unwrap();
    let started = Instant::now();
    let mut signed_with = first.clone();
    while started.elapsed() < Duration::from_millis(2500) {
        signed_with = signer.primary_version(key).await.unwrap();
        let published: Vec<_> = publisher
            .public_keys(key)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.version)
            .collect();
        assert!(
            published.contains(&signed_with),
            "{signed_with} signs {:?} after the rotation while another replica publishes only {published:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(signed_with, second, "the new version signs in the end");
}

#[tokio::test]
async fn replicas_creating_the_key_at_once_agree_on_one() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(KmsConfig::Aws(moto.settings()).build().await.unwrap());
    }
    let made =
        futures::future::join_all(replicas.iter().map(|kms| kms.create_key("points-signing")))
            .await;
    let first = made[0].as_ref().unwrap().clone();
    for version in &made {
        assert_eq!(version.as_ref().unwrap(), &first, "{made:?}");
    }
    assert_eq!(
        replicas[0]
            .public_keys("points-signing")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_hung_kms_is_unavailable_within_the_timeout_and_settings_are_checked() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let kms = KmsConfig::Aws(moto.settings())
        .build_with_timeout(Duration::from_secs(2))
        .await
        .unwrap();
    let version = kms.create_key("payments-signing").await.unwrap();
    moto.pause();
    let started = Instant::now();
    let outcome = kms.sign("payments-signing", &version, b"m").await;
    moto.resume();
    assert!(
        matches!(outcome, Err(KmsError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(kms.sign("payments-signing", &version, b"m").await.is_ok());

    // A CA that does not sign the endpoint's certificate: nothing is trusted by default.
    let untrusted = AwsSettings {
        ca_file: None,
        ..moto.settings()
    };
    let kms = KmsConfig::Aws(untrusted).build().await.unwrap();
    assert!(kms.primary_version("payments-signing").await.is_err());
    let plain = AwsSettings {
        endpoint_url: Some(moto.endpoint.replace("https", "http")),
        ..moto.settings()
    };
    assert!(
        KmsConfig::Aws(plain).build().await.is_err(),
        "http is refused"
    );
}
