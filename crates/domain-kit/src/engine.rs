//! Holds and their lifecycle, one lock over the domain's state so that nothing is applied twice:
//!
//! ```text
//! held ──redeem──▶ redeemed ──cancel──▶ reversed
//!   │ ╲
//!   │  ╲──expiry──▶ expired
//!   └──cancel──▶ released
//! ```
//!
//! Expired and released holds are forgotten `retention` after their expiry; redeemed and
//! reversed ones are the domain's records and are kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use ctr_service_kit::ApiError;
use ctr_token::{Clock, Settlement, secs};
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
    schedule: Schedule,
}

/// What happens to holds with time, earliest first, so that each step is cheap.
struct Schedule {
    /// Holds still `held`, by expiry.
    expiry: BTreeSet<(i64, Uuid)>,
    /// Holds that ended unredeemed (expired, released), by when they are forgotten.
    forget: BTreeSet<(i64, Uuid)>,
    retention: i64,
}

impl Schedule {
    /// The hold left `held` without being redeemed: forget it `retention` after its expiry.
    fn ended_unredeemed(&mut self, expires_at: i64, jti: Uuid) {
        self.expiry.remove(&(expires_at, jti));
        self.forget
            .insert((expires_at.saturating_add(self.retention), jti));
    }
}

/// The domain's state: its ledger and its holds.
pub struct Engine<L: Ledger> {
    inner: Mutex<Inner<L>>,
    clock: Arc<dyn Clock>,
    hold_ttl: i64,
}

fn due(set: &BTreeSet<(i64, Uuid)>, now: i64) -> Option<(i64, Uuid)> {
    set.first().copied().filter(|&(at, _)| at <= now)
}

impl<L: Ledger> Inner<L> {
    /// Expires every hold whose time has come, giving its reservation back, and forgets the
    /// unredeemed holds past their retention.
    fn sweep(&mut self, now: i64) {
        while let Some((expires_at, jti)) = due(&self.schedule.expiry, now) {
            self.schedule.expiry.remove(&(expires_at, jti));
            if let Some(record) = self.holds.get_mut(&jti)
                && record.state == HoldState::Held
            {
                self.ledger.release(&record.hold);
                record.state = HoldState::Expired;
                self.schedule.ended_unredeemed(expires_at, jti);
                tracing::info!(domain = L::DOMAIN, %jti, "hold expired");
            }
        }
        while let Some(entry) = due(&self.schedule.forget, now) {
            self.schedule.forget.remove(&entry);
            self.holds.remove(&entry.1);
        }
    }
}

fn hold_not_found(jti: Uuid) -> ApiError {
    ApiError::not_found("hold-not-found", format!("no hold for jti {jti}"))
}

impl<L: Ledger> Engine<L> {
    /// `retention`: how long an expired or released hold stays readable after its expiry.
    pub fn new(ledger: L, clock: Arc<dyn Clock>, hold_ttl: Duration, retention: Duration) -> Self {
        let inner = Inner {
            ledger,
            holds: HashMap::new(),
            schedule: Schedule {
                expiry: BTreeSet::new(),
                forget: BTreeSet::new(),
                retention: secs(retention),
            },
        };
        Self {
            inner: Mutex::new(inner),
            clock,
            hold_ttl: secs(hold_ttl),
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
        inner
            .schedule
            .expiry
            .insert((record.expires_at, record.jti));
        inner.holds.insert(record.jti, record.clone());
        Ok(record)
    }

    /// Makes the hold final, once: a repeat answers the first result and changes nothing.
    /// `claimed` is what the token says it settles: it must be what the hold was confirmed
    /// for (a payment captures exactly the authorized amount).
    pub fn redeem(
        &self,
        jti: Uuid,
        order: &OrderProcessingId,
        customer: &CustomerId,
        claimed: &Settlement,
    ) -> Result<Redemption<L::Hold>, ApiError> {
        self.with_hold(jti, |ledger, record, schedule| {
            if record.order_processing_id != *order || record.customer_id != *customer {
                return Err(ApiError::conflict(
                    "hold-mismatch",
                    "the hold belongs to another order or customer",
                ));
            }
            let confirmed = L::settlement(&record.hold);
            if confirmed != *claimed {
                return Err(ApiError::conflict(
                    "settlement-mismatch",
                    format!(
                        "the token settles {}, the hold was confirmed for {}",
                        claimed.settles, confirmed.settles
                    ),
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
                    schedule.expiry.remove(&(record.expires_at, jti));
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
        self.with_hold(jti, |ledger, record, schedule| {
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
                    schedule.ended_unredeemed(record.expires_at, jti);
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
        f: impl FnOnce(&mut L, &mut HoldRecord<L::Hold>, &mut Schedule) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut inner = self.inner.lock();
        inner.sweep(self.clock.now_secs());
        let Inner {
            ledger,
            holds,
            schedule,
        } = &mut *inner;
        let record = holds.get_mut(&jti).ok_or_else(|| hold_not_found(jti))?;
        f(ledger, record, schedule)
    }

    /// Gives a hold back right away (its token could not be signed).
    pub fn discard(&self, jti: Uuid) {
        let mut inner = self.inner.lock();
        let Inner {
            ledger,
            holds,
            schedule,
        } = &mut *inner;
        if let Some(record) = holds.remove(&jti) {
            schedule.expiry.remove(&(record.expires_at, jti));
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

#[cfg(test)]
mod tests {
    use ctr_money::{Currency, Money};
    use ctr_token::FakeClock;
    use serde_json::{Value, json};

    use super::*;

    /// One unit of stock per hold: enough to see holds reserve, release and settle.
    struct Stock(u32);

    impl Ledger for Stock {
        const DOMAIN: &'static str = "stock";
        const CAPABILITY: &'static str = "stock:redeem";
        type Request = ();
        type Hold = ();

        fn reserve(&mut self, _: &CustomerId, (): (), _: i64) -> Result<(), ApiError> {
            self.0 = self
                .0
                .checked_sub(1)
                .ok_or_else(|| ApiError::conflict("sold-out", "no stock left"))?;
            Ok(())
        }
        fn release(&mut self, (): &()) {
            self.0 += 1;
        }
        fn apply(&mut self, (): &()) -> Result<(), ApiError> {
            Ok(())
        }
        fn reverse(&mut self, (): &()) {
            self.0 += 1;
        }
        fn settlement((): &()) -> Settlement {
            one_unit()
        }
        fn constraints((): &()) -> Value {
            json!({})
        }
    }

    fn one_unit() -> Settlement {
        Settlement::pays(Money::checked(100, Currency::parse("EUR").unwrap()).unwrap())
    }

    fn engine(clock: &Arc<FakeClock>) -> Engine<Stock> {
        let clock: Arc<dyn Clock> = clock.clone();
        Engine::new(
            Stock(10),
            clock,
            Duration::from_secs(600),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn unredeemed_holds_are_forgotten_after_retention_and_redeemed_ones_are_kept() {
        let clock = Arc::new(FakeClock::at_secs(1_000));
        let engine = engine(&clock);
        let order = OrderProcessingId::generate();
        let customer = CustomerId::parse("c_alice").unwrap();
        let expiring = engine.hold(&order, &customer, ()).unwrap().jti;
        let released = engine.hold(&order, &customer, ()).unwrap().jti;
        let redeemed = engine.hold(&order, &customer, ()).unwrap().jti;
        engine.cancel(released, &order).unwrap();
        engine
            .redeem(redeemed, &order, &customer, &one_unit())
            .unwrap();
        assert_eq!(
            engine.read(|stock| stock.0),
            8,
            "one released, two still out"
        );

        clock.set_secs(1_000 + 600);
        assert_eq!(
            engine.get(expiring).map(|r| r.state),
            Some(HoldState::Expired),
            "at its expiry the hold expires and stays readable"
        );
        assert_eq!(engine.read(|stock| stock.0), 9, "its stock came back");

        clock.set_secs(1_000 + 600 + 3_599);
        assert!(engine.get(released).is_some(), "kept within retention");

        clock.set_secs(1_000 + 600 + 3_600);
        assert!(engine.get(expiring).is_none(), "expired hold forgotten");
        assert!(engine.get(released).is_none(), "released hold forgotten");
        assert_eq!(
            engine.get(redeemed).map(|r| r.state),
            Some(HoldState::Redeemed),
            "a redeemed hold is a record and is kept"
        );
        assert_eq!(
            engine.cancel(expiring, &order).unwrap_err().slug,
            "hold-not-found",
            "a forgotten hold answers not found"
        );
        assert_eq!(engine.read(|stock| stock.0), 9, "forgetting moves no stock");
    }

    #[test]
    fn a_token_that_settles_another_amount_than_its_hold_is_not_redeemed() {
        let clock = Arc::new(FakeClock::at_secs(1_000));
        let engine = engine(&clock);
        let order = OrderProcessingId::generate();
        let customer = CustomerId::parse("c_alice").unwrap();
        let jti = engine.hold(&order, &customer, ()).unwrap().jti;
        let more = Settlement::pays(Money::checked(101, Currency::parse("EUR").unwrap()).unwrap());
        let refused = engine.redeem(jti, &order, &customer, &more).unwrap_err();
        assert_eq!(refused.slug, "settlement-mismatch");
        assert_eq!(
            engine.get(jti).map(|r| r.state),
            Some(HoldState::Held),
            "the refused redemption changed nothing"
        );
        assert!(
            !engine
                .redeem(jti, &order, &customer, &one_unit())
                .unwrap()
                .replayed
        );
    }
}
