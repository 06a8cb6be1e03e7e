//! The relay's store: orders, their checkout log and the replay store, as domain operations,
//! each one transaction. Every write of a saga is fenced: it is conditional on the generation
//! the writer was given when it claimed the checkout, and renews its lease; a write that
//! matches no row means another driver took over ([`WriteError::LeaseLost`]). Leases are judged
//! on the database's clock ([`Store::now_ms_sql`]), never on a process's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ctr_service_kit::{ApiError, CustomerId, OrderProcessingId, seconds_until};
use ctr_store::{Migration, Row, Store, StoreError, query, query_as};
use ctr_token::VerifiedToken;

use crate::faults::{SagaFaults, SagaOp};

mod events;
mod rows;
mod statements;

pub use events::{
    Attempt, Claimed, Deliveries, DeliveryBacklog, DeliveryView, LIST_LIMIT, Outbox, Settled,
};

use crate::orders::{Order, OrderStatus, TokenOutcome, TokenRecord};
use ctr_webhooks::EventType;
use events::When;
use rows::{
    ORDER_WIDTH, StepRow, amount_to_sql, corrupt, failure_columns, load, load_steps, numbered,
    order_from, placeholders, write_steps,
};
use statements::ClockSql;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "orders, checkout steps, replay",
        sql: include_str!("../../migrations/0001_orders.sql"),
    },
    Migration {
        version: 2,
        name: "orders by customer",
        sql: include_str!("../../migrations/0002_orders_by_customer.sql"),
    },
    Migration {
        version: 3,
        name: "fenced saga",
        sql: include_str!("../../migrations/0003_fenced_saga.sql"),
    },
    Migration {
        version: 4,
        name: "compensation retries",
        sql: include_str!("../../migrations/0004_compensation_retries.sql"),
    },
    Migration {
        version: 5,
        name: "order events and their webhook deliveries",
        sql: include_str!("../../migrations/0005_order_events.sql"),
    },
];

/// How many retired orders or replay entries one prune deletes at most.
const PRUNE_BATCH: i64 = 500;

/// A driver's claim on a checkout: the generation its writes are conditional on, when the
/// checkout was admitted and the database's clock at its last write (milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub generation: i64,
    pub started_ms: i64,
    pub now_ms: i64,
}

/// Why a write of a saga did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// Another driver claimed the checkout since: stop at once, call no domain again.
    LeaseLost,
    Store(ApiError),
}

impl From<ApiError> for WriteError {
    fn from(error: ApiError) -> Self {
        Self::Store(error)
    }
}

impl From<ctr_store::StoreError> for WriteError {
    fn from(error: ctr_store::StoreError) -> Self {
        Self::Store(error.into())
    }
}

/// What a recovery pass finds to do with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A checkout whose driver died or stalled.
    Checkout,
    /// A compensation due for another try.
    Compensation,
}

/// What waits for the saga, for the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub needing_attention: i64,
    pub compensations_pending: i64,
    /// How long the oldest pending compensation has been pending; 0 when none is.
    pub oldest_compensation_ms: i64,
}

/// Why a checkout could not begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginError {
    NotFound,
    NotOpen(OrderStatus),
}

/// What storing an order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The order is stored (with its idempotency key, if it came with one).
    New,
    /// Its idempotency key was taken already: nothing was stored.
    KeyTaken,
}

/// Why an admission did not happen; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unadmitted {
    /// The token at this index was consumed before.
    Replayed(usize),
    /// The request's idempotency key was taken already.
    KeyTaken,
}

/// Why an order could not be stored.
#[derive(Debug)]
pub enum InsertError {
    /// As many orders as allowed are kept; none has reached its retention yet. The first
    /// will in `retry_after` seconds.
    Full {
        capacity: usize,
        retry_after: u64,
    },
    /// The customer has `limit` open orders already; the first expires in `retry_after`
    /// seconds.
    CustomerLimit {
        limit: usize,
        retry_after: u64,
    },
    Store(ApiError),
}

/// The relay's orders in its store, bounded: an order is kept until `expires_at + retention`
/// (longer while its checkout runs or needs attention), and at most `capacity` at once.
#[derive(Clone)]
pub struct OrderStore {
    store: Store,
    sql: Arc<ClockSql>,
    capacity: usize,
    per_customer: usize,
    retention: i64,
    /// How long a claim lasts without a write, in milliseconds.
    lease_ms: i64,
    /// Orders kept, as last counted (at each prune) plus this process's inserts since: the
    /// capacity check reads it instead of counting the table on every insert. `-1`: not
    /// counted yet.
    kept: Arc<AtomicI64>,
    /// Where the transitions' events are written.
    outbox: Arc<Outbox>,
    faults: Option<Arc<dyn SagaFaults>>,
}

impl std::fmt::Debug for OrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderStore")
            .field("capacity", &self.capacity)
            .field("lease_ms", &self.lease_ms)
            .finish_non_exhaustive()
    }
}

/// The limits an [`OrderStore`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub capacity: usize,
    /// Open orders one customer may have at once.
    pub per_customer: usize,
    /// How long, in seconds, an order stays readable after its checkout window.
    pub retention: i64,
    /// How long a saga's claim lasts without a write, in milliseconds.
    pub lease_ms: i64,
}

impl OrderStore {
    pub fn new(store: Store, limits: StoreLimits, faults: Option<Arc<dyn SagaFaults>>) -> Self {
        Self {
            sql: Arc::new(ClockSql::new(&store)),
            capacity: limits.capacity,
            per_customer: limits.per_customer,
            retention: limits.retention.max(1),
            lease_ms: limits.lease_ms.max(1),
            kept: Arc::new(AtomicI64::new(-1)),
            outbox: Arc::new(Outbox::new(&store, Vec::new())),
            store,
            faults,
        }
    }

    /// Every event from now on is also delivered to these webhook endpoints.
    #[must_use]
    pub fn with_webhooks(mut self, endpoints: Vec<String>) -> Self {
        self.outbox = Arc::new(Outbox::new(&self.store, endpoints));
        self
    }

    /// Notified when this process commits an event.
    pub fn events_written(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.written.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn before(&self, op: SagaOp) -> Result<(), ApiError> {
        self.faults.as_ref().map_or(Ok(()), |f| f.before(op))
    }

    async fn after(&self, op: SagaOp) {
        if let Some(faults) = &self.faults {
            faults.after(op).await;
        }
    }

    fn full(&self) -> bool {
        usize::try_from(self.kept.load(Ordering::Relaxed)).is_ok_and(|kept| kept >= self.capacity)
    }

    async fn recount(&self) -> Result<(), ApiError> {
        let (count,): (i64,) = self
            .store
            .fetch_one(query_as("SELECT COUNT(*) FROM orders"))
            .await?;
        self.kept.store(count, Ordering::Relaxed);
        Ok(())
    }

    /// Stores a new order. When the store looks full, orders kept past their retention as of
    /// `now` are dropped first. Across replicas the bound is approximate: each process counts
    /// the shared table at every prune and adds its own inserts since.
    ///
    /// `key` is the statement that takes the request's idempotency key
    /// ([`ctr_service_kit::IdempotencyKeys::record`]), if it came with one.
    pub async fn insert(
        &self,
        order: &Order,
        now: i64,
        key: Option<ctr_store::Query>,
    ) -> Result<Inserted, InsertError> {
        if self.kept.load(Ordering::Relaxed) < 0 {
            self.recount().await.map_err(InsertError::Store)?;
        }
        if self.full() {
            self.prune(now).await.map_err(InsertError::Store)?;
            if self.full() {
                let (first,): (Option<i64>,) = self
                    .store
                    .fetch_one(query_as(
                        "SELECT MIN(forget_at) FROM orders WHERE status <> 'checking_out' \
                         AND compensation_pending = 0 AND needs_attention = 0",
                    ))
                    .await
                    .map_err(|e| InsertError::Store(e.into()))?;
                return Err(InsertError::Full {
                    capacity: self.capacity,
                    retry_after: seconds_until(first, now),
                });
            }
        }
        // One statement checks the customer's open orders and inserts; with an idempotency
        // key, it and the key are one transaction (one round trip on PostgreSQL), the key
        // first: when it is taken, nothing is written.
        let insert = query(format!(
            "INSERT INTO orders (id, customer_id, total_amount, currency, status, \
             created_at, expires_at, forget_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE (SELECT COUNT(*) FROM orders WHERE customer_id = $2 \
             AND status = 'open' AND expires_at > $9) < $10{}",
            if key.is_some() { " RETURNING id" } else { "" }
        ))
        .bind(order.id.as_str())
        .bind(order.customer_id.as_str())
        .bind(amount_to_sql(order.total.amount))
        .bind(order.total.currency.as_str())
        .bind(order.status.as_str())
        .bind(order.created_at)
        .bind(order.expires_at)
        .bind(order.expires_at.saturating_add(self.retention))
        .bind(now)
        .bind(i64::try_from(self.per_customer).unwrap_or(i64::MAX));
        /// The customer's cap refused the order (`None`), or the store failed: the
        /// transaction rolls back.
        struct Refused(Option<StoreError>);
        impl From<StoreError> for Refused {
            fn from(error: StoreError) -> Self {
                Self(Some(error))
            }
        }
        self.before(SagaOp::Open).map_err(InsertError::Store)?;
        let inserted = match key {
            None => match self.store.execute(insert).await {
                Ok(1) => Ok(Inserted::New),
                Ok(_) => Err(Refused(None)),
                Err(error) => Err(Refused(Some(error))),
            },
            Some(key) => {
                self.store
                    .transact_pipelined(move |tx| {
                        let (key, insert) = (key.clone(), insert.clone());
                        Box::pin(async move {
                            if !tx.guarded(key, 1).await? {
                                return Ok(Inserted::KeyTaken);
                            }
                            if !tx.guarded(insert, 1).await? {
                                return Err(Refused(None));
                            }
                            Ok(Inserted::New)
                        })
                    })
                    .await
            }
        };
        let inserted = match inserted {
            Ok(inserted) => inserted,
            Err(Refused(Some(error))) => return Err(InsertError::Store(error.into())),
            Err(Refused(None)) => return Err(self.customer_limit(order, now).await),
        };
        if inserted == Inserted::New {
            self.kept.fetch_add(1, Ordering::Relaxed);
        }
        self.after(SagaOp::Open).await;
        Ok(inserted)
    }

    /// The refusal of an order over its customer's cap of open orders (as of `now`).
    async fn customer_limit(&self, order: &Order, now: i64) -> InsertError {
        let first = self
            .store
            .fetch_one(
                query_as::<(Option<i64>,)>(
                    "SELECT MIN(expires_at) FROM orders \
                     WHERE customer_id = $1 AND status = 'open' AND expires_at > $2",
                )
                .bind(order.customer_id.as_str())
                .bind(now),
            )
            .await;
        match first {
            Ok((first,)) => InsertError::CustomerLimit {
                limit: self.per_customer,
                retry_after: seconds_until(first, now),
            },
            Err(error) => InsertError::Store(error.into()),
        }
    }

    pub async fn get(&self, id: &OrderProcessingId) -> Result<Option<Order>, ApiError> {
        let id = id.clone();
        self.store
            .transact(move |tx| {
                Box::pin(async move { Ok(load(tx, &id).await?.map(|(order, _)| order)) })
            })
            .await
    }

    /// Moves an open, unexpired (as of `now`) order to `checking_out`, atomically: one caller
    /// wins, in this process or another. The claim keeps recovery workers off while the
    /// checkout is being admitted.
    pub async fn begin_checkout(
        &self,
        id: &OrderProcessingId,
        customer: &CustomerId,
        now: i64,
    ) -> Result<Result<(Order, Claim), BeginError>, ApiError> {
        self.before(SagaOp::Begin)?;
        // The winner reads the order back from the update (an open order has no steps yet).
        let moved = self
            .store
            .fetch_optional(
                query_as::<Row>(self.sql.begin.clone())
                    .bind(self.lease_ms)
                    .bind(id.as_str())
                    .bind(now)
                    .bind(customer.as_str()),
            )
            .await?;
        if let Some(row) = moved {
            let order = order_from(id, &row, Vec::new())?;
            let claim = Claim {
                generation: row.get(ORDER_WIDTH)?,
                started_ms: 0,
                now_ms: row.get(ORDER_WIDTH + 1)?,
            };
            self.after(SagaOp::Begin).await;
            return Ok(Ok((order, claim)));
        }
        Ok(match self.get(id).await? {
            // Another customer's order is not theirs to know of.
            Some(order) if order.customer_id == *customer => {
                Err(BeginError::NotOpen(order.status_at(now)))
            }
            _ => Err(BeginError::NotFound),
        })
    }

    /// Gives an order whose checkout was refused before anything was consumed back to `open`.
    /// Answers whether it did: not when another driver claimed it, nor when the admission
    /// was written after all (its steps exist).
    pub async fn reopen(&self, id: &OrderProcessingId, claim: &Claim) -> Result<bool, ApiError> {
        self.before(SagaOp::Reopen)?;
        let reopened = self
            .store
            .execute(
                query(
                    "UPDATE orders SET status = 'open', lease_expires_ms = NULL \
                     WHERE id = $1 AND generation = $2 AND status = 'checking_out' \
                     AND NOT EXISTS (SELECT 1 FROM checkout_steps WHERE order_id = $1)",
                )
                .bind(id.as_str())
                .bind(claim.generation),
            )
            .await?;
        self.after(SagaOp::Reopen).await;
        Ok(reopened == 1)
    }

    /// Admits a checkout in one transaction: takes the request's idempotency key (`key`,
    /// [`ctr_service_kit::IdempotencyKeys::record`], if it came with one), consumes every
    /// `(iss, jti)` (kept until the token's `exp` + `leeway`), writes the checkout log and
    /// starts the checkout's bound. Answers why not when the key was taken or a token was
    /// seen before; then nothing is written.
    pub async fn admit(
        &self,
        order: &mut Order,
        tokens: &[VerifiedToken],
        leeway: i64,
        claim: &mut Claim,
        key: Option<ctr_store::Query>,
    ) -> Result<Result<(), Unadmitted>, WriteError> {
        self.before(SagaOp::Admit)?;
        let start = query(self.sql.admit.clone())
            .bind(self.lease_ms)
            .bind(order.id.as_str())
            .bind(claim.generation);
        let started = query_as::<(i64,)>("SELECT checkout_started_ms FROM orders WHERE id = $1")
            .bind(order.id.as_str());
        // One statement consumes every token; the rows it answers are the ones that were new.
        // (The relay admits 1 to `max_tokens` tokens: the statement is never empty.)
        let mut consume = query(format!(
            "INSERT INTO replay (iss, jti, forget_at) VALUES {} \
             ON CONFLICT (iss, jti) DO NOTHING RETURNING iss, jti",
            placeholders(tokens.len(), 3)
        ));
        let mut keys = Vec::with_capacity(tokens.len());
        for token in tokens {
            let claims = token.claims();
            keys.push((claims.iss.clone(), claims.jti.to_string()));
            consume = consume
                .bind(claims.iss.clone())
                .bind(claims.jti.to_string())
                .bind(claims.exp.saturating_add(leeway));
        }
        let records: Vec<TokenRecord> = tokens
            .iter()
            .map(|t| TokenRecord {
                iss: t.claims().iss.clone(),
                jti: t.claims().jti,
                capability: t.claims().capabilities[0].clone(),
                settles: t.claims().settles,
                outcome: TokenOutcome::Pending,
            })
            .collect();
        let mut log = query(format!(
            "INSERT INTO checkout_steps (order_id, position, iss, jti, capability, \
             settles_amount, settles_currency, token, outcome) VALUES {}",
            placeholders(tokens.len(), 9)
        ));
        for (position, (record, token)) in records.iter().zip(tokens).enumerate() {
            log = log
                .bind(order.id.as_str())
                .bind(i64::try_from(position).unwrap_or(i64::MAX))
                .bind(record.iss.clone())
                .bind(record.jti.to_string())
                .bind(record.capability.clone())
                .bind(amount_to_sql(record.settles.amount))
                .bind(record.settles.currency.as_str())
                .bind(token.token())
                .bind(record.outcome.as_str());
        }
        /// A replay rolls the transaction back: the other tokens stay unconsumed.
        enum Refused {
            KeyTaken,
            Replayed,
            Write(WriteError),
        }
        impl From<StoreError> for Refused {
            fn from(error: StoreError) -> Self {
                Self::Write(error.into())
            }
        }
        let fresh = u64::try_from(tokens.len()).unwrap_or(u64::MAX);
        // The key taken, the tokens consumed, the log written and the claim renewed in one
        // write (on PostgreSQL one round trip): each write holds, or none is kept. The fence
        // goes last so that every fenced write takes the steps' rows before the order's.
        let admitted: Result<i64, Refused> = self
            .store
            .transact_pipelined(move |tx| {
                let (key, consume, log, start, started) = (
                    key.clone(),
                    consume.clone(),
                    log.clone(),
                    start.clone(),
                    started.clone(),
                );
                Box::pin(async move {
                    if let Some(key) = key
                        && !tx.guarded(key, 1).await?
                    {
                        return Err(Refused::KeyTaken);
                    }
                    if !tx.guarded(consume, fresh).await? {
                        return Err(Refused::Replayed);
                    }
                    tx.defer(log).await?;
                    if !tx.guarded(start, 1).await? {
                        return Err(Refused::Write(WriteError::LeaseLost));
                    }
                    let (started_ms,) = started.fetch_one_last(tx).await?;
                    Ok(started_ms)
                })
            })
            .await;
        let started_ms = match admitted {
            Ok(started_ms) => started_ms,
            Err(Refused::KeyTaken) => return Ok(Err(Unadmitted::KeyTaken)),
            Err(Refused::Replayed) => {
                return Ok(Err(Unadmitted::Replayed(self.first_replayed(&keys).await?)));
            }
            Err(Refused::Write(error)) => return Err(error),
        };
        order.tokens = records;
        claim.started_ms = started_ms;
        claim.now_ms = started_ms;
        self.after(SagaOp::Admit).await;
        Ok(Ok(()))
    }

    /// Which of `keys` (`iss`, `jti`) was consumed before: the index of the first, as this
    /// store's replay entries say after an admission that found one (0 if it is gone since).
    async fn first_replayed(&self, keys: &[(String, String)]) -> Result<usize, WriteError> {
        let mut seen = query_as::<(String, String)>(format!(
            "SELECT iss, jti FROM replay WHERE (iss, jti) IN ({})",
            placeholders(keys.len(), 2)
        ));
        for (iss, jti) in keys {
            seen = seen.bind(iss.clone()).bind(jti.clone());
        }
        let seen = self.store.fetch_all(seen).await?;
        Ok(keys.iter().position(|key| seen.contains(key)).unwrap_or(0))
    }

    /// Records the outcomes of the steps at `positions` and renews the claim: what the saga
    /// writes before each call (with the outcome of the call before it) and after each
    /// compensation.
    pub async fn record_steps(
        &self,
        order: &Order,
        claim: &mut Claim,
        positions: &[usize],
    ) -> Result<(), WriteError> {
        let renew = query(self.sql.renew.clone())
            .bind(self.lease_ms)
            .bind(order.id.as_str())
            .bind(claim.generation);
        claim.now_ms = self
            .fenced(renew, order, positions, false, Vec::new(), SagaOp::Steps)
            .await?;
        Ok(())
    }

    /// Ends a checkout whose every step is redeemed: the last step's outcome and the order's
    /// `completed` in one write. The tokens kept for recovery are cleared and the order's
    /// retention starts (as of `now`).
    pub async fn complete(&self, order: &Order, claim: &Claim, now: i64) -> Result<(), WriteError> {
        debug_assert!(
            order
                .tokens
                .iter()
                .all(|t| t.outcome == TokenOutcome::Redeemed)
        );
        let done = query(self.sql.complete.clone())
            .bind(self.forget_at(order, now))
            .bind(order.id.as_str())
            .bind(claim.generation);
        let every_step: Vec<usize> = (0..order.tokens.len()).collect();
        let event = self
            .outbox
            .propose(order, EventType::OrderCompleted, When::Always, now);
        self.fenced(done, order, &every_step, true, event, SagaOp::Complete)
            .await?;
        Ok(())
    }

    /// Fails a checkout: the steps at `positions` (the failed one, and one redeemed before it
    /// not written yet) and the order `failed`, with its [`Failure`], in one write;
    /// compensation is pending from then on.
    pub async fn fail(
        &self,
        order: &Order,
        claim: &mut Claim,
        positions: &[usize],
        now: i64,
    ) -> Result<(), WriteError> {
        let (capability, problem, detail) = failure_columns(order.failure.as_ref());
        let failed = query(self.sql.fail.clone())
            .bind(capability)
            .bind(problem)
            .bind(detail)
            .bind(self.lease_ms)
            .bind(order.id.as_str())
            .bind(claim.generation);
        let event = self
            .outbox
            .propose(order, EventType::OrderFailed, When::Always, now);
        claim.now_ms = self
            .fenced(failed, order, positions, false, event, SagaOp::Fail)
            .await?;
        Ok(())
    }

    /// Ends a compensation pass: when `order.compensation_pending` is still set, a recovery
    /// worker retries it once `retry_in_ms` have passed on the database's clock; otherwise the
    /// tokens are cleared and the order's retention starts (never while it needs attention).
    pub async fn end_compensation(
        &self,
        order: &Order,
        claim: &Claim,
        now: i64,
        retry_in_ms: i64,
    ) -> Result<(), WriteError> {
        let ended = query(self.sql.end_compensation.clone())
            .bind(order.compensation_pending)
            .bind(order.attention.is_some())
            .bind(order.attention.as_deref())
            .bind(self.forget_at(order, now))
            .bind(order.id.as_str())
            .bind(claim.generation)
            .bind(retry_in_ms);
        let every_step: Vec<usize> = (0..order.tokens.len()).collect();
        // The order needs attention now, or not: an event tells of the change, if this
        // transaction makes one (the statement reads the order before its update).
        let (change, was) = match order.attention {
            Some(_) => (EventType::OrderNeedsAttention, false),
            None => (EventType::OrderAttentionResolved, true),
        };
        let event = self
            .outbox
            .propose(order, change, When::AttentionWas(was), now);
        self.fenced(
            ended,
            order,
            &every_step,
            order.ended(),
            event,
            SagaOp::EndCompensation,
        )
        .await?;
        Ok(())
    }

    /// A fenced write, as one transaction (on PostgreSQL one round trip): the steps at
    /// `positions`, the outbox's `events`, then the order's conditional update `fence`, which
    /// changes no row when the writer's generation is gone, and then nothing is written; the
    /// test hooks around it. Answers the database's clock.
    async fn fenced(
        &self,
        fence: ctr_store::Query,
        order: &Order,
        positions: &[usize],
        clear_tokens: bool,
        events: Vec<ctr_store::Query>,
        op: SagaOp,
    ) -> Result<i64, WriteError> {
        self.before(op)?;
        let steps = write_steps(order, positions, clear_tokens);
        let clock = query_as::<(i64,)>(self.sql.now.clone());
        let wrote_events = !events.is_empty();
        let now_ms = self
            .store
            .transact_pipelined(move |tx| {
                let (fence, steps, clock, events) =
                    (fence.clone(), steps.clone(), clock.clone(), events.clone());
                Box::pin(async move {
                    if let Some(steps) = steps {
                        tx.defer(steps).await?;
                    }
                    for event in events {
                        tx.defer(event).await?;
                    }
                    if !tx.guarded(fence, 1).await? {
                        return Err(WriteError::LeaseLost);
                    }
                    let (now_ms,) = clock.fetch_one_last(tx).await?;
                    Ok(now_ms)
                })
            })
            .await?;
        if wrote_events {
            self.outbox.written.notify_one();
        }
        self.after(op).await;
        Ok(now_ms)
    }

    fn forget_at(&self, order: &Order, now: i64) -> i64 {
        now.max(order.expires_at).saturating_add(self.retention)
    }

    /// Checkouts whose claim ran out before they ended (their driver died or stalled), then
    /// compensations due for a retry, on the database's clock.
    pub async fn abandoned(&self, limit: i64) -> Result<Vec<(OrderProcessingId, Due)>, ApiError> {
        let rows: Vec<(String, String)> = self
            .store
            .fetch_all(query_as(self.sql.abandoned.clone()).bind(limit))
            .await?;
        rows.into_iter()
            .map(|(id, status)| {
                let id = OrderProcessingId::parse(&id).map_err(|_| corrupt("id"))?;
                let due = if status == OrderStatus::CheckingOut.as_str() {
                    Due::Checkout
                } else {
                    Due::Compensation
                };
                Ok((id, due))
            })
            .collect()
    }

    /// What waits for the saga: orders needing attention, pending compensations and the age of
    /// the oldest (on the database's clock).
    pub async fn backlog(&self) -> Result<Backlog, ApiError> {
        let (needing_attention, compensations_pending, oldest, now_ms): (
            i64,
            i64,
            Option<i64>,
            i64,
        ) = self
            .store
            .fetch_one(query_as(self.sql.backlog.clone()))
            .await?;
        Ok(Backlog {
            needing_attention,
            compensations_pending,
            oldest_compensation_ms: oldest.map_or(0, |since| now_ms.saturating_sub(since).max(0)),
        })
    }

    /// Takes over a checkout whose claim ran out, if no other driver did meanwhile: bumps its
    /// generation, so that the driver before (stalled, or on a replica) can write no more.
    /// Answers the order, the claim and the tokens, in redemption order.
    pub async fn claim(
        &self,
        id: &OrderProcessingId,
    ) -> Result<Option<(Order, Claim, Vec<String>)>, ApiError> {
        self.before(SagaOp::Claim)?;
        let take = query(self.sql.claim.clone())
            .bind(self.lease_ms)
            .bind(id.as_str());
        let key = id.clone();
        let taken: Option<(Row, Vec<StepRow>)> = self
            .store
            .transact(move |tx| {
                Box::pin(async move {
                    let Some(row) = take.fetch_optional(tx).await? else {
                        return Ok::<_, ApiError>(None);
                    };
                    let steps = load_steps(tx, &key).await?;
                    Ok(Some((row, steps)))
                })
            })
            .await?;
        let Some((row, steps)) = taken else {
            return Ok(None);
        };
        let claim = Claim {
            generation: row.get(ORDER_WIDTH)?,
            now_ms: row.get(ORDER_WIDTH + 1)?,
            started_ms: row.get::<Option<i64>>(ORDER_WIDTH + 2)?.unwrap_or(0),
        };
        let tokens = steps.iter().map(|s| s.6.clone()).collect();
        let order = order_from(id, &row, steps)?;
        self.after(SagaOp::Claim).await;
        Ok(Some((order, claim, tokens)))
    }

    /// Failed checkouts a domain would not compensate, oldest first: for an operator.
    pub async fn needing_attention(&self, limit: i64) -> Result<Vec<Order>, ApiError> {
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let ids: Vec<(String,)> = query_as(
                        "SELECT id FROM orders WHERE needs_attention = 1 \
                         ORDER BY created_at LIMIT $1",
                    )
                    .bind(limit)
                    .fetch_all(tx)
                    .await?;
                    let mut orders = Vec::with_capacity(ids.len());
                    for (id,) in ids {
                        let id = OrderProcessingId::parse(&id).map_err(|_| corrupt("id"))?;
                        if let Some((order, _)) = load(tx, &id).await? {
                            orders.push(order);
                        }
                    }
                    Ok(orders)
                })
            })
            .await
    }

    /// Deletes retired orders (past their retention as of `now`, checkout ended, nothing
    /// needing attention) with their steps, and replay entries past their time on the
    /// database's clock (a replica whose clock runs ahead must not free a token early), in
    /// bounded batches, in one transaction. The orders are chosen once, so their steps go
    /// with them.
    pub async fn prune(&self, now: i64) -> Result<(), ApiError> {
        const RETIRED: &str = "forget_at <= $1 AND status <> 'checking_out' \
             AND compensation_pending = 0 AND needs_attention = 0";
        let prune_replay = query(self.sql.prune_replay.clone()).bind(PRUNE_BATCH);
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let chosen: Vec<(String,)> = query_as(format!(
                        "SELECT id FROM orders WHERE {RETIRED} ORDER BY forget_at LIMIT $2"
                    ))
                    .bind(now)
                    .bind(PRUNE_BATCH)
                    .fetch_all(tx)
                    .await?;
                    if !chosen.is_empty() {
                        let ids = numbered(2, chosen.len());
                        let mut retire = query_as::<(String,)>(format!(
                            "DELETE FROM orders WHERE id IN ({ids}) AND {RETIRED} RETURNING id"
                        ))
                        .bind(now);
                        for (id,) in chosen {
                            retire = retire.bind(id);
                        }
                        let retired = retire.fetch_all(tx).await?;
                        if !retired.is_empty() {
                            let ids = numbered(1, retired.len());
                            let mut steps = query(format!(
                                "DELETE FROM checkout_steps WHERE order_id IN ({ids})"
                            ));
                            for (id,) in retired {
                                steps = steps.bind(id);
                            }
                            steps.execute(tx).await?;
                        }
                    }
                    prune_replay.execute(tx).await?;
                    Ok::<_, StoreError>(())
                })
            })
            .await?;
        self.recount().await
    }
}
