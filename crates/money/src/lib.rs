//! Money as integer minor units with an ISO 4217 currency code. Never a float, never more than
//! [`Money::MAX_AMOUNT`], so that sums of a checkout's few amounts cannot overflow.
//!
//! ```
//! use ctr_money::{Currency, Money};
//!
//! let total: Money = serde_json::from_str(r#"{"amount": 4999, "currency": "EUR"}"#)?;
//! assert_eq!(total.currency, Currency::parse("EUR")?);
//! assert_eq!(total.percent_bp(1000).amount, 500, "10% of 49.99 is 4.999, rounded half up");
//! assert!(serde_json::from_str::<Money>(r#"{"amount": 49.99, "currency": "EUR"}"#).is_err());
//! assert!(serde_json::from_str::<Money>(r#"{"amount": 1, "currency": "euro"}"#).is_err());
//! assert!(serde_json::from_str::<Money>(r#"{"amount": 1000000000001, "currency": "EUR"}"#).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// An ISO 4217 alphabetic code: three uppercase ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

/// A code that is not three uppercase letters. Its message does not repeat the code: it may
/// end up in an answer to whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ISO 4217 currency code (three uppercase letters)")]
pub struct CurrencyError;

impl Currency {
    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(CurrencyError),
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

/// An amount in minor units (cents) of a currency, at most [`Money::MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Money {
    pub amount: u64,
    pub currency: Currency,
}

/// Why an amount could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("the amounts are in different currencies ({0} and {1})")]
    CurrencyMismatch(Currency, Currency),
    #[error("the amount is over the maximum of {} minor units", Money::MAX_AMOUNT)]
    TooLarge,
}

/// The wire form, checked before it becomes [`Money`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMoney {
    amount: u64,
    currency: Currency,
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireMoney::deserialize(deserializer)?;
        Self::checked(wire.amount, wire.currency).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`amount` must be at most {} minor units",
                Self::MAX_AMOUNT
            ))
        })
    }
}

impl Money {
    /// The largest amount accepted anywhere: 10^12 minor units (10 000 000 000.00 of a
    /// two-decimal currency). A checkout adds a handful of them, far from `u64::MAX`.
    pub const MAX_AMOUNT: u64 = 1_000_000_000_000;

    /// `amount` of `currency`, or `None` beyond [`Self::MAX_AMOUNT`].
    pub fn checked(amount: u64, currency: Currency) -> Option<Self> {
        (amount <= Self::MAX_AMOUNT).then_some(Self { amount, currency })
    }

    /// Zero of `currency`: the start of a sum.
    pub fn zero(currency: Currency) -> Self {
        Self {
            amount: 0,
            currency,
        }
    }

    /// `self + other`, in one currency and within [`Self::MAX_AMOUNT`].
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        self.amount
            .checked_add(other.amount)
            .and_then(|amount| Self::checked(amount, self.currency))
            .ok_or(MoneyError::TooLarge)
    }

    /// `count × self` (a per-unit price times a count), within [`Self::MAX_AMOUNT`].
    pub fn checked_mul(self, count: u64) -> Result<Self, MoneyError> {
        self.amount
            .checked_mul(count)
            .and_then(|amount| Self::checked(amount, self.currency))
            .ok_or(MoneyError::TooLarge)
    }

    /// `basis_points` / 10 000 of this amount, rounded half up to the minor unit (10 % of
    /// 49.99 is 5.00; of 49.94, 4.99), as a receipt shows it. Never more than `self` when
    /// `basis_points` is at most 10 000.
    pub fn percent_bp(&self, basis_points: u32) -> Self {
        let exact = u128::from(self.amount) * u128::from(basis_points);
        let amount = (exact + 5_000) / 10_000;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount: u64) -> Money {
        Money::checked(amount, Currency::parse("EUR").unwrap()).unwrap()
    }

    #[test]
    fn percentages_round_half_up_to_the_minor_unit() {
        for (total, bp, expected, why) in [
            (4999, 1000, 500, "4.999 rounds up"),
            (4994, 1000, 499, "4.994 rounds down"),
            (4995, 1000, 500, "4.995: half rounds up"),
            (5, 1000, 1, "0.5 of a cent rounds up"),
            (4, 1000, 0, "0.4 of a cent rounds to nothing"),
            (4999, 10_000, 4999, "100 % is the whole amount"),
            (
                Money::MAX_AMOUNT,
                10_000,
                Money::MAX_AMOUNT,
                "no overflow at the maximum",
            ),
        ] {
            assert_eq!(eur(total).percent_bp(bp).amount, expected, "{why}");
        }
    }

    #[test]
    fn sums_stay_in_one_currency_and_under_the_maximum() {
        assert_eq!(eur(1).checked_add(eur(2)), Ok(eur(3)));
        assert_eq!(
            eur(Money::MAX_AMOUNT).checked_add(eur(1)),
            Err(MoneyError::TooLarge)
        );
        let usd = Money::checked(1, Currency::parse("USD").unwrap()).unwrap();
        assert!(matches!(
            eur(1).checked_add(usd),
            Err(MoneyError::CurrencyMismatch(..))
        ));
        assert_eq!(eur(3).checked_mul(500), Ok(eur(1500)));
        assert_eq!(eur(2).checked_mul(u64::MAX), Err(MoneyError::TooLarge));
    }

    #[test]
    fn an_amount_over_the_maximum_is_refused_naming_the_field() {
        let error =
            serde_json::from_str::<Money>(r#"{"amount": 1000000000001, "currency": "EUR"}"#)
                .unwrap_err()
                .to_string();
        assert!(error.contains("`amount` must be at most"), "{error}");
        assert!(
            serde_json::from_str::<Money>(r#"{"amount": 1000000000000, "currency": "EUR"}"#)
                .is_ok(),
            "the maximum itself is accepted"
        );
        assert!(
            serde_json::from_str::<Money>(r#"{"amount": 1, "currency": "EUR", "x": 1}"#).is_err(),
            "unknown members are refused"
        );
    }
}

/// The OpenAPI schema of the wire form: what [`Currency`]'s and [`Money`]'s `Deserialize`
/// accept.
mod schema {
    use std::borrow::Cow;

    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::{Ref, RefOr};

    use super::{Currency, Money};

    impl utoipa::PartialSchema for Currency {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Z]{3}$"))
                .description(Some("An ISO 4217 alphabetic code"))
                .examples(["EUR"])
                .into()
        }
    }

    impl utoipa::ToSchema for Currency {
        fn name() -> Cow<'static, str> {
            "Currency".into()
        }
    }

    impl utoipa::PartialSchema for Money {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .property(
                    "amount",
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0))
                        .maximum(Some(Money::MAX_AMOUNT as f64))
                        .description(Some("Minor units of the currency: 4999 is 49.99 EUR")),
                )
                .property("currency", Ref::from_schema_name("Currency"))
                .required("amount")
                .required("currency")
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for Money {
        fn name() -> Cow<'static, str> {
            "Money".into()
        }

        fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            schemas.push((
                Currency::name().into(),
                <Currency as utoipa::PartialSchema>::schema(),
            ));
        }
    }
}
