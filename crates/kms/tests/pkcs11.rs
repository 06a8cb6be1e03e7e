//! `Pkcs11Kms` against SoftHSM2 (Debian `softhsm2`) through `cryptoki`: a token made fresh for
//! the run by `tests/kms/softhsm.sh`, found through `SOFTHSM2_CONF` (its PIN file lies beside
//! the config). Under `CI=true` the test fails without it. One test: a PKCS#11 module is
//! initialised once per process.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use ctr_kms::testing::{softhsm, verifies};
use ctr_kms::{Kms, KmsError, Pkcs11Kms, Pkcs11Settings};

#[tokio::test]
async fn softhsm_keys_sign_rotate_and_retire_through_the_kms_trait() {
    let Some(settings) = softhsm() else {
        return;
    };
    assert!(settings.validate().is_ok());
    // A wrong PIN and an unknown token are refused before anything is signed.
    let wrong_pin = settings.pin_file.with_file_name("wrong-pin");
    std::fs::write(&wrong_pin, "0000").unwrap();
    assert!(
        Pkcs11Kms::open(&Pkcs11Settings {
            pin_file: wrong_pin,
            ..settings.clone()
        })
        .is_err()
    );
    assert!(
        Pkcs11Kms::open(&Pkcs11Settings {
            token_label: "no-such-token".into(),
            ..settings.clone()
        })
        .is_err()
    );

    let kms = Pkcs11Kms::open(&settings).unwrap();
    let key = format!("coupons-signing-{}", std::process::id());
    let first = kms.create_key(&key).await.unwrap();
    assert!(first.as_str().starts_with(&format!("{key}.v1.")), "{first}");
    assert_eq!(
        kms.create_key(&key).await.unwrap(),
        first,
        "creating again changes nothing"
    );
    let message = b"the header and claims a signature covers";
    let der = kms.sign(&key, &first, message).await.unwrap();
    let published = kms.public_keys(&key).await.unwrap();
    assert_eq!(published.len(), 1);
    assert!(
        verifies(&published[0].sec1, message, &der),
        "SHA-384 in Rust, CKM_ECDSA on the token"
    );
    assert!(!verifies(&published[0].sec1, b"another", &der));

    let second = kms.rotate(&key).await.unwrap();
    assert!(
        second.as_str().starts_with(&format!("{key}.v2.")),
        "{second}"
    );
    assert_eq!(kms.primary_version(&key).await.unwrap(), second);
    let published = kms.public_keys(&key).await.unwrap();
    assert_eq!(
        published
            .iter()
            .map(|k| k.version.clone())
            .collect::<Vec<_>>(),
        [second.clone(), first.clone()]
    );
    let der2 = kms.sign(&key, &second, message).await.unwrap();
    assert!(verifies(&published[0].sec1, message, &der2));

    assert!(
        kms.disable_version(&key, &second).await.is_err(),
        "never the primary"
    );
    kms.disable_version(&key, &first).await.unwrap();
    assert_eq!(kms.public_keys(&key).await.unwrap().len(), 1);
    assert!(matches!(
        kms.sign(&key, &first, message).await,
        Err(KmsError::VersionNotFound { .. })
    ));
    assert!(matches!(
        kms.primary_version("no-such-key").await,
        Err(KmsError::KeyNotFound(_))
    ));
    assert!(format!("{kms:?}").contains("ctr-test"));
}
