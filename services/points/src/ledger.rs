//! Points: per-customer balances. A hold moves points from `available` to `held` by one
//! conditional update (`... WHERE available >= n`), so a balance never goes negative, however
//! many processes hold at once.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use ctr_domain_kit::{CustomerId, Ledger, from_sql, to_sql};
use ctr_money::{Currency, Money};
use ctr_service_kit::ApiError;
use ctr_store::{Conn, Migration, StoreError, query, query_as};
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
    seed: Seed,
    /// What one point is worth, per currency points may pay in.
    point_values: BTreeMap<Currency, Money>,
}

/// Points: how many, and the currency they pay in (the order's).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct PointsRequest {
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    points: u64,
    /// The order's currency: what the points pay in.
    currency: Currency,
}

/// What a points hold reserved.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PointsHold {
    pub points: u64,
    /// What the held points pay toward the order.
    pub value: Money,
    /// What one point is worth in that currency.
    pub point_value: Money,
}

/// The most points one confirmation may hold.
pub const MAX_POINTS: u64 = 1_000_000_000;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 100,
    name: "balances",
    sql: include_str!("../migrations/0100_balances.sql"),
}];

impl Points {
    pub fn new(seed: Seed, point_values: BTreeMap<Currency, Money>) -> Self {
        Self { seed, point_values }
    }

    pub async fn balance(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
    ) -> Result<Option<Balance>, ApiError> {
        let row: Option<(i64, i64, i64)> =
            query_as("SELECT available, held, spent FROM balances WHERE customer_id = $1")
                .bind(customer.as_str())
                .fetch_optional(conn)
                .await?;
        row.map(|(available, held, spent)| {
            Ok(Balance {
                available: from_sql(available)?,
                held: from_sql(held)?,
                spent: from_sql(spent)?,
            })
        })
        .transpose()
    }

    fn no_account() -> ApiError {
        ApiError::not_found("customer-not-found", "the customer has no points account")
    }

    /// Moves `points` of `customer` by one update whose condition guards the balance;
    /// answers whether it held (pipelined, the server checks: see [`Conn::guarded`]).
    async fn shift(
        conn: &mut Conn,
        sql: &'static str,
        customer: &CustomerId,
        points: u64,
    ) -> Result<bool, ApiError> {
        let shift = query(sql).bind(to_sql(points)?).bind(customer.as_str());
        Ok(conn.guarded(shift, 1).await?)
    }
}

#[async_trait]
impl Ledger for Points {
    const DOMAIN: &'static str = "points";
    const CAPABILITY: &'static str = "points:redeem";
    const CONFIRM_SCOPE: &'static str = ctr_service_kit::scopes::POINTS_CONFIRM;
    const READ_SCOPE: &'static str = ctr_service_kit::scopes::POINTS_READ;
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    type Request = PointsRequest;
    type Hold = PointsHold;

    async fn seed(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let (count,): (i64,) = query_as("SELECT COUNT(*) FROM balances")
            .fetch_one(conn)
            .await?;
        if count > 0 {
            return Ok(());
        }
        for (customer, available) in &self.seed.balances {
            query(
                "INSERT INTO balances (customer_id, available, held, spent) VALUES ($1, $2, 0, 0) \
                 ON CONFLICT (customer_id) DO NOTHING",
            )
            .bind(customer.as_str())
            .bind(i64::try_from(*available).unwrap_or(i64::MAX))
            .execute(conn)
            .await?;
        }
        Ok(())
    }

    async fn reserve(
        &self,
        conn: &mut Conn,
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
                    "points do not pay in this `currency`; they pay in {}",
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
                    "`points` are worth more than the maximum amount of {} minor units",
                    Money::MAX_AMOUNT
                ),
            )
        })?;
        let held = Self::shift(
            conn,
            "UPDATE balances SET available = available - $1, held = held + $1 \
             WHERE customer_id = $2 AND available >= $1 RETURNING customer_id",
            customer,
            points,
        )
        .await?;
        if !held {
            let balance = self
                .balance(conn, customer)
                .await?
                .ok_or_else(Self::no_account)?;
            return Err(ApiError::invalid(
                "insufficient-points",
                format!(
                    "more points requested than the {} available",
                    balance.available
                ),
            ));
        }
        Ok(PointsHold {
            points,
            value,
            point_value,
        })
    }

    async fn release(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
        hold: &PointsHold,
    ) -> Result<(), ApiError> {
        Self::shift(
            conn,
            "UPDATE balances SET held = held - $1, available = available + $1 \
             WHERE customer_id = $2 AND held >= $1 RETURNING customer_id",
            customer,
            hold.points,
        )
        .await
        .map(drop)
    }

    async fn apply(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
        hold: &PointsHold,
    ) -> Result<(), ApiError> {
        let spent = Self::shift(
            conn,
            "UPDATE balances SET held = held - $1, spent = spent + $1 \
             WHERE customer_id = $2 AND held >= $1 RETURNING customer_id",
            customer,
            hold.points,
        )
        .await?;
        if spent {
            Ok(())
        } else {
            Err(ApiError::internal("a held balance vanished"))
        }
    }

    async fn reverse(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
        hold: &PointsHold,
    ) -> Result<(), ApiError> {
        Self::shift(
            conn,
            "UPDATE balances SET spent = spent - $1, available = available + $1 \
             WHERE customer_id = $2 AND spent >= $1 RETURNING customer_id",
            customer,
            hold.points,
        )
        .await
        .map(drop)
    }

    fn settlement(hold: &PointsHold) -> Settlement {
        Settlement::pays(hold.value)
    }

    fn constraints(hold: &PointsHold) -> serde_json::Value {
        serde_json::json!({"points": hold.points})
    }
}
