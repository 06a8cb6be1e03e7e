//! Coupons: percentage and fixed-amount discounts, minimum totals, validity windows,
//! single-use and per-customer coupons.

use std::collections::HashSet;

use async_trait::async_trait;
use axum::http::StatusCode;
use ctr_domain_kit::{CustomerId, Ledger, reference};
use ctr_money::Money;
use ctr_service_kit::ApiError;
use ctr_store::{Conn, Migration, StoreError, query, query_as};
use ctr_token::Settlement;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Discount {
    /// Whole percent of the order total, 1 to 100.
    Percent(u8),
    Fixed(Money),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coupon {
    pub code: String,
    pub discount: Discount,
    pub min_total: Money,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
    pub max_uses: u32,
    /// Only this customer may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    #[serde(default)]
    pub uses: u32,
    /// Uses held by unexpired confirmations.
    #[serde(default)]
    pub reserved: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub coupons: Vec<Coupon>,
}

/// The coupons of the store, seeded from [`Seed`] when the store has none.
#[derive(Debug)]
pub struct Coupons {
    seed: Vec<Coupon>,
}

/// Coupons: the code, and the order total the discount is computed on.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct CouponRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    coupon_code: String,
    order_total: Money,
}

/// What a coupon hold reserved: one use of the code, and the discount it gives.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CouponHold {
    pub coupon_code: String,
    pub discount: Money,
    pub order_total: Money,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 100,
    name: "coupons",
    sql: include_str!("../migrations/0100_coupons.sql"),
}];

impl Coupons {
    pub fn from_seed(seed: Seed) -> Result<Self, String> {
        let mut codes = HashSet::new();
        for coupon in &seed.coupons {
            if let Discount::Percent(p) = coupon.discount
                && !(1..=100).contains(&p)
            {
                return Err(format!("coupon {}: percent must be 1 to 100", coupon.code));
            }
            if !codes.insert(coupon.code.clone()) {
                return Err("a coupon code appears twice".into());
            }
        }
        Ok(Self { seed: seed.coupons })
    }

    /// The coupon `code` with its counters as stored now.
    pub async fn get(&self, conn: &mut Conn, code: &str) -> Result<Option<Coupon>, ApiError> {
        let row: Option<(String, i64, i64)> =
            query_as("SELECT definition, uses, reserved FROM coupons WHERE code = $1")
                .bind(code)
                .fetch_optional(conn)
                .await?;
        row.map(|(definition, uses, reserved)| {
            let mut coupon: Coupon = serde_json::from_str(&definition)
                .map_err(|_| ApiError::internal("a stored coupon is invalid"))?;
            coupon.uses = u32::try_from(uses).map_err(ApiError::internal)?;
            coupon.reserved = u32::try_from(reserved).map_err(ApiError::internal)?;
            Ok(coupon)
        })
        .transpose()
    }

    /// Moves the counters of `code` by one update; answers whether its condition held
    /// (pipelined, the server checks: see [`Conn::guarded`]).
    async fn count(conn: &mut Conn, sql: &'static str, code: &str) -> Result<bool, ApiError> {
        Ok(conn.guarded(query(sql).bind(code), 1).await?)
    }
}
impl Coupon {
    /// What a person with curl sees: `available`, `reserved`, `used` or `expired`.
    pub fn status(&self, now: i64) -> &'static str {
        if now > self.valid_until.unix_timestamp() || now < self.valid_from.unix_timestamp() {
            "expired"
        } else if self.uses >= self.max_uses {
            "used"
        } else if self.uses + self.reserved >= self.max_uses {
            "reserved"
        } else {
            "available"
        }
    }
}

#[async_trait]
impl Ledger for Coupons {
    const DOMAIN: &'static str = "coupons";
    const CAPABILITY: &'static str = "coupons:redeem";
    const CONFIRM_SCOPE: &'static str = ctr_service_kit::scopes::COUPONS_CONFIRM;
    const READ_SCOPE: &'static str = ctr_service_kit::scopes::COUPONS_READ;
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    type Request = CouponRequest;
    type Hold = CouponHold;

    async fn seed(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let (count,): (i64,) = query_as("SELECT COUNT(*) FROM coupons")
            .fetch_one(conn)
            .await?;
        if count > 0 {
            return Ok(());
        }
        for coupon in &self.seed {
            query(
                "INSERT INTO coupons (code, definition, max_uses, uses, reserved) \
                 VALUES ($1, $2, $3, $4, 0) ON CONFLICT (code) DO NOTHING",
            )
            .bind(&coupon.code)
            .bind(serde_json::to_string(coupon).unwrap_or_default())
            .bind(i64::from(coupon.max_uses))
            .bind(i64::from(coupon.uses))
            .execute(conn)
            .await?;
        }
        Ok(())
    }

    async fn reserve(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
        request: CouponRequest,
        now: i64,
    ) -> Result<CouponHold, ApiError> {
        let code = reference("coupon_code", &request.coupon_code)?;
        let total = request.order_total;
        let coupon = self
            .get(conn, &code)
            .await?
            .ok_or_else(|| ApiError::not_found("coupon-not-found", "no coupon has this code"))?;
        if now < coupon.valid_from.unix_timestamp() {
            return Err(ApiError::invalid(
                "coupon-not-yet-valid",
                "the coupon is not valid yet",
            ));
        }
        if now > coupon.valid_until.unix_timestamp() {
            return Err(ApiError::invalid(
                "coupon-expired",
                "the coupon has expired",
            ));
        }
        if coupon
            .customer_id
            .as_ref()
            .is_some_and(|owner| owner != customer)
        {
            return Err(ApiError::invalid(
                "coupon-not-for-customer",
                "the coupon belongs to another customer",
            ));
        }
        if total.currency != coupon.min_total.currency {
            return Err(ApiError::invalid(
                "currency-mismatch",
                format!(
                    "`order_total.currency` must be {} for this coupon",
                    coupon.min_total.currency
                ),
            ));
        }
        if total.amount < coupon.min_total.amount {
            return Err(ApiError::invalid(
                "coupon-minimum-not-met",
                format!(
                    "the coupon needs an order total of at least {}",
                    coupon.min_total
                ),
            ));
        }
        if coupon.uses >= coupon.max_uses {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "coupon-exhausted",
                "Coupon exhausted",
                "the coupon has been used up",
            ));
        }
        let reserved_by_others = || {
            ApiError::conflict(
                "coupon-reserved",
                "the coupon is held by another confirmation",
            )
        };
        if coupon.uses + coupon.reserved >= coupon.max_uses {
            return Err(reserved_by_others());
        }
        // A percentage rounds half up to the cent; a fixed discount pays at most the total.
        let discount = match coupon.discount {
            Discount::Percent(p) => total.percent_bp(u32::from(p) * 100),
            Discount::Fixed(amount) => amount.min(total),
        };
        if discount.amount == 0 {
            return Err(ApiError::invalid(
                "coupon-no-discount",
                "the coupon would take nothing off this order total",
            ));
        }
        // The check above may be stale by now: the update's own condition decides.
        let reserved = Self::count(
            conn,
            "UPDATE coupons SET reserved = reserved + 1 \
             WHERE code = $1 AND uses + reserved < max_uses RETURNING code",
            &code,
        )
        .await?;
        if !reserved {
            return Err(reserved_by_others());
        }
        Ok(CouponHold {
            coupon_code: code,
            discount,
            order_total: total,
        })
    }

    async fn release(
        &self,
        conn: &mut Conn,
        _customer: &CustomerId,
        hold: &CouponHold,
    ) -> Result<(), ApiError> {
        Self::count(
            conn,
            "UPDATE coupons SET reserved = reserved - 1 WHERE code = $1 AND reserved > 0 \
             RETURNING code",
            &hold.coupon_code,
        )
        .await
        .map(drop)
    }

    async fn apply(
        &self,
        conn: &mut Conn,
        _customer: &CustomerId,
        hold: &CouponHold,
    ) -> Result<(), ApiError> {
        let used = Self::count(
            conn,
            "UPDATE coupons SET reserved = reserved - 1, uses = uses + 1 \
             WHERE code = $1 AND reserved > 0 RETURNING code",
            &hold.coupon_code,
        )
        .await?;
        if used {
            Ok(())
        } else {
            Err(ApiError::internal("a held coupon vanished"))
        }
    }

    async fn reverse(
        &self,
        conn: &mut Conn,
        _customer: &CustomerId,
        hold: &CouponHold,
    ) -> Result<(), ApiError> {
        Self::count(
            conn,
            "UPDATE coupons SET uses = uses - 1 WHERE code = $1 AND uses > 0 RETURNING code",
            &hold.coupon_code,
        )
        .await
        .map(drop)
    }

    fn settlement(hold: &CouponHold) -> Settlement {
        Settlement {
            settles: hold.discount,
            priced_on: Some(hold.order_total),
        }
    }

    fn constraints(hold: &CouponHold) -> serde_json::Value {
        serde_json::json!({"coupon_ref": hold.coupon_code, "discount": hold.discount, "order_total": hold.order_total})
    }
}
