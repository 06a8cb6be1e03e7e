//! Points: per-customer balances. A hold moves points from `available` to `held`; a balance
//! never goes negative because every reservation is checked under the engine's lock.

use std::collections::{BTreeMap, HashMap};

use ctr_domain_kit::{CustomerId, Ledger};
use ctr_money::{Currency, Money};
use ctr_service_kit::ApiError;
use ctr_token::Settlement;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub available: u64,
    pub held: u64,
    pub spent: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub balances: HashMap<CustomerId, u64>,
}

#[derive(Debug)]
pub struct Points {
    balances: HashMap<CustomerId, Balance>,
    /// What one point is worth, per currency points may pay in.
    point_values: BTreeMap<Currency, Money>,
}

#[derive(Debug, Deserialize)]
pub struct PointsRequest {
    points: u64,
    /// The order's currency: what the points pay in.
    currency: Currency,
}

#[derive(Debug, Clone, Serialize)]
pub struct PointsHold {
    pub points: u64,
    /// What the held points pay toward the order.
    pub value: Money,
    /// What one point is worth in that currency.
    pub point_value: Money,
    #[serde(skip)]
    pub customer: CustomerId,
}

/// The most points one confirmation may hold.
pub const MAX_POINTS: u64 = 1_000_000_000;

impl Points {
    pub fn from_seed(seed: Seed, point_values: BTreeMap<Currency, Money>) -> Self {
        let balances = seed
            .balances
            .into_iter()
            .map(|(c, available)| {
                (
                    c,
                    Balance {
                        available,
                        ..Balance::default()
                    },
                )
            })
            .collect();
        Self {
            balances,
            point_values,
        }
    }

    pub fn balance(&self, customer: &CustomerId) -> Option<Balance> {
        self.balances.get(customer).copied()
    }
}

impl Ledger for Points {
    const DOMAIN: &'static str = "points";
    const CAPABILITY: &'static str = "points:redeem";
    type Request = PointsRequest;
    type Hold = PointsHold;

    fn reserve(
        &mut self,
        customer: &CustomerId,
        request: PointsRequest,
        _now: i64,
    ) -> Result<PointsHold, ApiError> {
        let points = request.points;
        if points == 0 || points > MAX_POINTS {
            return Err(ApiError::invalid(
                "invalid-points",
                format!("`points` must be between 1 and {MAX_POINTS}"),
            ));
        }
        let point_value = *self.point_values.get(&request.currency).ok_or_else(|| {
            ApiError::invalid(
                "currency-not-supported",
                format!(
                    "points do not pay in `currency` {}; they pay in {}",
                    request.currency,
                    self.point_values
                        .keys()
                        .map(Currency::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let value = point_value.checked_mul(points).map_err(|_| {
            ApiError::invalid(
                "invalid-points",
                format!(
                    "{points} points are worth more than the maximum amount of {} minor units",
                    Money::MAX_AMOUNT
                ),
            )
        })?;
        let balance = self.balances.get_mut(customer).ok_or_else(|| {
            ApiError::not_found(
                "customer-not-found",
                format!("no points account for `{customer}`"),
            )
        })?;
        if balance.available < points {
            return Err(ApiError::invalid(
                "insufficient-points",
                format!("{points} points requested, {} available", balance.available),
            ));
        }
        balance.available -= points;
        balance.held += points;
        Ok(PointsHold {
            points,
            value,
            point_value,
            customer: customer.clone(),
        })
    }

    fn release(&mut self, hold: &PointsHold) {
        if let Some(b) = self.balances.get_mut(&hold.customer) {
            b.held -= hold.points;
            b.available += hold.points;
        }
    }

    fn apply(&mut self, hold: &PointsHold) -> Result<(), ApiError> {
        let b = self
            .balances
            .get_mut(&hold.customer)
            .ok_or_else(|| ApiError::internal("a held balance vanished"))?;
        b.held -= hold.points;
        b.spent += hold.points;
        Ok(())
    }

    fn reverse(&mut self, hold: &PointsHold) {
        if let Some(b) = self.balances.get_mut(&hold.customer) {
            b.spent -= hold.points;
            b.available += hold.points;
        }
    }

    fn settlement(hold: &PointsHold) -> Settlement {
        Settlement::pays(hold.value)
    }

    fn constraints(hold: &PointsHold) -> serde_json::Value {
        serde_json::json!({"points": hold.points})
    }
}
