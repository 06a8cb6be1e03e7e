//! Every call to a KMS bounded in time, whatever the backend: a network backend's own client
//! timeout covers its HTTP calls, but a PKCS#11 module may block for as long as it likes. A
//! call that does not answer within the bound fails as [`KmsError::Unavailable`] (a PKCS#11
//! call runs on a blocking thread that finishes in the background; its answer is dropped).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{KeyVersion, Kms, KmsError, PublicKey};

/// A KMS whose every call answers within `timeout`.
#[derive(Debug)]
pub struct Bounded {
    inner: Arc<dyn Kms>,
    timeout: Duration,
}

impl Bounded {
    pub fn new(inner: Arc<dyn Kms>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    async fn within<T>(
        &self,
        call: &str,
        answer: impl Future<Output = Result<T, KmsError>>,
    ) -> Result<T, KmsError> {
        tokio::time::timeout(self.timeout, answer)
            .await
            .unwrap_or_else(|_| {
                Err(KmsError::Unavailable(format!(
                    "the KMS did not answer {call} within {:?}",
                    self.timeout
                )))
            })
    }
}

#[async_trait]
impl Kms for Bounded {
    async fn create_key(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        self.within("create_key", self.inner.create_key(key_id))
            .await
    }

    async fn primary_version(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        self.within("primary_version", self.inner.primary_version(key_id))
            .await
    }

    async fn sign(
        &self,
        key_id: &str,
        version: &KeyVersion,
        message: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        self.within("sign", self.inner.sign(key_id, version, message))
            .await
    }

    async fn public_keys(&self, key_id: &str) -> Result<Vec<PublicKey>, KmsError> {
        self.within("public_keys", self.inner.public_keys(key_id))
            .await
    }

    async fn rotate(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        self.within("rotate", self.inner.rotate(key_id)).await
    }

    async fn disable_version(&self, key_id: &str, version: &KeyVersion) -> Result<(), KmsError> {
        self.within(
            "disable_version",
            self.inner.disable_version(key_id, version),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockKms;

    /// A KMS that never answers a signature, as a PKCS#11 module stuck in a call.
    #[derive(Debug)]
    struct Stuck(MockKms);

    #[async_trait]
    impl Kms for Stuck {
        async fn create_key(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
            self.0.create_key(key_id).await
        }
        async fn primary_version(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
            self.0.primary_version(key_id).await
        }
        async fn sign(&self, _: &str, _: &KeyVersion, _: &[u8]) -> Result<Vec<u8>, KmsError> {
            std::future::pending().await
        }
        async fn public_keys(&self, key_id: &str) -> Result<Vec<PublicKey>, KmsError> {
            self.0.public_keys(key_id).await
        }
        async fn rotate(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
            self.0.rotate(key_id).await
        }
        async fn disable_version(
            &self,
            key_id: &str,
            version: &KeyVersion,
        ) -> Result<(), KmsError> {
            self.0.disable_version(key_id, version).await
        }
    }

    #[tokio::test]
    async fn a_call_that_never_answers_fails_as_unavailable_within_the_bound() {
        let kms = Bounded::new(
            Arc::new(Stuck(MockKms::random())),
            Duration::from_millis(100),
        );
        let version = kms.create_key("k").await.unwrap();
        let started = std::time::Instant::now();
        let answer = kms.sign("k", &version, b"message").await;
        assert!(
            matches!(answer, Err(KmsError::Unavailable(ref why)) if why.contains("sign")),
            "{answer:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "bounded");
    }
}
