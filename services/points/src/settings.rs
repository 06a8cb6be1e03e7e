//! The points service's settings: the domain kit's, plus what a point is worth.

use std::collections::BTreeMap;

use ctr_domain_kit::DomainSettings;
use ctr_money::{Currency, Money};
use ctr_service_kit::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PointsSettings {
    #[serde(flatten)]
    pub domain: DomainSettings,
    /// `CTR_POINT_VALUES__<CURRENCY>`: what one point is worth in minor units of each currency
    /// points may pay in (default: 1 cent in EUR and in USD, so 500 points pay 5.00).
    pub point_values: BTreeMap<String, u64>,
}

impl Default for PointsSettings {
    fn default() -> Self {
        Self {
            domain: DomainSettings::default(),
            point_values: [("EUR".to_owned(), 1), ("USD".to_owned(), 1)].into(),
        }
    }
}

impl AsRef<DomainSettings> for PointsSettings {
    fn as_ref(&self) -> &DomainSettings {
        &self.domain
    }
}

impl PointsSettings {
    /// The value of one point per currency. Environment keys arrive lowercased, so the code
    /// is matched without regard to case.
    pub fn point_values(&self) -> Result<BTreeMap<Currency, Money>, ConfigError> {
        let invalid = |reason: String| ConfigError::Setting {
            setting: "CTR_POINT_VALUES",
            reason,
        };
        if self.point_values.is_empty() {
            return Err(invalid("name at least one currency".into()));
        }
        self.point_values
            .iter()
            .map(|(code, &minor_units)| {
                let currency = Currency::parse(&code.to_ascii_uppercase())
                    .map_err(|e| invalid(format!("`{code}`: {e}")))?;
                match Money::checked(minor_units, currency) {
                    Some(value) if minor_units > 0 => Ok((currency, value)),
                    _ => Err(invalid(format!(
                        "{currency}: a point is worth 1 to {} minor units",
                        Money::MAX_AMOUNT
                    ))),
                }
            })
            .collect()
    }
}

impl ServiceSettings for PointsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.domain.validate()?;
        self.point_values().map(|_| ())
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error"
)]
mod tests {
    use ctr_service_kit::Config;
    use figment::Jail;

    use super::*;

    #[test]
    fn point_values_and_domain_settings_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CTR_KMS__BACKEND", "mock");
            jail.set_env("CTR_POINT_VALUES__EUR", "2");
            jail.set_env("CTR_TOKEN_TTL", "90s");
            let config =
                Config::load("points", PointsSettings::default()).map_err(|e| e.to_string())?;
            let values = config.service.point_values().map_err(|e| e.to_string())?;
            assert_eq!(values[&Currency::parse("EUR").unwrap()].amount, 2);
            assert_eq!(
                values[&Currency::parse("USD").unwrap()].amount,
                1,
                "default kept"
            );
            assert_eq!(config.service.domain.token_ttl.as_secs(), 90);
            jail.set_env("CTR_POINT_VALUES__EUR", "0");
            let error = Config::load("points", PointsSettings::default()).unwrap_err();
            assert!(error.to_string().contains("CTR_POINT_VALUES"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_misspelt_setting_of_the_domain_or_of_points_is_refused_by_name() {
        for (variable, named) in [
            ("CTR_POINT_VALUE__EUR", "CTR_POINT_VALUE"),
            ("CTR_HOLD_TTLS", "CTR_HOLD_TTLS"),
            ("CTR_KMS__SEEED", "seeed"),
        ] {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env("CTR_KMS__BACKEND", "mock");
                jail.set_env(variable, "2");
                let error = Config::load("points", PointsSettings::default())
                    .unwrap_err()
                    .to_string();
                assert!(error.contains(named), "{variable}: {error}");
                Ok(())
            });
        }
    }

    #[test]
    fn point_values_are_read_case_blind_and_refused_when_zero_or_unknown() {
        let mut settings = PointsSettings {
            domain: DomainSettings::with_mock_kms(),
            point_values: [("eur".to_owned(), 2)].into(),
        };
        let values = settings.point_values().unwrap();
        assert_eq!(values[&Currency::parse("EUR").unwrap()].amount, 2);

        for (values, why) in [
            (vec![("EUR", 0)], "a point worth nothing"),
            (vec![("EURO", 1)], "not an ISO code"),
            (
                vec![("EUR", Money::MAX_AMOUNT + 1)],
                "over the maximum amount",
            ),
            (vec![], "no currency at all"),
        ] {
            settings.point_values = values.into_iter().map(|(c, v)| (c.to_owned(), v)).collect();
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains("CTR_POINT_VALUES"), "{why}: {error}");
        }
    }
}
