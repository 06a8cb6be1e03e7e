use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::{
    AwsKms, AwsSettings, Kms, KmsError, MockKms, Pkcs11Kms, Pkcs11Settings, VaultKms, VaultSettings,
};

/// Which KMS backend to use (`CTR_KMS__BACKEND`). The mock is what compose and the tests
/// choose; it is for development only.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum KmsConfig {
    /// P-384 keys held in process: random, or derived from `seed` when one is set.
    Mock {
        /// `CTR_KMS__SEED`: derive the mock's keys from this secret (tests, golden tokens)
        /// instead of keeping random ones in the domain's store.
        // Not serialized when unset, so that the compiled-in default (`mock`) merged with
        // another backend's settings leaves no mock setting behind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<Seed>,
    },
    /// HashiCorp Vault or OpenBao, the transit secrets engine.
    Vault(VaultSettings),
    /// AWS KMS, credentials from the standard AWS chain.
    Aws(AwsSettings),
    /// A PKCS#11 token (an HSM, SoftHSM2).
    Pkcs11(Pkcs11Settings),
}

impl KmsConfig {
    /// The backend these settings describe; every call answers within `timeout` (a network
    /// backend's client times out too, so that nothing is left waiting on a connection).
    /// Fails on settings that cannot work (validated as at start).
    pub async fn build_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Arc<dyn Kms>, KmsError> {
        let backend: Arc<dyn Kms> = match self {
            Self::Mock { seed: Some(seed) } => Arc::new(MockKms::from_seed(seed.expose())),
            Self::Mock { seed: None } => Arc::new(MockKms::random()),
            Self::Vault(settings) => {
                settings.validate().map_err(KmsError::Backend)?;
                let http = ctr_pki::reqwest_builder_for(settings.ca_file.as_deref())
                    .map_err(|e| KmsError::Backend(format!("CTR_KMS__CA_FILE: {e}")))?
                    .timeout(timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| KmsError::Backend(e.to_string()))?;
                Arc::new(VaultKms::new(settings.clone(), http))
            }
            Self::Aws(settings) => Arc::new(AwsKms::connect(settings, timeout).await?),
            Self::Pkcs11(settings) => Arc::new(Pkcs11Kms::open(settings)?),
        };
        Ok(Arc::new(crate::Bounded::new(backend, timeout)))
    }

    /// As [`Self::build_with_timeout`], calls timing out after 5 seconds.
    pub async fn build(&self) -> Result<Arc<dyn Kms>, KmsError> {
        self.build_with_timeout(std::time::Duration::from_secs(5))
            .await
    }

    /// The settings checked as at start.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Mock { .. } => Ok(()),
            Self::Vault(settings) => settings.validate(),
            Self::Aws(settings) => settings.validate(),
            Self::Pkcs11(settings) => settings.validate(),
        }
    }

    /// The backend's name, for logs and readiness.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Mock { .. } => "mock",
            Self::Vault(_) => "vault",
            Self::Aws(_) => "aws",
            Self::Pkcs11(_) => "pkcs11",
        }
    }
}

/// Secret seed material for deterministic mock keys. Never printed.
#[derive(Clone, Deserialize, serde::Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Seed(String);

impl Seed {
    pub fn new(seed: impl Into<String>) -> Self {
        Self(seed.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn each_backend_parses_and_unknown_settings_are_refused() {
        let parse = |v: serde_json::Value| serde_json::from_value::<KmsConfig>(v);
        assert_eq!(
            parse(serde_json::json!({"backend": "mock"})).unwrap(),
            KmsConfig::Mock { seed: None }
        );
        assert!(parse(serde_json::json!({"backend": "mock", "seeds": "x"})).is_err());
        let vault = parse(serde_json::json!({
            "backend": "vault", "addr": "https://bao:8200", "token_file": "/run/secrets/bao"
        }))
        .unwrap();
        let KmsConfig::Vault(settings) = &vault else {
            panic!("{vault:?}");
        };
        assert_eq!(
            (settings.mount.as_str(), settings.approle_mount.as_str()),
            ("transit", "approle")
        );
        assert!(settings.validate().is_ok());
        assert!(
            parse(serde_json::json!({"backend": "vault", "addr": "https://x", "token": "t"}))
                .is_err()
        );
        assert!(parse(serde_json::json!({"backend": "hsm"})).is_err());
        let hsm = parse(serde_json::json!({
            "backend": "pkcs11", "module": "/usr/lib/softhsm/libsofthsm2.so",
            "token_label": "ctr", "pin_file": "/run/secrets/pin"
        }))
        .unwrap();
        assert_eq!(hsm.backend(), "pkcs11");
        assert!(parse(serde_json::json!({"backend": "pkcs11", "module": "/x", "token_label": "t", "pin": "1234"})).is_err());
        assert_eq!(vault.backend(), "vault");
        let aws = parse(serde_json::json!({"backend": "aws", "region": "eu-west-1"})).unwrap();
        let KmsConfig::Aws(settings) = &aws else {
            panic!("{aws:?}");
        };
        assert_eq!(settings.alias_prefix, "alias/ctr/");
        assert!(settings.validate().is_ok());
        assert!(
            parse(serde_json::json!({"backend": "aws", "access_key_id": "AKIA"})).is_err(),
            "credentials come from the AWS chain, never from ctr's settings"
        );
        for (key, value) in [
            ("endpoint_url", "http://kms.local"),
            ("alias_prefix", "ctr/"),
            ("alias_prefix", "alias/aws/"),
            ("alias_prefix", "alias/ctr"),
        ] {
            let KmsConfig::Aws(bad) =
                parse(serde_json::json!({"backend": "aws", key: value})).unwrap()
            else {
                panic!("aws");
            };
            assert!(bad.validate().is_err(), "{key}={value}");
        }
    }
}
