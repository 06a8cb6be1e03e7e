//! Settlement: the tokens of a checkout pay the order's total exactly. The only business
//! values the relay reads are each token's signed `settles` and `priced_on`; `constraints`
//! stays opaque.

use ctr_money::{Money, MoneyError};
use ctr_service_kit::ApiError;
use ctr_token::Claims;

/// Why a set of tokens does not settle an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    #[error("token {index} settles in {found}, the order is in {expected}")]
    Currency {
        index: usize,
        expected: ctr_money::Currency,
        found: ctr_money::Currency,
    },
    #[error("token {index} was priced on a total of {priced_on}, the order's total is {total}")]
    PricedOn {
        index: usize,
        total: Money,
        priced_on: Money,
    },
    #[error("token {index} (`{capability}`) must say the total it was priced on (`priced_on`)")]
    PricedOnMissing { index: usize, capability: String },
    #[error("the tokens settle {presented}, the order's total is {expected}")]
    Sum { expected: Money, presented: Money },
    #[error(
        "the tokens settle more than the maximum amount of {} minor units",
        Money::MAX_AMOUNT
    )]
    Overflow,
}

impl SettlementError {
    pub fn problem(&self) -> ApiError {
        let detail = self.to_string();
        match self {
            Self::Currency { index, .. } => {
                ApiError::invalid("settlement-currency-mismatch", detail)
                    .with("token_index", *index)
            }
            Self::PricedOn { index, .. } | Self::PricedOnMissing { index, .. } => {
                ApiError::invalid("settlement-priced-on-other-total", detail)
                    .with("token_index", *index)
            }
            Self::Sum {
                expected,
                presented,
            } => ApiError::invalid("settlement-sum-mismatch", detail)
                .with("expected", money_json(expected))
                .with("presented", money_json(presented)),
            Self::Overflow => ApiError::invalid("settlement-sum-mismatch", detail),
        }
    }
}

fn money_json(money: &Money) -> serde_json::Value {
    serde_json::to_value(money).unwrap_or_default()
}

/// Checks that the tokens with `claims` settle `total`: each in the order's currency, each
/// discount priced on the order's total (required of the `priced` capabilities), and the sum
/// exact. Answers the sum.
pub fn check<'a>(
    total: Money,
    claims: impl IntoIterator<Item = &'a Claims>,
    priced: &[String],
) -> Result<Money, SettlementError> {
    let mut sum = Money::zero(total.currency);
    for (index, claims) in claims.into_iter().enumerate() {
        if claims.settles.currency != total.currency {
            return Err(SettlementError::Currency {
                index,
                expected: total.currency,
                found: claims.settles.currency,
            });
        }
        match claims.priced_on {
            Some(priced_on) if priced_on != total => {
                return Err(SettlementError::PricedOn {
                    index,
                    total,
                    priced_on,
                });
            }
            None if claims.capabilities.iter().any(|c| priced.contains(c)) => {
                return Err(SettlementError::PricedOnMissing {
                    index,
                    capability: claims.capabilities.join(" "),
                });
            }
            _ => {}
        }
        sum = sum.checked_add(claims.settles).map_err(|e| match e {
            MoneyError::TooLarge | MoneyError::CurrencyMismatch(..) => SettlementError::Overflow,
        })?;
    }
    if sum != total {
        return Err(SettlementError::Sum {
            expected: total,
            presented: sum,
        });
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn eur(amount: u64) -> Money {
        serde_json::from_value(json!({"amount": amount, "currency": "EUR"})).unwrap()
    }

    fn claims(capability: &str, settles: Value, priced_on: Option<Value>) -> Claims {
        let mut claims = json!({
            "iss": "x", "aud": "order-processing", "sub": "c_alice", "iat": 0, "nbf": 0,
            "exp": 60, "jti": "0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e", "order_processing_id": "op_x",
            "capabilities": [capability], "settles": settles, "constraints": {}
        });
        if let Some(priced_on) = priced_on {
            claims["priced_on"] = priced_on;
        }
        serde_json::from_value(claims).unwrap()
    }

    fn money(amount: u64, currency: &str) -> Value {
        json!({"amount": amount, "currency": currency})
    }

    fn priced() -> Vec<String> {
        vec!["coupons:redeem".into()]
    }

    #[test]
    fn coupon_points_and_payment_that_add_up_settle_the_order() {
        let tokens = [
            claims(
                "coupons:redeem",
                money(500, "EUR"),
                Some(money(4999, "EUR")),
            ),
            claims("points:redeem", money(500, "EUR"), None),
            claims("payments:capture", money(3999, "EUR"), None),
        ];
        assert_eq!(check(eur(4999), &tokens, &priced()), Ok(eur(4999)));
    }

    #[test]
    fn each_way_of_not_settling_is_its_own_error() {
        let coupon = |amount, on| {
            claims(
                "coupons:redeem",
                money(amount, "EUR"),
                Some(money(on, "EUR")),
            )
        };
        let pay = |amount, currency| claims("payments:capture", money(amount, currency), None);
        let cases: Vec<(Vec<Claims>, &str, &str)> = vec![
            (vec![pay(1, "EUR")], "Sum", "0.01 on a 49.99 order"),
            (vec![pay(9998, "EUR")], "Sum", "twice the total"),
            (
                vec![coupon(500, 4999), pay(4999, "EUR")],
                "Sum",
                "the coupon on top of the full total",
            ),
            (vec![pay(4999, "USD")], "Currency", "another currency"),
            (
                vec![coupon(1000, 9999), pay(3999, "EUR")],
                "PricedOn",
                "a coupon priced on another total",
            ),
            (
                vec![
                    claims("coupons:redeem", money(500, "EUR"), None),
                    pay(4499, "EUR"),
                ],
                "PricedOnMissing",
                "a coupon that does not say what it was priced on",
            ),
            (
                vec![
                    pay(Money::MAX_AMOUNT, "EUR"),
                    claims("points:redeem", money(Money::MAX_AMOUNT, "EUR"), None),
                ],
                "Overflow",
                "a sum over the maximum amount",
            ),
        ];
        for (tokens, variant, why) in cases {
            let error = check(eur(4999), &tokens, &priced()).unwrap_err();
            assert!(
                format!("{error:?}").starts_with(variant),
                "{why}: {error:?}"
            );
        }
    }

    #[test]
    fn the_sum_problem_states_expected_and_presented_sums() {
        let problem = check(
            eur(4999),
            &[claims("payments:capture", money(1, "EUR"), None)],
            &priced(),
        )
        .unwrap_err()
        .problem();
        assert_eq!(problem.slug, "settlement-sum-mismatch");
        assert_eq!(problem.extensions["expected"], money(4999, "EUR"));
        assert_eq!(problem.extensions["presented"], money(1, "EUR"));
        assert!(
            problem.detail.contains("4999 EUR") && problem.detail.contains("1 EUR"),
            "{}",
            problem.detail
        );
    }
}
