//! Key management for ctr, shaped like a cloud KMS.
//!
//! Callers name a key id; the private key never leaves the KMS. A key is a ring of
//! versions: the newest enabled version signs, every published version verifies.
//! [`Kms::sign`] answers a DER-encoded ECDSA P-384/SHA-384 signature, as AWS KMS `Sign`
//! with `ECDSA_SHA_384` does.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use ctr_kms::{Kms, KmsConfig};
//!
//! let kms = KmsConfig::Mock { seed: None }.build().await?;
//! kms.create_key("coupons-signing").await?;
//! let version = kms.primary_version("coupons-signing").await?;
//! let der = kms.sign("coupons-signing", &version, b"header.payload").await?;
//! assert_eq!(der[0], 0x30, "a DER SEQUENCE");
//!
//! let next = kms.rotate("coupons-signing").await?;
//! let published = kms.public_keys("coupons-signing").await?;
//! assert_eq!(published.len(), 2, "both versions verify until the old one is disabled");
//! assert_eq!(kms.primary_version("coupons-signing").await?, next);
//! # Ok::<(), ctr_kms::KmsError>(())
//! # }).unwrap();
//! ```

mod aws;
mod bounded;
mod config;
mod mock;
mod pkcs11;
pub mod testing;
mod vault;

use std::fmt;

use async_trait::async_trait;

pub use aws::{AwsKms, AwsSettings};
pub use bounded::Bounded;
pub use config::{KmsConfig, Seed};
pub use mock::MockKms;
pub use pkcs11::{Pkcs11Kms, Pkcs11Settings};
pub use vault::{VaultKms, VaultSettings};

/// The version of a key, unique across key ids (it becomes a token's `kid`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyVersion(String);

impl KeyVersion {
    pub fn new(version: impl Into<String>) -> Self {
        Self(version.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Version `number` of `key_id` whose public key is `sec1`, as the network backends name
    /// it: `<key>.v<n>.<fingerprint>`, unique across keys and across a key deleted and made
    /// again (the fingerprint is the first 4 bytes of the point's SHA-256).
    pub fn numbered(key_id: &str, number: u64, sec1: &[u8]) -> Self {
        use sha2::Digest as _;
        let fingerprint: String = sha2::Sha256::digest(sec1)[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self(format!("{key_id}.v{number}.{fingerprint}"))
    }

    /// The `n` of a `<key>.v<n>.<fingerprint>` version of `key_id`; `VersionNotFound` for a
    /// version of another key or another form.
    pub fn number_in(&self, key_id: &str) -> Result<u64, KmsError> {
        self.0
            .strip_prefix(key_id)
            .and_then(|rest| rest.strip_prefix(".v"))
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| self.not_found_in(key_id))
    }

    /// `VersionNotFound` for this version of `key_id`.
    pub fn not_found_in(&self, key_id: &str) -> KmsError {
        KmsError::VersionNotFound {
            key_id: key_id.to_owned(),
            version: self.0.clone(),
        }
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The public half of one published key version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub version: KeyVersion,
    /// SEC1 uncompressed point: `0x04 || x (48 bytes) || y (48 bytes)`.
    pub sec1: Vec<u8>,
}

impl PublicKey {
    /// The affine `x` coordinate (48 bytes).
    pub fn x(&self) -> &[u8] {
        &self.sec1[1..49]
    }

    /// The affine `y` coordinate (48 bytes).
    pub fn y(&self) -> &[u8] {
        &self.sec1[49..97]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KmsError {
    #[error("key `{0}` does not exist")]
    KeyNotFound(String),
    #[error("key version `{version}` of key `{key_id}` does not exist or is disabled")]
    VersionNotFound { key_id: String, version: String },
    #[error("key `{0}` has no enabled version left to sign with")]
    NoEnabledVersion(String),
    #[error("the key material could not be derived: {0}")]
    KeyDerivation(String),
    #[error("the KMS backend failed: {0}")]
    Backend(String),
    /// The KMS could not be reached or did not answer in time: worth retrying later.
    #[error("{0}")]
    Unavailable(String),
}

/// A key management service. Usable as `Arc<dyn Kms>`.
#[async_trait]
pub trait Kms: Send + Sync + fmt::Debug {
    /// Creates a key ring with one version; creating an existing key changes nothing.
    async fn create_key(&self, key_id: &str) -> Result<KeyVersion, KmsError>;

    /// The version that new signatures should use.
    async fn primary_version(&self, key_id: &str) -> Result<KeyVersion, KmsError>;

    /// Signs `message` (hashed with SHA-384 by the KMS) with the named version.
    /// Answers a DER-encoded ECDSA signature.
    async fn sign(
        &self,
        key_id: &str,
        version: &KeyVersion,
        message: &[u8],
    ) -> Result<Vec<u8>, KmsError>;

    /// Every published (enabled) version's public key, newest first.
    async fn public_keys(&self, key_id: &str) -> Result<Vec<PublicKey>, KmsError>;

    /// Adds a version, which becomes primary. Older versions stay published.
    async fn rotate(&self, key_id: &str) -> Result<KeyVersion, KmsError>;

    /// Disables a version: it no longer signs and is no longer published.
    async fn disable_version(&self, key_id: &str, version: &KeyVersion) -> Result<(), KmsError>;
}
