//! Money as integer minor units with an ISO 4217 currency code. Never a float.
//!
//! ```
//! use ctr_money::{Currency, Money};
//!
//! let total: Money = serde_json::from_str(r#"{"amount": 4999, "currency": "EUR"}"#)?;
//! assert_eq!(total.currency, Currency::parse("EUR")?);
//! assert_eq!(total.percent_bp(1000).amount, 499, "10% of 49.99, rounded down");
//! assert!(serde_json::from_str::<Money>(r#"{"amount": 49.99, "currency": "EUR"}"#).is_err());
//! assert!(serde_json::from_str::<Money>(r#"{"amount": 1, "currency": "euro"}"#).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// An ISO 4217 alphabetic code: three uppercase ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an ISO 4217 currency code (three uppercase letters)")]
pub struct CurrencyError(String);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(CurrencyError(code.chars().take(16).collect())),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An amount in minor units (cents) of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub amount: u64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: u64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// `basis_points` / 10 000 of this amount, rounded down.
    pub fn percent_bp(&self, basis_points: u32) -> Self {
        let amount = u128::from(self.amount) * u128::from(basis_points) / 10_000;
        Self {
            amount: u64::try_from(amount).unwrap_or(u64::MAX),
            currency: self.currency,
        }
    }

    pub fn min(self, other: Self) -> Self {
        if other.amount < self.amount {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}
