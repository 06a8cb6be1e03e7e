//! The settings every domain shares, read by the service kit from defaults, file and `CTR_*`.

use std::path::PathBuf;
use std::time::Duration;

use ctr_kms::KmsConfig;
use ctr_service_kit::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DomainSettings {
    /// `CTR_KMS__BACKEND`: the KMS that signs the domain's tokens (`vault`, `aws`, `pkcs11`,
    /// or `mock` for development), with that backend's `CTR_KMS__*` settings. Required: no
    /// backend is chosen for the operator.
    // Serialized even when unset (as an empty value), so that `CTR_KMS__*` is a known key.
    #[serde(default)]
    pub kms: Option<KmsConfig>,
    /// `CTR_TOKEN_TTL`: lifetime of a confirmation token (at most 5 minutes).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub token_ttl: Duration,
    /// `CTR_HOLD_TTL`: how long a hold lasts unredeemed; longer than the token.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub hold_ttl: Duration,
    /// `CTR_HOLD_RETENTION`: how long an expired or released hold stays readable after its
    /// expiry; redeemed and reversed holds are kept.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub hold_retention: Duration,
    /// `CTR_CANCEL_WINDOW`: how long after its redemption a hold may still be reversed by a
    /// cancellation (the relay's compensation of a checkout that did not complete); after it
    /// the redemption is final and a cancellation is refused (409 `cancellation-window-closed`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub cancel_window: Duration,
    /// `CTR_MAX_HOLDS_PER_CUSTOMER`: unredeemed holds one customer may have at once; one
    /// more confirmation is refused 429 `too-many-holds`.
    pub max_holds_per_customer: u32,
    /// `CTR_SEED_FILE`: demo data to load instead of the built-in seed.
    pub seed_file: Option<PathBuf>,
}

impl Default for DomainSettings {
    fn default() -> Self {
        Self {
            kms: None,
            token_ttl: Duration::from_secs(120),
            hold_ttl: Duration::from_secs(600),
            hold_retention: Duration::from_secs(3600),
            cancel_window: Duration::from_secs(900),
            max_holds_per_customer: 16,
            seed_file: None,
        }
    }
}

impl AsRef<DomainSettings> for DomainSettings {
    fn as_ref(&self) -> &DomainSettings {
        self
    }
}

impl ServiceSettings for DomainSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.kms_backend()?
            .validate()
            .map_err(|reason| ConfigError::Setting {
                setting: "CTR_KMS__*",
                reason,
            })?;
        if self.token_ttl < Duration::from_secs(1) || self.token_ttl > Duration::from_secs(300) {
            return Err(ConfigError::Setting {
                setting: "CTR_TOKEN_TTL",
                reason: "must be between 1s and 5m".into(),
            });
        }
        if self.hold_ttl <= self.token_ttl {
            return Err(ConfigError::Setting {
                setting: "CTR_HOLD_TTL",
                reason: "must be longer than CTR_TOKEN_TTL, so a valid token always finds its hold"
                    .into(),
            });
        }
        if self.cancel_window < Duration::from_secs(1)
            || self.cancel_window > Duration::from_secs(86_400)
        {
            return Err(ConfigError::Setting {
                setting: "CTR_CANCEL_WINDOW",
                reason: "must be between 1s and 24h, and outlast the relay's CTR_CHECKOUT_BOUND"
                    .into(),
            });
        }
        if self.max_holds_per_customer == 0 {
            return Err(ConfigError::Setting {
                setting: "CTR_MAX_HOLDS_PER_CUSTOMER",
                reason: "must be at least 1".into(),
            });
        }
        if self.hold_retention < Duration::from_secs(1) {
            return Err(ConfigError::Setting {
                setting: "CTR_HOLD_RETENTION",
                reason: "must be at least 1s".into(),
            });
        }
        Ok(())
    }
}

impl DomainSettings {
    /// The KMS backend chosen with `CTR_KMS__BACKEND`; unset is refused (there is no default).
    pub fn kms_backend(&self) -> Result<&KmsConfig, ConfigError> {
        self.kms.as_ref().ok_or_else(|| ConfigError::Setting {
            setting: "CTR_KMS__BACKEND",
            reason: "not set: choose `vault`, `aws` or `pkcs11` (guide: Signing keys and the KMS), or `mock` for development only".into(),
        })
    }

    /// The defaults with the mock KMS chosen: for tests and the in-process load generator.
    pub fn with_mock_kms() -> Self {
        Self {
            kms: Some(KmsConfig::Mock { seed: None }),
            ..Self::default()
        }
    }

    /// The seed data: the file named by `CTR_SEED_FILE`, or the built-in demo data.
    pub fn seed<T: serde::de::DeserializeOwned>(&self, builtin: &str) -> Result<T, ConfigError> {
        let (text, origin) = match &self.seed_file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|e| ConfigError::Setting {
                    setting: "CTR_SEED_FILE",
                    reason: format!("{}: {e}", path.display()),
                })?,
                path.display().to_string(),
            ),
            None => (builtin.to_owned(), "the built-in seed".to_owned()),
        };
        serde_json::from_str(&text).map_err(|e| ConfigError::Setting {
            setting: "CTR_SEED_FILE",
            reason: format!("{origin}: {e}"),
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    clippy::unwrap_used,
    reason = "figment::Jail closures return figment::Error; tests fail loudly"
)]
mod tests {
    use ctr_kms::KmsConfig;
    use ctr_service_kit::Config;
    use figment::Jail;

    use super::DomainSettings;

    fn load() -> Result<Config<DomainSettings>, String> {
        Config::load("coupons", DomainSettings::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_kms_backend_is_chosen_explicitly() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let refused = load().unwrap_err();
            assert!(refused.contains("CTR_KMS__BACKEND"), "{refused}");
            jail.set_env("CTR_KMS__BACKEND", "mock");
            assert_eq!(
                load().unwrap().service.kms,
                Some(KmsConfig::Mock { seed: None })
            );
            jail.set_env("CTR_KMS__BACKEND", "aws");
            jail.set_env("CTR_KMS__REGION", "eu-central-1");
            let Some(KmsConfig::Aws(aws)) = load().unwrap().service.kms else {
                panic!("aws");
            };
            assert_eq!(aws.region.as_deref(), Some("eu-central-1"));
            jail.set_env("CTR_KMS__ENDPOINT_URL", "http://kms.local");
            let refused = load().unwrap_err();
            assert!(refused.contains("https"), "{refused}");
            jail.set_env("CTR_KMS__BACKEND", "mock");
            let refused = load().unwrap_err();
            assert!(
                refused.contains("endpoint_url"),
                "a mock with AWS settings: {refused}"
            );
            Ok(())
        });
    }
}
