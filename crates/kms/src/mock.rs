use std::collections::HashMap;

use async_trait::async_trait;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair};
use p384::ecdsa::SigningKey;
use parking_lot::RwLock;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha384};

use crate::{KeyVersion, Kms, KmsError, PublicKey};

/// An in-process KMS holding P-384 keys. Keys are random, or derived from a seed so that
/// tests and golden tokens are reproducible. Its `Debug` names key versions, never the seed or
/// a key.
pub struct MockKms {
    seed: Option<Vec<u8>>,
    rings: RwLock<HashMap<String, Ring>>,
}

struct Ring {
    versions: Vec<Version>,
}

struct Version {
    id: KeyVersion,
    key: SigningKey,
    /// The same key in aws-lc, which signs (DER, as a cloud KMS answers) several times faster.
    signer: EcdsaKeyPair,
    enabled: bool,
}

impl std::fmt::Debug for MockKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rings = self.rings.read();
        let versions: Vec<String> = rings
            .values()
            .flat_map(|ring| ring.versions.iter().map(|v| v.id.to_string()))
            .collect();
        f.debug_struct("MockKms")
            .field("seeded", &self.seed.is_some())
            .field("versions", &versions)
            .finish_non_exhaustive()
    }
}

impl MockKms {
    pub fn random() -> Self {
        Self {
            seed: None,
            rings: RwLock::default(),
        }
    }

    pub fn from_seed(seed: &[u8]) -> Self {
        Self {
            seed: Some(seed.to_vec()),
            rings: RwLock::default(),
        }
    }

    fn new_version(&self, key_id: &str, number: usize) -> Result<Version, KmsError> {
        let key = match &self.seed {
            Some(seed) => derive_key(seed, key_id, number)?,
            None => random_key()?,
        };
        // The version names its key: a process restarted with random keys never reuses a
        // `kid` that verifiers have cached for a different key.
        let point = key.verifying_key().to_encoded_point(false);
        let fingerprint: String = sha2::Sha256::digest(point.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let signer = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P384_SHA384_ASN1_SIGNING,
            &key.to_bytes(),
            point.as_bytes(),
        )
        .map_err(|e| KmsError::KeyDerivation(format!("aws-lc rejected the key: {e}")))?;
        Ok(Version {
            id: KeyVersion(format!("{key_id}.v{number}.{fingerprint}")),
            key,
            signer,
            enabled: true,
        })
    }
}

/// Derives a scalar from SHA-384(seed, key id, version, counter), retrying in the
/// astronomically unlikely case that the digest is not a valid scalar.
fn derive_key(seed: &[u8], key_id: &str, number: usize) -> Result<SigningKey, KmsError> {
    for counter in 0u32..16 {
        let digest = Sha384::new()
            .chain_update(b"ctr-kms mock key\0")
            .chain_update((seed.len() as u64).to_be_bytes())
            .chain_update(seed)
            .chain_update(key_id.as_bytes())
            .chain_update(b"\0")
            .chain_update((number as u64).to_be_bytes())
            .chain_update(counter.to_be_bytes())
            .finalize();
        if let Ok(key) = SigningKey::from_slice(&digest) {
            return Ok(key);
        }
    }
    Err(KmsError::KeyDerivation(format!(
        "no valid scalar for key `{key_id}`"
    )))
}

fn random_key() -> Result<SigningKey, KmsError> {
    let mut bytes = [0u8; 48];
    for _ in 0..16 {
        OsRng.fill_bytes(&mut bytes);
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return Ok(key);
        }
    }
    Err(KmsError::KeyDerivation(
        "the random source gave no valid scalar".into(),
    ))
}

impl Ring {
    fn primary(&self) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.enabled)
    }
}

#[async_trait]
impl Kms for MockKms {
    async fn create_key(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        if let Some(primary) = self.rings.read().get(key_id).and_then(Ring::primary) {
            return Ok(primary.id.clone());
        }
        let first = self.new_version(key_id, 1)?;
        let mut rings = self.rings.write();
        let ring = rings.entry(key_id.to_owned()).or_insert(Ring {
            versions: vec![first],
        });
        ring.primary()
            .map(|v| v.id.clone())
            .ok_or_else(|| KmsError::NoEnabledVersion(key_id.into()))
    }

    async fn primary_version(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        let rings = self.rings.read();
        let ring = rings
            .get(key_id)
            .ok_or_else(|| KmsError::KeyNotFound(key_id.into()))?;
        ring.primary()
            .map(|v| v.id.clone())
            .ok_or_else(|| KmsError::NoEnabledVersion(key_id.into()))
    }

    async fn sign(
        &self,
        key_id: &str,
        version: &KeyVersion,
        message: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let rings = self.rings.read();
        let ring = rings
            .get(key_id)
            .ok_or_else(|| KmsError::KeyNotFound(key_id.into()))?;
        let key = ring
            .versions
            .iter()
            .find(|v| &v.id == version && v.enabled)
            .ok_or_else(|| version.not_found_in(key_id))?;
        let signature = key
            .signer
            .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
            .map_err(|_| KmsError::KeyDerivation("aws-lc refused to sign".into()))?;
        Ok(signature.as_ref().to_vec())
    }

    async fn public_keys(&self, key_id: &str) -> Result<Vec<PublicKey>, KmsError> {
        let rings = self.rings.read();
        let ring = rings
            .get(key_id)
            .ok_or_else(|| KmsError::KeyNotFound(key_id.into()))?;
        Ok(ring
            .versions
            .iter()
            .rev()
            .filter(|v| v.enabled)
            .map(|v| PublicKey {
                version: v.id.clone(),
                sec1: v
                    .key
                    .verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec(),
            })
            .collect())
    }

    async fn rotate(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        // Deriving a key is cheap; holding the write lock numbers concurrent rotations correctly.
        let mut rings = self.rings.write();
        let ring = rings
            .get_mut(key_id)
            .ok_or_else(|| KmsError::KeyNotFound(key_id.into()))?;
        let next = self.new_version(key_id, ring.versions.len() + 1)?;
        let id = next.id.clone();
        ring.versions.push(next);
        Ok(id)
    }

    async fn disable_version(&self, key_id: &str, version: &KeyVersion) -> Result<(), KmsError> {
        let mut rings = self.rings.write();
        let ring = rings
            .get_mut(key_id)
            .ok_or_else(|| KmsError::KeyNotFound(key_id.into()))?;
        let entry = ring
            .versions
            .iter_mut()
            .find(|v| &v.id == version)
            .ok_or_else(|| version.not_found_in(key_id))?;
        entry.enabled = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use p384::ecdsa::signature::Verifier;
    use p384::ecdsa::{Signature, VerifyingKey};

    use super::*;

    #[tokio::test]
    async fn seeded_keys_are_reproducible_and_differ_by_key_id() {
        let a = MockKms::from_seed(b"seed");
        let b = MockKms::from_seed(b"seed");
        a.create_key("coupons").await.unwrap();
        b.create_key("coupons").await.unwrap();
        b.create_key("points").await.unwrap();
        assert_eq!(
            a.public_keys("coupons").await.unwrap(),
            b.public_keys("coupons").await.unwrap()
        );
        assert_ne!(
            b.public_keys("coupons").await.unwrap()[0].sec1,
            b.public_keys("points").await.unwrap()[0].sec1
        );
    }

    #[tokio::test]
    async fn der_signature_verifies_with_the_published_key() {
        let kms = MockKms::random();
        let v1 = kms.create_key("k").await.unwrap();
        let der = kms.sign("k", &v1, b"message").await.unwrap();
        let public = &kms.public_keys("k").await.unwrap()[0];
        let key = VerifyingKey::from_sec1_bytes(&public.sec1).unwrap();
        let signature = Signature::from_der(&der).unwrap();
        key.verify(b"message", &signature).unwrap();
    }

    #[tokio::test]
    async fn rotation_makes_the_new_version_primary_and_keeps_the_old_published() {
        let kms = MockKms::random();
        let v1 = kms.create_key("k").await.unwrap();
        let v2 = kms.rotate("k").await.unwrap();
        assert_eq!(kms.primary_version("k").await.unwrap(), v2);
        let versions: Vec<_> = kms
            .public_keys("k")
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.version)
            .collect();
        assert_eq!(versions, vec![v2.clone(), v1.clone()]);
        kms.sign("k", &v1, b"m").await.unwrap();

        kms.disable_version("k", &v1).await.unwrap();
        assert_eq!(kms.public_keys("k").await.unwrap().len(), 1);
        assert!(matches!(
            kms.sign("k", &v1, b"m").await,
            Err(KmsError::VersionNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn unknown_key_is_reported_by_name() {
        let kms = MockKms::random();
        assert_eq!(
            kms.primary_version("nope").await,
            Err(KmsError::KeyNotFound("nope".into()))
        );
    }
}
