//! Holds and their lifecycle, one lock over the domain's state so that nothing is applied twice:
//!
//! ```text
//! held ──redeem──▶ redeemed ──cancel──▶ reversed
//!   │ ╲
//!   │  ╲──expiry──▶ expired
//!   └──cancel──▶ released
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use ctr_service_kit::ApiError;
use ctr_token::Clock;
use parking_lot::Mutex;
use serde::Serialize;
use uuid::Uuid;

use crate::{CustomerId, Ledger, OrderProcessingId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Held,
    Redeemed,
    Released,
    Reversed,
    Expired,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Redeemed => "redeemed",
            Self::Released => "released",
            Self::Reversed => "reversed",
            Self::Expired => "expired",
        }
    }
}

/// One hold, keyed by the `jti` of the token that confirms it.
#[derive(Debug, Clone)]
pub struct HoldRecord<H> {
    pub jti: Uuid,
    pub order_processing_id: OrderProcessingId,
    pub customer_id: CustomerId,
    pub hold: H,
    pub state: HoldState,
    pub expires_at: i64,
}

/// What a redemption answered; a repeat answers the same, with `replayed`.
#[derive(Debug, Clone)]
pub struct Redemption<H> {
    pub record: HoldRecord<H>,
    pub replayed: bool,
}

struct Inner<L: Ledger> {
    ledger: L,
    holds: HashMap<Uuid, HoldRecord<L::Hold>>,
    /// Holds still `held`, by expiry, so expiring them is cheap.
    expiry: BTreeSet<(i64, Uuid)>,
}

/// The domain's state: its ledger and every hold.
pub struct Engine<L: Ledger> {
    inner: Mutex<Inner<L>>,
    clock: Arc<dyn Clock>,
    hold_ttl: i64,
}

impl<L: Ledger> Inner<L> {
    /// Expires every hold whose time has come, giving its reservation back.
    fn sweep(&mut self, now: i64) {
        while let Some(&(expires_at, jti)) = self.expiry.first() {
            if expires_at > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(record) = self.holds.get_mut(&jti)
                && record.state == HoldState::Held
            {
                self.ledger.release(&record.hold);
                record.state = HoldState::Expired;
                tracing::info!(domain = L::DOMAIN, %jti, "hold expired");
            }
        }
    }
}

fn hold_not_found(jti: Uuid) -> ApiError {
    ApiError::not_found("hold-not-found", format!("no hold for jti {jti}"))
}

impl<L: Ledger> Engine<L> {
    pub fn new(ledger: L, clock: Arc<dyn Clock>, hold_ttl: Duration) -> Self {
        let inner = Inner {
            ledger,
            holds: HashMap::new(),
            expiry: BTreeSet::new(),
        };
        Self {
            inner: Mutex::new(inner),
            clock,
            hold_ttl: i64::try_from(hold_ttl.as_secs()).unwrap_or(600),
        }
    }

    /// Applies the domain's rules and places a hold under a fresh `jti`.
    pub fn hold(
        &self,
        order: &OrderProcessingId,
        customer: &CustomerId,
        request: L::Request,
    ) -> Result<HoldRecord<L::Hold>, ApiError> {
        let now = self.clock.now_secs();
        let mut inner = self.inner.lock();
        inner.sweep(now);
        let hold = inner.ledger.reserve(customer, request, now)?;
        let record = HoldRecord {
            jti: Uuid::now_v7(),
            order_processing_id: order.clone(),
            customer_id: customer.clone(),
            hold,
            state: HoldState::Held,
            expires_at: now + self.hold_ttl,
        };
        inner.expiry.insert((record.expires_at, record.jti));
        inner.holds.insert(record.jti, record.clone());
        Ok(record)
    }

    /// Makes the hold final, once: a repeat answers the first result and changes nothing.
    pub fn redeem(
        &self,
        jti: Uuid,
        order: &OrderProcessingId,
        customer: &CustomerId,
    ) -> Result<Redemption<L::Hold>, ApiError> {
        self.with_hold(jti, |ledger, record, expiry| {
            if record.order_processing_id != *order || record.customer_id != *customer {
                return Err(ApiError::conflict(
                    "hold-mismatch",
                    "the hold belongs to another order or customer",
                ));
            }
            match record.state {
                HoldState::Redeemed => Ok(Redemption {
                    record: record.clone(),
                    replayed: true,
                }),
                HoldState::Held => {
                    ledger.apply(&record.hold)?;
                    record.state = HoldState::Redeemed;
                    expiry.remove(&(record.expires_at, jti));
                    Ok(Redemption {
                        record: record.clone(),
                        replayed: false,
                    })
                }
                HoldState::Expired => Err(ApiError::new(
                    StatusCode::GONE,
                    "hold-expired",
                    "Hold expired",
                    format!("the hold for jti {jti} expired before it was redeemed"),
                )),
                HoldState::Released | HoldState::Reversed => Err(ApiError::conflict(
                    "hold-released",
                    format!("the hold for jti {jti} was cancelled"),
                )),
            }
        })
    }

    /// Releases a hold or reverses a redemption; idempotent.
    pub fn cancel(
        &self,
        jti: Uuid,
        order: &OrderProcessingId,
    ) -> Result<HoldRecord<L::Hold>, ApiError> {
        self.with_hold(jti, |ledger, record, expiry| {
            if record.order_processing_id != *order {
                return Err(ApiError::conflict(
                    "hold-mismatch",
                    "the hold belongs to another order",
                ));
            }
            match record.state {
                HoldState::Held => {
                    ledger.release(&record.hold);
                    record.state = HoldState::Released;
                    expiry.remove(&(record.expires_at, jti));
                }
                HoldState::Redeemed => {
                    ledger.reverse(&record.hold);
                    record.state = HoldState::Reversed;
                }
                HoldState::Released | HoldState::Reversed | HoldState::Expired => {}
            }
            Ok(record.clone())
        })
    }

    /// Runs `f` on the hold `jti` under the lock, after expiring what is due.
    fn with_hold<T>(
        &self,
        jti: Uuid,
        f: impl FnOnce(
            &mut L,
            &mut HoldRecord<L::Hold>,
            &mut BTreeSet<(i64, Uuid)>,
        ) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut inner = self.inner.lock();
        inner.sweep(self.clock.now_secs());
        let Inner {
            ledger,
            holds,
            expiry,
        } = &mut *inner;
        let record = holds.get_mut(&jti).ok_or_else(|| hold_not_found(jti))?;
        f(ledger, record, expiry)
    }

    /// Gives a hold back right away (its token could not be signed).
    pub fn discard(&self, jti: Uuid) {
        let mut inner = self.inner.lock();
        let Inner {
            ledger,
            holds,
            expiry,
        } = &mut *inner;
        if let Some(record) = holds.remove(&jti) {
            expiry.remove(&(record.expires_at, jti));
            if record.state == HoldState::Held {
                ledger.release(&record.hold);
            }
        }
    }

    pub fn get(&self, jti: Uuid) -> Option<HoldRecord<L::Hold>> {
        let mut inner = self.inner.lock();
        inner.sweep(self.clock.now_secs());
        inner.holds.get(&jti).cloned()
    }

    /// Reads the ledger after expiring what is due.
    pub fn read<T>(&self, f: impl FnOnce(&L) -> T) -> T {
        let mut inner = self.inner.lock();
        inner.sweep(self.clock.now_secs());
        f(&inner.ledger)
    }
}
