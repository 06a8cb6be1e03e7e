//! `coupons keys` manages the domain's signing key with the service's own settings: here in
//! AWS KMS as moto emulates it (`ctr_kms::testing::Moto`; needs `CTR_TEST_MOTO` and AWS
//! credentials, CI sets them). The same command drives every backend through the `Kms` trait.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::process::{Command, Output};

use ctr_kms::KmsConfig;
use ctr_kms::testing::Moto;

/// The binary with only the AWS chain's variables of this process (the service refuses
/// `CTR_*` variables it does not know, such as the tests' own).
fn coupons() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coupons"));
    command
        .env_clear()
        .envs(std::env::vars().filter(|(name, _)| name.starts_with("AWS_")));
    command
}

fn keys(moto: &Moto, args: &[&str]) -> Output {
    let settings = moto.settings();
    coupons()
        .arg("keys")
        .args(args)
        .env("CTR_KMS__BACKEND", "aws")
        .env("CTR_KMS__REGION", settings.region.unwrap())
        .env("CTR_KMS__ENDPOINT_URL", settings.endpoint_url.unwrap())
        .env("CTR_KMS__CA_FILE", settings.ca_file.unwrap())
        .output()
        .unwrap()
}

fn lines(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn keys_lists_rotates_and_retires_the_domains_signing_key() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let missing = keys(&moto, &[]);
    assert_eq!(
        missing.status.code(),
        Some(1),
        "no key yet: {}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("coupons-signing"));

    // The domain makes its first version at start; here the test does.
    let service = KmsConfig::Aws(moto.settings()).build().await.unwrap();
    let first = service.create_key("coupons-signing").await.unwrap();
    assert_eq!(lines(&keys(&moto, &[])), [first.to_string()]);
    assert_eq!(lines(&keys(&moto, &["list"])), [first.to_string()]);

    let rotated = lines(&keys(&moto, &["rotate"]));
    assert_eq!(rotated.len(), 1);
    assert!(rotated[0].starts_with("coupons-signing.v2."), "{rotated:?}");
    assert_eq!(
        lines(&keys(&moto, &[])),
        [rotated[0].clone(), first.to_string()],
        "the primary first"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the ring's refresh
    assert_eq!(
        service
            .primary_version("coupons-signing")
            .await
            .unwrap()
            .as_str(),
        rotated[0],
        "the running service signs with the new version"
    );

    let primary = keys(&moto, &["retire", &rotated[0]]);
    assert_eq!(primary.status.code(), Some(1), "never the primary");
    assert!(lines(&keys(&moto, &["retire", first.as_str()])).is_empty());
    assert_eq!(lines(&keys(&moto, &[])), [rotated[0].clone()]);

    assert_eq!(keys(&moto, &["spin"]).status.code(), Some(2), "usage");
    let mock = coupons()
        .args(["keys", "rotate"])
        .env("CTR_KMS__BACKEND", "mock")
        .output()
        .unwrap();
    assert_eq!(mock.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&mock.stderr).contains("mock"));
    let unset = coupons().arg("keys").output().unwrap();
    assert!(String::from_utf8_lossy(&unset.stderr).contains("CTR_KMS__BACKEND"));
}
