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
use ctr_store::{Conn, Migration, Store, query, query_as};
use ctr_token::{Clock, secs};
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
    Migration {
        version: 4,
        name: "token hash",
        sql: include_str!("../migrations/0004_token_hash.sql"),
    },
];

/// How many holds one sweep expires or forgets at most.
const SWEEP_BATCH: i64 = 200;
/// How many holds this process placed it remembers for their redemption (a hold's record,
/// well under a KiB each).
const HELD_REMEMBERED: usize = 10_000;

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

/// The lifetimes and limits every operation applies.
#[derive(Debug, Clone, Copy)]
struct Rules {
    hold_ttl: i64,
    retention: i64,
    cancel_window: i64,
    holds_per_customer: i64,
}

impl Rules {
    fn forget_at(self, expires_at: i64) -> i64 {
        expires_at.saturating_add(self.retention)
    }
}

/// The domain's state: its ledger and its holds, in its store. Each operation is one
/// transaction handed to the store whole.
pub struct Engine<L: Ledger> {
    ledger: Arc<L>,
    store: Store,
    clock: Arc<dyn Clock>,
    rules: Rules,
    /// Holds this process placed, by `jti`: a redemption that finds its hold here need not
    /// read it first (what a hold reserved never changes; whether it may still be redeemed is
    /// the server's check, in the transition's conditions). At most [`HELD_REMEMBERED`].
    placed: Arc<quick_cache::sync::Cache<Uuid, HoldRecord<L::Hold>>>,
}

fn hold_not_found() -> ApiError {
    ApiError::not_found("hold-not-found", "no hold for this jti")
}

/// The statement that takes a confirmation's idempotency key with its hold, made from the
/// hold's `jti` and expiry ([`ctr_service_kit::IdempotencyKeys::record`]).
pub type TakeKey = Arc<dyn Fn(Uuid, i64) -> ctr_store::Query + Send + Sync>;

/// What a confirmation's transaction did.
#[derive(Debug, Clone)]
pub enum Held<H> {
    /// The hold was placed (and its idempotency key taken, if the request had one).
    Placed(HoldRecord<H>),
    /// The request's idempotency key was taken already: nothing was written.
    KeyTaken,
}

/// What a transaction answers when it must keep what it wrote and still refuse: the outer
/// `Err` rolls back, the inner one commits.
type Kept<T> = Result<Result<T, ApiError>, ApiError>;

impl<L: Ledger> Engine<L> {
    /// The lifetimes and limits come from `settings`: `CTR_HOLD_TTL`, `CTR_HOLD_RETENTION`,
    /// `CTR_CANCEL_WINDOW`, `CTR_MAX_HOLDS_PER_CUSTOMER`.
    pub fn new(
        ledger: impl Into<Arc<L>>,
        store: Store,
        clock: Arc<dyn Clock>,
        settings: &DomainSettings,
    ) -> Self {
        Self {
            ledger: ledger.into(),
            store,
            clock,
            rules: Rules {
                hold_ttl: secs(settings.hold_ttl),
                retention: secs(settings.hold_retention),
                cancel_window: secs(settings.cancel_window),
                holds_per_customer: i64::from(settings.max_holds_per_customer),
            },
            placed: Arc::new(quick_cache::sync::Cache::new(HELD_REMEMBERED)),
        }
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs `op` with the ledger as one transaction (a domain's own reads use it too).
    pub async fn transact<T: Send + 'static>(
        &self,
        op: impl for<'c> FnOnce(
            &'c mut Conn,
            Arc<L>,
        ) -> futures::future::BoxFuture<'c, Result<T, ApiError>>
        + Send
        + 'static,
    ) -> Result<T, ApiError> {
        let ledger = self.ledger.clone();
        self.store.transact(move |tx| op(tx, ledger)).await
    }

    /// [`Self::transact`], pipelined ([`Store::transact_pipelined`]): `op` may run twice.
    async fn transact_pipelined<T: Send + 'static>(
        &self,
        op: impl for<'c> Fn(&'c mut Conn, Arc<L>) -> futures::future::BoxFuture<'c, Result<T, ApiError>>
        + Send
        + Sync
        + 'static,
    ) -> Result<T, ApiError> {
        let ledger = self.ledger.clone();
        self.store
            .transact_pipelined(move |tx| op(tx, ledger.clone()))
            .await
    }

    /// Applies the domain's rules and places a hold under a fresh `jti`, in one transaction
    /// (on PostgreSQL one round trip, unless the ledger reads before it reserves). With
    /// `key`, the request's idempotency key is taken first, in the same transaction: when it
    /// is taken already, nothing is written.
    pub async fn hold(
        &self,
        order: &OrderProcessingId,
        customer: &CustomerId,
        request: L::Request,
        key: Option<TakeKey>,
    ) -> Result<Held<L::Hold>, ApiError> {
        let now = self.clock.now_secs();
        let rules = self.rules;
        let (order, customer) = (order.clone(), customer.clone());
        let jti = Uuid::now_v7();
        let expires_at = now.saturating_add(rules.hold_ttl);
        let held = self.transact_pipelined(move |tx, ledger| {
            let (order, customer, request) = (order.clone(), customer.clone(), request.clone());
            let key = key.clone();
            Box::pin(async move {
                if let Some(take) = key
                    && !tx.guarded(take(jti, expires_at), 1).await?
                {
                    return Ok(Held::KeyTaken);
                }
                let hold = ledger.reserve(tx, &customer, request, now).await?;
                let record = HoldRecord {
                    jti,
                    order_processing_id: order,
                    customer_id: customer,
                    hold,
                    state: HoldState::Held,
                    expires_at,
                    redeemed_at: None,
                };
                // Every hold costs a signature and keeps something from others until it ends:
                // one customer may have only so many at once. The insert checks it; when it
                // refuses, the rollback undoes the reservation.
                let place = query(
                    "INSERT INTO holds (jti, order_processing_id, customer_id, state, hold, expires_at) \
                     SELECT $1, $2, $3, $4, $5, $6 WHERE (SELECT COUNT(*) FROM holds \
                     WHERE customer_id = $3 AND state = 'held' AND expires_at > $7) < $8 \
                     RETURNING jti",
                )
                .bind(record.jti.to_string())
                .bind(record.order_processing_id.as_str())
                .bind(record.customer_id.as_str())
                .bind(HoldState::Held.as_str())
                .bind(serde_json::to_string(&record.hold).map_err(ApiError::internal)?)
                .bind(record.expires_at)
                .bind(now)
                .bind(rules.holds_per_customer);
                if !tx.guarded(place, 1).await? {
                    let (held, first): (i64, Option<i64>) = query_as(
                        "SELECT COUNT(*), MIN(expires_at) FROM holds \
                         WHERE customer_id = $1 AND state = 'held' AND expires_at > $2",
                    )
                    .bind(record.customer_id.as_str())
                    .bind(now)
                    .fetch_one(tx)
                    .await?;
                    return Err(ApiError::too_many(
                        "too-many-holds",
                        format!(
                            "this customer holds {held} confirmations here already; redeem, cancel or let one expire"
                        ),
                        seconds_until(first, now),
                    ));
                }
                Ok(Held::Placed(record))
            })
        })
        .await?;
        if let Held::Placed(record) = &held {
            self.placed.insert(record.jti, record.clone());
        }
        Ok(held)
    }

    /// Records the SHA-256 of the token issued for a hold: the one token a redemption of
    /// it may present; with `answer`, the statement that stores the confirmation's answer
    /// under its idempotency key ([`ctr_service_kit::IdempotencyKeys::answer`]), in the same
    /// transaction (one round trip on PostgreSQL).
    pub async fn seal(
        &self,
        jti: Uuid,
        token_sha256: String,
        answer: Option<ctr_store::Query>,
    ) -> Result<(), ApiError> {
        let seal = query(
            "UPDATE holds SET token_sha256 = $1 WHERE jti = $2 AND token_sha256 IS NULL RETURNING jti",
        )
        .bind(token_sha256)
        .bind(jti.to_string());
        self.store
            .transact_pipelined(move |tx| {
                let (seal, answer) = (seal.clone(), answer.clone());
                Box::pin(async move {
                    let mut sealed = tx.guarded(seal, 1).await?;
                    if let Some(answer) = answer {
                        sealed = sealed && tx.guarded(answer, 1).await?;
                    }
                    if sealed {
                        Ok(())
                    } else {
                        Err(ApiError::internal(format!(
                            "hold {jti} could not be sealed"
                        )))
                    }
                })
            })
            .await
    }

    /// Makes the hold final, once: a repeat answers the first result and changes nothing.
    /// The token presented must be, byte for byte, the one issued for the hold
    /// (`token_sha256`, compared in constant time); so its order, customer and settlement are
    /// the hold's, and `order` and `customer` (what the relay redeems for) must be those.
    pub async fn redeem(
        &self,
        jti: Uuid,
        token_sha256: String,
        order: &OrderProcessingId,
        customer: &CustomerId,
    ) -> Result<Redemption<L::Hold>, ApiError> {
        let now = self.clock.now_secs();
        let rules = self.rules;
        let (order, customer) = (order.clone(), customer.clone());
        // Pipelined: a hold this process placed is not read again; its transition, guarded by
        // every condition a redemption checks, and the ledger's change travel with the COMMIT
        // (one round trip). Otherwise the hold is read first (two). When the guard does not
        // hold, the operation runs again unpipelined and says why.
        let placed = self.placed.get(&jti);
        let kept: Kept<Redemption<L::Hold>> = self
            .transact_pipelined(move |tx, ledger| {
                let (order, customer, token_sha256) =
                    (order.clone(), customer.clone(), token_sha256.clone());
                let placed = placed.clone().filter(|p| {
                    tx.pipelined() && p.customer_id == customer && p.order_processing_id == order
                });
                Box::pin(async move {
                    if let Some(mut record) = placed {
                        // The hash compared by the server is not secret: only the token whose
                        // hash it is can be presented, and the relay alone may present one.
                        let redeem = query(
                            "UPDATE holds SET state = 'redeemed', forget_at = NULL, redeemed_at = $1 \
                             WHERE jti = $2 AND state = 'held' AND expires_at > $1 \
                             AND token_sha256 = $3 AND customer_id = $4 \
                             AND order_processing_id = $5 RETURNING jti",
                        )
                        .bind(now)
                        .bind(jti.to_string())
                        .bind(token_sha256.clone())
                        .bind(customer.as_str())
                        .bind(order.as_str());
                        if tx.guarded(redeem, 1).await? {
                            ledger.apply(tx, &record.customer_id, &record.hold).await?;
                            record.state = HoldState::Redeemed;
                            record.redeemed_at = Some(now);
                            return Ok(Ok(Redemption {
                                record,
                                replayed: false,
                            }));
                        }
                    }
                    let Some((mut record, issued)) = current(tx, &*ledger, rules, jti, now).await?
                    else {
                        return Ok(Err(hold_not_found()));
                    };
                    let genuine = issued.is_some_and(|issued| {
                        bool::from(subtle::ConstantTimeEq::ct_eq(
                            issued.as_bytes(),
                            token_sha256.as_bytes(),
                        ))
                    });
                    let refusal = if !genuine {
                        Some(ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "token-not-issued",
                            "Token refused",
                            "the token is not the one this domain issued for the hold",
                        ))
                    } else if record.customer_id != customer {
                        Some(ApiError::conflict(
                            "customer-mismatch",
                            "the token was confirmed for another customer",
                        ))
                    } else if record.order_processing_id != order {
                        Some(ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "order-mismatch",
                            "Token refused",
                            "the token was confirmed for another order",
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
                        return Ok(Err(refusal)); // keeps an expiry noticed on the way
                    }
                    if record.state == HoldState::Redeemed {
                        return Ok(Ok(Redemption {
                            record,
                            replayed: true,
                        }));
                    }
                    // Held: take the transition first, so a racing process waits on the row
                    // and then sees it redeemed; the ledger change and the transition commit
                    // together or not at all.
                    let redeemed = transition(
                        tx,
                        jti,
                        HoldState::Held,
                        HoldState::Redeemed,
                        None,
                        Some(now),
                    );
                    if !redeemed.await? {
                        // Another process moved it meanwhile: answer what it did.
                        let record = load::<L>(tx, jti, now).await?.map(|(record, _)| record);
                        return Ok(match record {
                            Some(record) if record.state == HoldState::Redeemed => Ok(Redemption {
                                record,
                                replayed: true,
                            }),
                            Some(_) => Err(ApiError::conflict(
                                "hold-released",
                                "the hold was cancelled",
                            )),
                            None => Err(hold_not_found()),
                        });
                    }
                    ledger.apply(tx, &record.customer_id, &record.hold).await?;
                    record.state = HoldState::Redeemed;
                    record.redeemed_at = Some(now);
                    Ok(Ok(Redemption {
                        record,
                        replayed: false,
                    }))
                })
            })
            .await;
        let answer = kept?;
        if answer.is_ok() {
            self.placed.remove(&jti); // redeemed: its next redemption is a repeat
        }
        answer
    }

    /// Releases a hold or reverses a redemption; idempotent.
    pub async fn cancel(
        &self,
        jti: Uuid,
        order: &OrderProcessingId,
    ) -> Result<HoldRecord<L::Hold>, ApiError> {
        let now = self.clock.now_secs();
        let rules = self.rules;
        let order = order.clone();
        let kept: Kept<HoldRecord<L::Hold>> = self
            .transact(move |tx, ledger| {
                Box::pin(async move {
                    for _ in 0..3 {
                        let Some((mut record, _)) = current(tx, &*ledger, rules, jti, now).await?
                        else {
                            return Ok(Err(hold_not_found()));
                        };
                        if record.order_processing_id != order {
                            return Ok(Err(ApiError::conflict(
                                "hold-mismatch",
                                "the hold belongs to another order",
                            )));
                        }
                        let (to, forget_at) = match record.state {
                            HoldState::Held => (
                                HoldState::Released,
                                Some(rules.forget_at(record.expires_at)),
                            ),
                            HoldState::Redeemed => {
                                let closes = record
                                    .redeemed_at
                                    .map(|at| at.saturating_add(rules.cancel_window));
                                if closes.is_none_or(|closes| now >= closes) {
                                    return Ok(Err(ApiError::conflict(
                                        "cancellation-window-closed",
                                        "the redemption is final: a cancellation may reverse it \
                                         only within the cancellation window after it",
                                    )
                                    .with("window_seconds", rules.cancel_window)));
                                }
                                (HoldState::Reversed, None)
                            }
                            HoldState::Released | HoldState::Reversed | HoldState::Expired => {
                                return Ok(Ok(record));
                            }
                        };
                        if !transition(tx, jti, record.state, to, forget_at, None).await? {
                            continue; // another process moved it meanwhile: look again
                        }
                        let customer = &record.customer_id;
                        match to {
                            HoldState::Released => {
                                ledger.release(tx, customer, &record.hold).await?
                            }
                            _ => ledger.reverse(tx, customer, &record.hold).await?,
                        }
                        record.state = to;
                        return Ok(Ok(record));
                    }
                    Ok(Err(ApiError::conflict(
                        "hold-contended",
                        "the hold kept changing; retry",
                    )))
                })
            })
            .await;
        kept?
    }

    /// Gives a hold back right away (its token could not be signed, or nobody waits for it),
    /// with its idempotency key (`forget`, [`ctr_service_kit::IdempotencyKeys::forget`]):
    /// a retry then confirms afresh.
    pub async fn discard(
        &self,
        jti: Uuid,
        forget: Option<ctr_store::Query>,
    ) -> Result<(), ApiError> {
        let now = self.clock.now_secs();
        self.transact(move |tx, ledger| {
            Box::pin(async move {
                if let Some(forget) = forget {
                    forget.execute(tx).await?;
                }
                if let Some((record, _)) = load::<L>(tx, jti, now).await?
                    && record.state == HoldState::Held
                {
                    query("DELETE FROM holds WHERE jti = $1 AND state = 'held'")
                        .bind(jti.to_string())
                        .execute(tx)
                        .await?;
                    ledger
                        .release(tx, &record.customer_id, &record.hold)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// The hold as of now (expired if its time has come), if it is still kept.
    pub async fn get(&self, jti: Uuid) -> Result<Option<HoldRecord<L::Hold>>, ApiError> {
        let now = self.clock.now_secs();
        let rules = self.rules;
        self.transact(move |tx, ledger| {
            Box::pin(async move {
                Ok(current(tx, &*ledger, rules, jti, now)
                    .await?
                    .map(|(record, _)| record))
            })
        })
        .await
    }

    /// How many holds are placed and neither redeemed, cancelled nor expired.
    pub async fn open_holds(&self) -> Result<i64, ApiError> {
        let (open,): (i64,) = self
            .store
            .fetch_one(query_as("SELECT COUNT(*) FROM holds WHERE state = 'held'"))
            .await?;
        Ok(open)
    }

    /// Expires the holds whose time has come (giving their reservations back) and forgets the
    /// unredeemed ones past their retention, in bounded batches, in one transaction. Answers
    /// how many it touched.
    pub async fn sweep(&self) -> Result<usize, ApiError> {
        let now = self.clock.now_secs();
        let rules = self.rules;
        self.transact(move |tx, ledger| {
            Box::pin(async move {
                let due: Vec<(String,)> = query_as(
                    "SELECT jti FROM holds WHERE state = 'held' AND expires_at <= $1 \
                     ORDER BY expires_at LIMIT $2",
                )
                .bind(now)
                .bind(SWEEP_BATCH)
                .fetch_all(tx)
                .await?;
                for (jti,) in &due {
                    if let Ok(jti) = Uuid::try_parse(jti) {
                        current(tx, &*ledger, rules, jti, now).await?;
                    }
                }
                let forgotten = query(
                    "DELETE FROM holds WHERE jti IN \
                     (SELECT jti FROM holds WHERE forget_at <= $1 LIMIT $2)",
                )
                .bind(now)
                .bind(SWEEP_BATCH)
                .execute(tx)
                .await?;
                Ok(due.len() + usize::try_from(forgotten).unwrap_or(usize::MAX))
            })
        })
        .await
    }
}

/// Loads the hold and, when it is still held past its expiry, expires it in `tx`,
/// giving its reservation back. Answers it with the hash of its token.
async fn current<L: Ledger>(
    tx: &mut Conn,
    ledger: &L,
    rules: Rules,
    jti: Uuid,
    now: i64,
) -> Result<Option<(HoldRecord<L::Hold>, Option<String>)>, ApiError> {
    let Some((mut record, issued)) = load::<L>(tx, jti, now).await? else {
        return Ok(None);
    };
    if record.state == HoldState::Held && record.expires_at <= now {
        let forget_at = Some(rules.forget_at(record.expires_at));
        if transition(
            tx,
            jti,
            HoldState::Held,
            HoldState::Expired,
            forget_at,
            None,
        )
        .await?
        {
            ledger
                .release(tx, &record.customer_id, &record.hold)
                .await?;
            tracing::info!(domain = L::DOMAIN, %jti, "hold expired");
            record.state = HoldState::Expired;
        } else {
            return load::<L>(tx, jti, now).await;
        }
    }
    Ok(Some((record, issued)))
}

type HoldRow = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

async fn load<L: Ledger>(
    tx: &mut Conn,
    jti: Uuid,
    now: i64,
) -> Result<Option<(HoldRecord<L::Hold>, Option<String>)>, ApiError> {
    let row: Option<HoldRow> = query_as(
        "SELECT order_processing_id, customer_id, state, hold, expires_at, forget_at, \
         redeemed_at, token_sha256 FROM holds WHERE jti = $1",
    )
    .bind(jti.to_string())
    .fetch_optional(tx)
    .await?;
    // A hold past its retention is forgotten even before the janitor deletes it.
    row.filter(|row| row.5.is_none_or(|forget_at| forget_at > now))
        .map(|row| record_from_row::<L>(jti, row))
        .transpose()
}

fn record_from_row<L: Ledger>(
    jti: Uuid,
    (order, customer, state, hold, expires_at, _, redeemed_at, issued): HoldRow,
) -> Result<(HoldRecord<L::Hold>, Option<String>), ApiError> {
    let corrupt = |what: &str| ApiError::internal(format!("hold {jti}: stored {what} is invalid"));
    let record = HoldRecord {
        jti,
        order_processing_id: OrderProcessingId::parse(&order).map_err(|_| corrupt("order"))?,
        customer_id: CustomerId::parse(&customer).map_err(|_| corrupt("customer"))?,
        hold: serde_json::from_str(&hold).map_err(|_| corrupt("hold"))?,
        state: HoldState::parse(&state).ok_or_else(|| corrupt("state"))?,
        expires_at,
        redeemed_at,
    };
    Ok((record, issued))
}

/// Moves a hold from `from` to `to` if it is still `from`; answers whether it moved. A
/// redemption passes its time as `redeemed_at`; other moves keep the stored one.
async fn transition(
    tx: &mut Conn,
    jti: Uuid,
    from: HoldState,
    to: HoldState,
    forget_at: Option<i64>,
    redeemed_at: Option<i64>,
) -> Result<bool, ApiError> {
    let transition = query(
        "UPDATE holds SET state = $1, forget_at = $2, redeemed_at = COALESCE($3, redeemed_at) \
         WHERE jti = $4 AND state = $5 RETURNING jti",
    )
    .bind(to.as_str())
    .bind(forget_at)
    .bind(redeemed_at)
    .bind(jti.to_string())
    .bind(from.as_str());
    Ok(tx.guarded(transition, 1).await?)
}
