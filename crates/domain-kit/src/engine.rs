//! Holds and their lifecycle, kept in the domain's store so that a restart loses nothing and
//! several processes of a domain apply each change once:
//!
//! ```text
//! held ──redeem──▶ redeemed ──cancel (within the window)──▶ reversed
//!   │ ╲
//!   │  ╲──expiry──▶ expired
//!   └──cancel──▶ released
//! ```
//!
//! Every transition is a conditional update (`... WHERE state = 'held'`) in the same
//! transaction as the ledger's change, so of two racing processes one wins and the other
//! reads the winner's result. Expired and released holds are forgotten `retention` after their
//! expiry, in bounded batches; redeemed and reversed ones are the domain's records and stay.
//!
//! A cancellation compensates a checkout that did not complete: it may release a hold at any
//! time, but reverse a redemption only within `cancel_window` of it (`CTR_CANCEL_WINDOW`).
//! After that the redemption is final; undoing it would be a refund, which is not a
//! capability any token grants.

use std::sync::Arc;

use axum::http::StatusCode;
use ctr_service_kit::{ApiError, seconds_until};
use ctr_store::{Conn, Migration, Store, sqlx};
use ctr_token::{Clock, Settlement, secs};
use serde::Serialize;
use uuid::Uuid;

use crate::{CustomerId, DomainSettings, Ledger, OrderProcessingId};

/// The kit's own tables; a domain's start at version 100.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "holds",
        sql: include_str!("../migrations/0001_holds.sql"),
    },
    Migration {
        version: 2,
        name: "mock kms seed",
        sql: include_str!("../migrations/0002_mock_kms_seed.sql"),
    },
    Migration {
        version: 3,
        name: "redeemed at, holds by customer",
        sql: include_str!("../migrations/0003_redeemed_at.sql"),
    },
];

/// How many holds one sweep expires or forgets at most.
const SWEEP_BATCH: i64 = 200;

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

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Held,
            Self::Redeemed,
            Self::Released,
            Self::Reversed,
            Self::Expired,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
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
    /// When it was redeemed: a cancellation may reverse it only within the window after this.
    pub redeemed_at: Option<i64>,
}

/// What a redemption answered; a repeat answers the same, with `replayed`.
#[derive(Debug, Clone)]
pub struct Redemption<H> {
    pub record: HoldRecord<H>,
    pub replayed: bool,
}

/// The domain's state: its ledger and its holds, in its store.
pub struct Engine<L: Ledger> {
    ledger: L,
    store: Store,
    clock: Arc<dyn Clock>,
    hold_ttl: i64,
    retention: i64,
    cancel_window: i64,
    holds_per_customer: i64,
}

fn hold_not_found() -> ApiError {
    ApiError::not_found("hold-not-found", "no hold for this jti")
}

type HoldRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

impl<L: Ledger> Engine<L> {
    /// The lifetimes and limits come from `settings`: `CTR_HOLD_TTL`, `CTR_HOLD_RETENTION`,
    /// `CTR_CANCEL_WINDOW`, `CTR_MAX_HOLDS_PER_CUSTOMER`.
    pub fn new(ledger: L, store: Store, clock: Arc<dyn Clock>, settings: &DomainSettings) -> Self {
        Self {
            ledger,
            store,
            clock,
            hold_ttl: secs(settings.hold_ttl),
            retention: secs(settings.hold_retention),
            cancel_window: secs(settings.cancel_window),
            holds_per_customer: i64::from(settings.max_holds_per_customer),
        }
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Applies the domain's rules and places a hold under a fresh `jti`, in one transaction.
    pub async fn hold(
        &self,
        order: &OrderProcessingId,
        customer: &CustomerId,
        request: L::Request,
    ) -> Result<HoldRecord<L::Hold>, ApiError> {
        let now = self.clock.now_secs();
        let mut tx = self.store.begin().await?;
        let hold = self.ledger.reserve(&mut tx, customer, request, now).await?;
        let record = HoldRecord {
            jti: Uuid::now_v7(),
            order_processing_id: order.clone(),
            customer_id: customer.clone(),
            hold,
            state: HoldState::Held,
            expires_at: now.saturating_add(self.hold_ttl),
            redeemed_at: None,
        };
        // Every hold costs a signature and keeps something from others until it ends: one
        // customer may have only so many at once. The insert checks it; when it refuses,
        // dropping the transaction undoes the reservation.
        let placed = sqlx::query(
            "INSERT INTO holds (jti, order_processing_id, customer_id, state, hold, expires_at) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE (SELECT COUNT(*) FROM holds \
             WHERE customer_id = $3 AND state = 'held' AND expires_at > $7) < $8",
        )
        .bind(record.jti.to_string())
        .bind(order.as_str())
        .bind(customer.as_str())
        .bind(HoldState::Held.as_str())
        .bind(serde_json::to_string(&record.hold).map_err(ApiError::internal)?)
        .bind(record.expires_at)
        .bind(now)
        .bind(self.holds_per_customer)
        .execute(&mut *tx)
        .await?;
        if placed.rows_affected() != 1 {
            let (held, first): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(expires_at) FROM holds \
                 WHERE customer_id = $1 AND state = 'held' AND expires_at > $2",
            )
            .bind(customer.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            return Err(ApiError::too_many(
                "too-many-holds",
                format!(
                    "this customer holds {held} confirmations here already; redeem, cancel or let one expire"
                ),
                seconds_until(first, now),
            ));
        }
        tx.commit().await?;
        Ok(record)
    }

    /// Makes the hold final, once: a repeat answers the first result and changes nothing.
    /// `claimed` is what the token says it settles: it must be what the hold was confirmed
    /// for (a payment captures exactly the authorized amount).
    pub async fn redeem(
        &self,
        jti: Uuid,
        order: &OrderProcessingId,
        customer: &CustomerId,
        claimed: &Settlement,
    ) -> Result<Redemption<L::Hold>, ApiError> {
        let now = self.clock.now_secs();
        let mut tx = self.store.begin().await?;
        let mut record = self.current(&mut tx, jti, now).await?;
        let confirmed = L::settlement(&record.hold);
        let refusal = if record.order_processing_id != *order || record.customer_id != *customer {
            Some(ApiError::conflict(
                "hold-mismatch",
                "the hold belongs to another order or customer",
            ))
        } else if confirmed != *claimed {
            Some(ApiError::conflict(
                "settlement-mismatch",
                "the token's `settles` is not what the hold was confirmed for",
            ))
        } else {
            match record.state {
                HoldState::Redeemed | HoldState::Held => None,
                HoldState::Expired => Some(ApiError::new(
                    StatusCode::GONE,
                    "hold-expired",
                    "Hold expired",
                    "the hold expired before it was redeemed",
                )),
                HoldState::Released | HoldState::Reversed => Some(ApiError::conflict(
                    "hold-released",
                    "the hold was cancelled",
                )),
            }
        };
        if let Some(refusal) = refusal {
            tx.commit().await?; // keeps an expiry noticed on the way
            return Err(refusal);
        }
        if record.state == HoldState::Redeemed {
            tx.commit().await?;
            return Ok(Redemption {
                record,
                replayed: true,
            });
        }
        // Held: take the transition first, so a racing process waits on the row and then
        // sees it redeemed; the ledger change and the transition commit together or not at all.
        let redeemed = transition(
            &mut tx,
            jti,
            HoldState::Held,
            HoldState::Redeemed,
            None,
            Some(now),
        );
        if !redeemed.await? {
            drop(tx);
            return self.replayed(jti, now).await;
        }
        self.ledger
            .apply(&mut tx, &record.customer_id, &record.hold)
            .await?;
        tx.commit().await?;
        record.state = HoldState::Redeemed;
        record.redeemed_at = Some(now);
        Ok(Redemption {
            record,
            replayed: false,
        })
    }

    /// The answer to a redemption that lost a race: the winner's, if it redeemed.
    async fn replayed(&self, jti: Uuid, now: i64) -> Result<Redemption<L::Hold>, ApiError> {
        let mut tx = self.store.begin().await?;
        let record = self.current(&mut tx, jti, now).await?;
        tx.commit().await?;
        match record.state {
            HoldState::Redeemed => Ok(Redemption {
                record,
                replayed: true,
            }),
            _ => Err(ApiError::conflict(
                "hold-released",
                "the hold was cancelled",
            )),
        }
    }

    /// Releases a hold or reverses a redemption; idempotent.
    pub async fn cancel(
        &self,
        jti: Uuid,
        order: &OrderProcessingId,
    ) -> Result<HoldRecord<L::Hold>, ApiError> {
        let now = self.clock.now_secs();
        for _ in 0..3 {
            let mut tx = self.store.begin().await?;
            let mut record = self.current(&mut tx, jti, now).await?;
            if record.order_processing_id != *order {
                tx.commit().await?;
                return Err(ApiError::conflict(
                    "hold-mismatch",
                    "the hold belongs to another order",
                ));
            }
            let (to, forget_at) = match record.state {
                HoldState::Held => (HoldState::Released, Some(self.forget_at(&record))),
                HoldState::Redeemed => {
                    let closes = record
                        .redeemed_at
                        .map(|at| at.saturating_add(self.cancel_window));
                    if closes.is_none_or(|closes| now >= closes) {
                        tx.commit().await?;
                        return Err(ApiError::conflict(
                            "cancellation-window-closed",
                            "the redemption is final: a cancellation may reverse it only within \
                             the cancellation window after it",
                        )
                        .with("window_seconds", self.cancel_window));
                    }
                    (HoldState::Reversed, None)
                }
                HoldState::Released | HoldState::Reversed | HoldState::Expired => {
                    tx.commit().await?;
                    return Ok(record);
                }
            };
            if !transition(&mut tx, jti, record.state, to, forget_at, None).await? {
                continue; // another process moved it meanwhile: look again
            }
            let customer = &record.customer_id;
            match to {
                HoldState::Released => self.ledger.release(&mut tx, customer, &record.hold).await?,
                _ => self.ledger.reverse(&mut tx, customer, &record.hold).await?,
            }
            tx.commit().await?;
            record.state = to;
            return Ok(record);
        }
        Err(ApiError::conflict(
            "hold-contended",
            "the hold kept changing; retry",
        ))
    }

    /// Gives a hold back right away (its token could not be signed).
    pub async fn discard(&self, jti: Uuid) -> Result<(), ApiError> {
        let mut tx = self.store.begin().await?;
        if let Some(record) = self.load(&mut tx, jti).await?
            && record.state == HoldState::Held
        {
            sqlx::query("DELETE FROM holds WHERE jti = $1 AND state = 'held'")
                .bind(jti.to_string())
                .execute(&mut *tx)
                .await?;
            self.ledger
                .release(&mut tx, &record.customer_id, &record.hold)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The hold as of now (expired if its time has come), if it is still kept.
    pub async fn get(&self, jti: Uuid) -> Result<Option<HoldRecord<L::Hold>>, ApiError> {
        let mut tx = self.store.begin().await?;
        let record = match self.current(&mut tx, jti, self.clock.now_secs()).await {
            Ok(record) => Some(record),
            Err(e) if e.slug == "hold-not-found" => None,
            Err(e) => return Err(e),
        };
        tx.commit().await?;
        Ok(record)
    }

    /// Expires the holds whose time has come (giving their reservations back) and forgets the
    /// unredeemed ones past their retention, in bounded batches. Answers how many it touched.
    /// How many holds are placed and neither redeemed, cancelled nor expired.
    pub async fn open_holds(&self) -> Result<i64, ApiError> {
        let (open,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM holds WHERE state = 'held'")
            .fetch_one(self.store.pool())
            .await?;
        Ok(open)
    }

    pub async fn sweep(&self) -> Result<usize, ApiError> {
        let now = self.clock.now_secs();
        let due: Vec<(String,)> = sqlx::query_as(
            "SELECT jti FROM holds WHERE state = 'held' AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(SWEEP_BATCH)
        .fetch_all(self.store.pool())
        .await?;
        for (jti,) in &due {
            let Ok(jti) = Uuid::try_parse(jti) else {
                continue;
            };
            let mut tx = self.store.begin().await?;
            self.current(&mut tx, jti, now).await?;
            tx.commit().await?;
        }
        let forgotten = sqlx::query(
            "DELETE FROM holds WHERE jti IN \
             (SELECT jti FROM holds WHERE forget_at <= $1 LIMIT $2)",
        )
        .bind(now)
        .bind(SWEEP_BATCH)
        .execute(self.store.pool())
        .await?;
        Ok(due.len() + usize::try_from(forgotten.rows_affected()).unwrap_or(usize::MAX))
    }

    fn forget_at(&self, record: &HoldRecord<L::Hold>) -> i64 {
        record.expires_at.saturating_add(self.retention)
    }

    /// Loads the hold and, when it is still held past its expiry, expires it in `conn`'s
    /// transaction, giving its reservation back.
    async fn current(
        &self,
        conn: &mut Conn,
        jti: Uuid,
        now: i64,
    ) -> Result<HoldRecord<L::Hold>, ApiError> {
        let mut record = self.load(conn, jti).await?.ok_or_else(hold_not_found)?;
        if record.state == HoldState::Held && record.expires_at <= now {
            let forget_at = Some(self.forget_at(&record));
            if transition(
                conn,
                jti,
                HoldState::Held,
                HoldState::Expired,
                forget_at,
                None,
            )
            .await?
            {
                self.ledger
                    .release(conn, &record.customer_id, &record.hold)
                    .await?;
                tracing::info!(domain = L::DOMAIN, %jti, "hold expired");
                record.state = HoldState::Expired;
            } else {
                record = self.load(conn, jti).await?.ok_or_else(hold_not_found)?;
            }
        }
        Ok(record)
    }

    async fn load(
        &self,
        conn: &mut Conn,
        jti: Uuid,
    ) -> Result<Option<HoldRecord<L::Hold>>, ApiError> {
        let row: Option<HoldRow> = sqlx::query_as(
            "SELECT jti, order_processing_id, customer_id, state, hold, expires_at, forget_at, \
             redeemed_at FROM holds WHERE jti = $1",
        )
        .bind(jti.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        // A hold past its retention is forgotten even before the janitor deletes it.
        let now = self.clock.now_secs();
        row.filter(|row| row.6.is_none_or(|forget_at| forget_at > now))
            .map(|row| record_from_row::<L>(jti, row))
            .transpose()
    }
}

fn record_from_row<L: Ledger>(
    jti: Uuid,
    (_, order, customer, state, hold, expires_at, _, redeemed_at): HoldRow,
) -> Result<HoldRecord<L::Hold>, ApiError> {
    let corrupt = |what: &str| ApiError::internal(format!("hold {jti}: stored {what} is invalid"));
    Ok(HoldRecord {
        jti,
        order_processing_id: OrderProcessingId::parse(&order).map_err(|_| corrupt("order"))?,
        customer_id: CustomerId::parse(&customer).map_err(|_| corrupt("customer"))?,
        hold: serde_json::from_str(&hold).map_err(|_| corrupt("hold"))?,
        state: HoldState::parse(&state).ok_or_else(|| corrupt("state"))?,
        expires_at,
        redeemed_at,
    })
}

/// Moves a hold from `from` to `to` if it is still `from`; answers whether it moved. A
/// redemption passes its time as `redeemed_at`; other moves keep the stored one.
async fn transition(
    conn: &mut Conn,
    jti: Uuid,
    from: HoldState,
    to: HoldState,
    forget_at: Option<i64>,
    redeemed_at: Option<i64>,
) -> Result<bool, ApiError> {
    let moved = sqlx::query(
        "UPDATE holds SET state = $1, forget_at = $2, redeemed_at = COALESCE($3, redeemed_at) \
         WHERE jti = $4 AND state = $5",
    )
    .bind(to.as_str())
    .bind(forget_at)
    .bind(redeemed_at)
    .bind(jti.to_string())
    .bind(from.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(moved.rows_affected() == 1)
}
