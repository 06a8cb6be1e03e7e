//! Coupons: percentage and fixed-amount discounts, minimum totals, validity windows,
//! single-use and per-customer coupons.

use std::collections::HashMap;

use axum::http::StatusCode;
use ctr_domain_kit::{CustomerId, Ledger, reference};
use ctr_money::Money;
use ctr_service_kit::ApiError;
use ctr_token::Settlement;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Default)]
pub struct Coupons {
    coupons: HashMap<String, Coupon>,
}

#[derive(Debug, Deserialize)]
pub struct CouponRequest {
    coupon_code: String,
    order_total: Money,
}

#[derive(Debug, Clone, Serialize)]
pub struct CouponHold {
    pub coupon_code: String,
    pub discount: Money,
    pub order_total: Money,
}

impl Coupons {
    pub fn from_seed(seed: Seed) -> Result<Self, String> {
        let mut coupons = HashMap::new();
        for coupon in seed.coupons {
            if let Discount::Percent(p) = coupon.discount
                && !(1..=100).contains(&p)
            {
                return Err(format!("coupon {}: percent must be 1 to 100", coupon.code));
            }
            if coupons.insert(coupon.code.clone(), coupon).is_some() {
                return Err("a coupon code appears twice".into());
            }
        }
        Ok(Self { coupons })
    }

    pub fn get(&self, code: &str) -> Option<&Coupon> {
        self.coupons.get(code)
    }

    fn coupon_mut(&mut self, code: &str) -> Option<&mut Coupon> {
        self.coupons.get_mut(code)
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

impl Ledger for Coupons {
    const DOMAIN: &'static str = "coupons";
    const CAPABILITY: &'static str = "coupons:redeem";
    type Request = CouponRequest;
    type Hold = CouponHold;

    fn reserve(
        &mut self,
        customer: &CustomerId,
        request: CouponRequest,
        now: i64,
    ) -> Result<CouponHold, ApiError> {
        let code = reference("coupon_code", &request.coupon_code)?;
        let total = request.order_total;
        let coupon = self.coupon_mut(&code).ok_or_else(|| {
            ApiError::not_found("coupon-not-found", format!("no coupon `{code}`"))
        })?;
        if now < coupon.valid_from.unix_timestamp() {
            return Err(ApiError::invalid(
                "coupon-not-yet-valid",
                format!("coupon `{code}` is not valid yet"),
            ));
        }
        if now > coupon.valid_until.unix_timestamp() {
            return Err(ApiError::invalid(
                "coupon-expired",
                format!("coupon `{code}` expired"),
            ));
        }
        if coupon
            .customer_id
            .as_ref()
            .is_some_and(|owner| owner != customer)
        {
            return Err(ApiError::invalid(
                "coupon-not-for-customer",
                format!("coupon `{code}` belongs to another customer"),
            ));
        }
        if total.currency != coupon.min_total.currency {
            return Err(ApiError::invalid(
                "currency-mismatch",
                format!(
                    "`order_total.currency` must be {} for coupon `{code}`",
                    coupon.min_total.currency
                ),
            ));
        }
        if total.amount < coupon.min_total.amount {
            return Err(ApiError::invalid(
                "coupon-minimum-not-met",
                format!(
                    "coupon `{code}` needs an order total of at least {}",
                    coupon.min_total
                ),
            ));
        }
        if coupon.uses >= coupon.max_uses {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "coupon-exhausted",
                "Coupon exhausted",
                format!("coupon `{code}` has been used up"),
            ));
        }
        if coupon.uses + coupon.reserved >= coupon.max_uses {
            return Err(ApiError::conflict(
                "coupon-reserved",
                format!("coupon `{code}` is held by another confirmation"),
            ));
        }
        // A percentage rounds half up to the cent; a fixed discount pays at most the total.
        let discount = match coupon.discount {
            Discount::Percent(p) => total.percent_bp(u32::from(p) * 100),
            Discount::Fixed(amount) => amount.min(total),
        };
        if discount.amount == 0 {
            return Err(ApiError::invalid(
                "coupon-no-discount",
                format!("coupon `{code}` would take nothing off an order total of {total}"),
            ));
        }
        coupon.reserved += 1;
        Ok(CouponHold {
            coupon_code: code,
            discount,
            order_total: total,
        })
    }

    fn release(&mut self, hold: &CouponHold) {
        if let Some(c) = self.coupon_mut(&hold.coupon_code) {
            c.reserved = c.reserved.saturating_sub(1);
        }
    }

    fn apply(&mut self, hold: &CouponHold) -> Result<(), ApiError> {
        let coupon = self
            .coupon_mut(&hold.coupon_code)
            .ok_or_else(|| ApiError::internal("a held coupon vanished"))?;
        coupon.reserved = coupon.reserved.saturating_sub(1);
        coupon.uses += 1;
        Ok(())
    }

    fn reverse(&mut self, hold: &CouponHold) {
        if let Some(c) = self.coupon_mut(&hold.coupon_code) {
            c.uses = c.uses.saturating_sub(1);
        }
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
