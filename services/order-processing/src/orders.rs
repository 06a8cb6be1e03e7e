//! Orders, their checkout log and the replay store, kept in the relay's store so that a
//! restart loses no order and a recovering relay can finish every checkout.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ctr_money::{Currency, Money};
use ctr_relay_api::CallFailure;
use ctr_service_kit::{ApiError, CustomerId, OrderProcessingId, rfc3339, seconds_until};
use ctr_store::sqlx::{self, Row as _};
use ctr_store::{Conn, Migration, Store};
use ctr_token::VerifiedToken;
use serde::Serialize;

use uuid::Uuid;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "orders, checkout steps, replay",
        sql: include_str!("../migrations/0001_orders.sql"),
    },
    Migration {
        version: 2,
        name: "orders by customer",
        sql: include_str!("../migrations/0002_orders_by_customer.sql"),
    },
];

/// How many retired orders or replay entries one prune deletes at most.
const PRUNE_BATCH: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Open,
    CheckingOut,
    Completed,
    Failed,
    Expired,
}

impl OrderStatus {
    const ALL: [Self; 5] = [
        Self::Open,
        Self::CheckingOut,
        Self::Completed,
        Self::Failed,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::CheckingOut => "checking_out",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What happened to one token of a checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenOutcome {
    Pending,
    /// Its domain is being called (recorded before the call): a recovering relay calls again.
    Redeeming,
    Redeemed,
    /// Redeemed (or possibly redeemed), then reversed by compensation.
    Compensated,
    /// Its redemption failed.
    Failed,
    /// Never redeemed; its hold was released.
    Released,
}

impl TokenOutcome {
    const ALL: [Self; 6] = [
        Self::Pending,
        Self::Redeeming,
        Self::Redeemed,
        Self::Compensated,
        Self::Failed,
        Self::Released,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Redeeming => "redeeming",
            Self::Redeemed => "redeemed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
            Self::Released => "released",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A token of the order as the relay recorded it (never the token itself).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenRecord {
    pub iss: String,
    pub jti: Uuid,
    pub capability: String,
    /// What the token paid toward the order (its signed `settles`).
    pub settles: Money,
    pub outcome: TokenOutcome,
}

/// Why a checkout failed: the capability whose redemption failed, and how.
#[derive(Debug, Clone)]
pub struct Failure {
    pub capability: String,
    pub call: CallFailure,
}

/// Why a checkout failed, as a client reads it: the domain's problem type or
/// `issuer-unavailable`, and words (never a URL or an error chain).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailureView {
    /// The capability whose redemption failed.
    pub capability: String,
    /// The domain's problem type (`payment-declined`) or `issuer-unavailable`.
    pub reason: String,
    pub detail: String,
}

impl Failure {
    pub fn view(&self) -> FailureView {
        FailureView {
            capability: self.capability.clone(),
            reason: self.call.cause().to_owned(),
            detail: self.call.detail().to_owned(),
        }
    }
}

/// An order as a client sees it: never a token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_processing_id: OrderProcessingId,
    pub customer_id: CustomerId,
    pub total: Money,
    pub status: OrderStatus,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: an order not checked out by then expires.
    pub expires_at: String,
    /// The checkout's tokens, in the order they are redeemed.
    pub tokens: Vec<TokenRecord>,
    /// What the tokens settle together.
    pub settled: Money,
    /// Why the checkout failed, once it has.
    pub failure: Option<FailureView>,
    /// Compensation of a failed checkout still runs (a domain was unreachable).
    pub compensation_pending: bool,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: OrderProcessingId,
    pub customer_id: CustomerId,
    pub total: Money,
    pub status: OrderStatus,
    pub created_at: i64,
    pub expires_at: i64,
    pub tokens: Vec<TokenRecord>,
    pub failure: Option<Failure>,
    /// When its checkout was admitted: the start of the bound on `checking_out`.
    pub checkout_started_at: Option<i64>,
    /// A reversal the saga could not get through yet; the recovery worker keeps trying.
    pub compensation_pending: bool,
    /// Until when the relay running the checkout holds it (none once it ended).
    pub lease_until: Option<i64>,
}

impl Order {
    /// The status as of `now`: an open order past its time is expired.
    pub fn status_at(&self, now: i64) -> OrderStatus {
        if self.status == OrderStatus::Open && now >= self.expires_at {
            OrderStatus::Expired
        } else {
            self.status
        }
    }

    /// What the order's tokens settle together: the total, once a checkout was admitted.
    pub fn settled(&self) -> Money {
        self.tokens
            .iter()
            .try_fold(Money::zero(self.total.currency), |sum, t| {
                sum.checked_add(t.settles)
            })
            .unwrap_or(self.total)
    }

    /// What a client sees: never a token.
    pub fn view(&self, now: i64) -> OrderView {
        OrderView {
            order_processing_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            total: self.total,
            status: self.status_at(now),
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            tokens: self.tokens.clone(),
            settled: self.settled(),
            failure: self.failure.as_ref().map(Failure::view),
            compensation_pending: self.compensation_pending,
        }
    }
}

/// Why a checkout could not begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginError {
    NotFound,
    NotOpen(OrderStatus),
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

/// A checkout whose lease has run out: a recovery worker may take it over.
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub id: OrderProcessingId,
    lease_until: Option<i64>,
}

type OrderRow = (
    String,
    String,
    i64,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

type StepRow = (String, String, String, i64, String, String, String);

/// The relay's orders in its store, bounded: an order is kept until `expires_at + retention`
/// (longer while its checkout runs), and at most `capacity` are kept at once.
#[derive(Debug, Clone)]
pub struct OrderStore {
    store: Store,
    capacity: usize,
    per_customer: usize,
    retention: i64,
    /// Orders kept, as last counted (at each prune) plus this process's inserts since: the
    /// capacity check reads it instead of counting the table on every insert. `-1`: not
    /// counted yet.
    kept: Arc<AtomicI64>,
}

fn corrupt(what: &str) -> ApiError {
    ApiError::internal(format!("a stored order's {what} is invalid"))
}

impl OrderStore {
    /// `retention`: how long, in seconds, an order stays readable after its checkout window;
    /// `per_customer`: how many open orders one customer may have at once.
    pub fn new(store: Store, capacity: usize, per_customer: usize, retention: i64) -> Self {
        Self {
            store,
            capacity,
            per_customer,
            retention: retention.max(1),
            kept: Arc::new(AtomicI64::new(-1)),
        }
    }

    fn full(&self) -> bool {
        usize::try_from(self.kept.load(Ordering::Relaxed)).is_ok_and(|kept| kept >= self.capacity)
    }

    async fn recount(&self) -> Result<(), ApiError> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders")
            .fetch_one(self.store.pool())
            .await?;
        self.kept.store(count, Ordering::Relaxed);
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores a new order. When the store looks full, orders kept past their retention as of
    /// `now` are dropped first. Across replicas the bound is approximate: each process counts
    /// the shared table at every prune (each recovery pass) and adds its own inserts since.
    pub async fn insert(&self, order: &Order, now: i64) -> Result<(), InsertError> {
        if self.kept.load(Ordering::Relaxed) < 0 {
            self.recount().await.map_err(InsertError::Store)?;
        }
        if self.full() {
            self.prune(now).await.map_err(InsertError::Store)?;
            if self.full() {
                let (first,): (Option<i64>,) = sqlx::query_as(
                    "SELECT MIN(forget_at) FROM orders \
                     WHERE status <> 'checking_out' AND compensation_pending = 0",
                )
                .fetch_one(self.store.pool())
                .await
                .map_err(|e| InsertError::Store(e.into()))?;
                return Err(InsertError::Full {
                    capacity: self.capacity,
                    retry_after: seconds_until(first, now),
                });
            }
        }
        // One statement checks the customer's open orders and inserts.
        let inserted = sqlx::query(
            "INSERT INTO orders (id, customer_id, total_amount, currency, status, created_at, \
             expires_at, forget_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE (SELECT COUNT(*) FROM orders WHERE customer_id = $2 AND status = 'open' \
             AND expires_at > $9) < $10",
        )
        .bind(order.id.as_str())
        .bind(order.customer_id.as_str())
        .bind(amount_to_sql(order.total.amount))
        .bind(order.total.currency.as_str())
        .bind(order.status.as_str())
        .bind(order.created_at)
        .bind(order.expires_at)
        .bind(order.expires_at.saturating_add(self.retention))
        .bind(now)
        .bind(i64::try_from(self.per_customer).unwrap_or(i64::MAX))
        .execute(self.store.pool())
        .await
        .map_err(|e| InsertError::Store(e.into()))?;
        if inserted.rows_affected() != 1 {
            let (first,): (Option<i64>,) = sqlx::query_as(
                "SELECT MIN(expires_at) FROM orders \
                 WHERE customer_id = $1 AND status = 'open' AND expires_at > $2",
            )
            .bind(order.customer_id.as_str())
            .bind(now)
            .fetch_one(self.store.pool())
            .await
            .map_err(|e| InsertError::Store(e.into()))?;
            return Err(InsertError::CustomerLimit {
                limit: self.per_customer,
                retry_after: seconds_until(first, now),
            });
        }
        self.kept.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub async fn get(&self, id: &OrderProcessingId) -> Result<Option<Order>, ApiError> {
        let mut conn = self.store.pool().acquire().await?;
        load(&mut conn, id).await
    }

    /// Moves an open, unexpired order to `checking_out`, atomically: one caller wins, in this
    /// process or another.
    /// The lease keeps recovery workers off while the checkout is being admitted.
    pub async fn begin_checkout(
        &self,
        id: &OrderProcessingId,
        lease: Lease<'_>,
    ) -> Result<Result<Order, BeginError>, ApiError> {
        let now = lease.now;
        // The winner reads the order back from the update (an open order has no steps yet).
        let moved: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE orders SET status = 'checking_out', lease_owner = $1, lease_until = $2 \
             WHERE id = $3 AND status = 'open' AND expires_at > $4 RETURNING {ORDER_COLUMNS}"
        )))
        .bind(lease.owner)
        .bind(lease.until)
        .bind(id.as_str())
        .bind(now)
        .fetch_optional(self.store.pool())
        .await?;
        if let Some(row) = moved {
            return Ok(Ok(order_from(id, row, Vec::new())?));
        }
        let mut conn = self.store.pool().acquire().await?;
        Ok(match load(&mut conn, id).await? {
            None => Err(BeginError::NotFound),
            Some(order) => Err(BeginError::NotOpen(order.status_at(now))),
        })
    }

    /// Gives an order whose checkout was refused before anything was consumed back to `open`.
    pub async fn reopen(&self, id: &OrderProcessingId) -> Result<(), ApiError> {
        sqlx::query(
            "UPDATE orders SET status = 'open', lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND status = 'checking_out'",
        )
        .bind(id.as_str())
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Admits a checkout in one transaction: consumes every `(iss, jti)` (kept until the
    /// token's `exp` + `leeway`), writes the checkout log and takes the saga's lease. Answers
    /// the first replayed token's index when one was seen before; then nothing is written.
    pub async fn admit(
        &self,
        order: &mut Order,
        tokens: &[VerifiedToken],
        leeway: i64,
        lease: Lease<'_>,
    ) -> Result<Result<(), usize>, ApiError> {
        let mut tx = self.store.begin().await?;
        // One statement consumes every token; the rows it answers are the ones that were new.
        // (The relay admits 1 to `max_tokens` tokens: the statement is never empty.)
        let mut consume = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO replay (iss, jti, forget_at) VALUES {} \
             ON CONFLICT (iss, jti) DO NOTHING RETURNING iss, jti",
            placeholders(tokens.len(), 3)
        )));
        for token in tokens {
            let claims = token.claims();
            consume = consume
                .bind(claims.iss.clone())
                .bind(claims.jti.to_string())
                .bind(claims.exp.saturating_add(leeway));
        }
        let fresh = consume.fetch_all(&mut *tx).await?;
        if fresh.len() != tokens.len() {
            // Dropping the transaction undoes the consumption of the others.
            let mut fresh: Vec<(String, String)> = fresh
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?;
            let replayed = tokens.iter().position(|token| {
                let key = (token.claims().iss.clone(), token.claims().jti.to_string());
                match fresh.iter().position(|f| *f == key) {
                    Some(found) => {
                        fresh.swap_remove(found);
                        false
                    }
                    None => true,
                }
            });
            return Ok(Err(replayed.unwrap_or(0)));
        }
        order.tokens = tokens
            .iter()
            .map(|t| TokenRecord {
                iss: t.claims().iss.clone(),
                jti: t.claims().jti,
                capability: t.claims().capabilities[0].clone(),
                settles: t.claims().settles,
                outcome: TokenOutcome::Pending,
            })
            .collect();
        let mut log = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO checkout_steps (order_id, position, iss, jti, capability, \
             settles_amount, settles_currency, token, outcome) VALUES {}",
            placeholders(tokens.len(), 9)
        )));
        for (position, (record, token)) in order.tokens.iter().zip(tokens).enumerate() {
            log = log
                .bind(order.id.as_str().to_owned())
                .bind(i64::try_from(position).unwrap_or(i64::MAX))
                .bind(record.iss.clone())
                .bind(record.jti.to_string())
                .bind(record.capability.clone())
                .bind(amount_to_sql(record.settles.amount))
                .bind(record.settles.currency.as_str())
                .bind(token.token().to_owned())
                .bind(record.outcome.as_str());
        }
        log.execute(&mut *tx).await?;
        order.checkout_started_at = Some(lease.now);
        order.lease_until = Some(lease.until);
        sqlx::query(
            "UPDATE orders SET checkout_started_at = $1, lease_owner = $2, lease_until = $3 \
             WHERE id = $4",
        )
        .bind(lease.now)
        .bind(lease.owner)
        .bind(lease.until)
        .bind(order.id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Records the order's state and every step's outcome, and renews the saga's lease. Once
    /// the saga has ended, the tokens it kept for recovery are cleared and the order's
    /// retention starts.
    pub async fn save(&self, order: &mut Order, lease: Lease<'_>) -> Result<(), ApiError> {
        let ended = order.status != OrderStatus::CheckingOut && !order.compensation_pending;
        let mut tx = self.store.begin().await?;
        let every_step: Vec<usize> = (0..order.tokens.len()).collect();
        write_steps(&mut tx, order, &every_step, ended).await?;
        let (problem, detail) = match order.failure.as_ref().map(|f| &f.call) {
            Some(CallFailure::Refused {
                problem_type,
                detail,
            }) => (Some(problem_type.as_str()), Some(detail.as_str())),
            Some(CallFailure::Unavailable) | None => (None, None),
        };
        sqlx::query(
            "UPDATE orders SET status = $1, compensation_pending = $2, failure_capability = $3, \
             failure_problem = $4, failure_detail = $5, lease_until = $6, forget_at = $7 \
             WHERE id = $8",
        )
        .bind(order.status.as_str())
        .bind(i64::from(order.compensation_pending))
        .bind(order.failure.as_ref().map(|f| f.capability.as_str()))
        .bind(problem)
        .bind(detail)
        .bind(if ended { None } else { Some(lease.until) })
        .bind(
            lease
                .now
                .max(order.expires_at)
                .saturating_add(self.retention),
        )
        .bind(order.id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the outcomes of the steps at `positions`, in one statement: what the saga writes
    /// before each call (with the outcome of the call before it) and after a failed one.
    pub async fn save_steps(&self, order: &Order, positions: &[usize]) -> Result<(), ApiError> {
        let mut conn = self.store.pool().acquire().await?;
        write_steps(&mut conn, order, positions, false).await?;
        Ok(())
    }

    /// Extends the saga's lease to `lease.until`.
    pub async fn renew(&self, order: &mut Order, lease: Lease<'_>) -> Result<(), ApiError> {
        sqlx::query("UPDATE orders SET lease_until = $1 WHERE id = $2")
            .bind(lease.until)
            .bind(order.id.as_str())
            .execute(self.store.pool())
            .await?;
        order.lease_until = Some(lease.until);
        Ok(())
    }

    /// The tokens a recovering relay hands back to their domains, in redemption order.
    pub async fn tokens(&self, id: &OrderProcessingId) -> Result<Vec<String>, ApiError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT token FROM checkout_steps WHERE order_id = $1 ORDER BY position",
        )
        .bind(id.as_str())
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    /// Checkouts (or compensations) whose lease ran out before they ended.
    pub async fn abandoned(&self, now: i64, limit: i64) -> Result<Vec<Abandoned>, ApiError> {
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT id, lease_until FROM orders \
             WHERE (status = 'checking_out' OR compensation_pending = 1) \
             AND (lease_until IS NULL OR lease_until <= $1) LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        rows.into_iter()
            .map(|(id, lease_until)| {
                Ok(Abandoned {
                    id: OrderProcessingId::parse(&id).map_err(|_| corrupt("id"))?,
                    lease_until,
                })
            })
            .collect()
    }

    /// Takes over an abandoned checkout if no other relay did meanwhile; answers the order.
    pub async fn claim(
        &self,
        abandoned: &Abandoned,
        lease: Lease<'_>,
    ) -> Result<Option<Order>, ApiError> {
        let mut tx = self.store.begin().await?;
        let claimed = sqlx::query(
            "UPDATE orders SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             AND (lease_until = $4 OR (lease_until IS NULL AND $4 IS NULL))",
        )
        .bind(lease.owner)
        .bind(lease.until)
        .bind(abandoned.id.as_str())
        .bind(abandoned.lease_until)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            return Ok(None);
        }
        let order = load(&mut tx, &abandoned.id).await?;
        tx.commit().await?;
        Ok(order)
    }

    /// Deletes retired orders (past their retention, checkout ended) and expired replay
    /// entries, in bounded batches.
    pub async fn prune(&self, now: i64) -> Result<(), ApiError> {
        let mut tx = self.store.begin().await?;
        for retire in [
            "DELETE FROM checkout_steps WHERE order_id IN \
             (SELECT id FROM orders WHERE forget_at <= $1 \
              AND status <> 'checking_out' AND compensation_pending = 0 LIMIT $2)",
            "DELETE FROM orders WHERE id IN \
             (SELECT id FROM orders WHERE forget_at <= $1 \
              AND status <> 'checking_out' AND compensation_pending = 0 LIMIT $2)",
            "DELETE FROM replay WHERE (iss, jti) IN \
             (SELECT iss, jti FROM replay WHERE forget_at <= $1 LIMIT $2)",
        ] {
            sqlx::query(retire)
                .bind(now)
                .bind(PRUNE_BATCH)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.recount().await
    }
}

/// Who runs a saga and until when its claim holds.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    pub owner: &'a str,
    pub now: i64,
    pub until: i64,
}

/// `rows` tuples of `width` parameters each, numbered from `$1`: `($1, $2), ($3, $4)`.
fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| {
            let columns = (1..=width)
                .map(|column| format!("${}", row * width + column))
                .collect::<Vec<_>>();
            format!("({})", columns.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn amount_to_sql(amount: u64) -> i64 {
    // Money is at most 10^12 minor units.
    i64::try_from(amount).unwrap_or(i64::MAX)
}

fn money(amount: i64, currency: &str) -> Result<Money, ApiError> {
    let currency = Currency::parse(currency).map_err(|_| corrupt("currency"))?;
    u64::try_from(amount)
        .ok()
        .and_then(|amount| Money::checked(amount, currency))
        .ok_or_else(|| corrupt("amount"))
}

/// Writes the outcomes of the steps at `positions` in one statement; `clear_tokens` also
/// clears every step's token (the saga has ended: recovery needs them no more).
async fn write_steps(
    conn: &mut Conn,
    order: &Order,
    positions: &[usize],
    clear_tokens: bool,
) -> Result<(), sqlx::Error> {
    let positions: Vec<(i64, &'static str)> = positions
        .iter()
        .filter_map(|&p| {
            Some((
                i64::try_from(p).ok()?,
                order.tokens.get(p)?.outcome.as_str(),
            ))
        })
        .collect();
    if positions.is_empty() {
        return Ok(());
    }
    let cases: String = (0..positions.len())
        .map(|i| format!(" WHEN ${} THEN ${}", 2 * i + 3, 2 * i + 4))
        .collect();
    let within = (0..positions.len())
        .map(|i| format!("${}", 2 * i + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let mut update = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE checkout_steps SET outcome = CASE position{cases} END, \
         token = CASE WHEN $2 = 1 THEN '' ELSE token END \
         WHERE order_id = $1 AND position IN ({within})"
    )))
    .bind(order.id.as_str().to_owned())
    .bind(i64::from(clear_tokens));
    for (position, outcome) in positions {
        update = update.bind(position).bind(outcome);
    }
    update.execute(&mut *conn).await?;
    Ok(())
}

/// The columns of an [`OrderRow`], in its order.
const ORDER_COLUMNS: &str = "customer_id, currency, total_amount, status, id, created_at, \
     expires_at, checkout_started_at, compensation_pending, failure_capability, \
     failure_problem, failure_detail, lease_until";

async fn load(conn: &mut Conn, id: &OrderProcessingId) -> Result<Option<Order>, ApiError> {
    let row: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT iss, jti, capability, settles_amount, settles_currency, outcome, token \
         FROM checkout_steps WHERE order_id = $1 ORDER BY position",
    )
    .bind(id.as_str())
    .fetch_all(&mut *conn)
    .await?;
    order_from(id, row, steps).map(Some)
}

fn order_from(
    id: &OrderProcessingId,
    row: OrderRow,
    steps: Vec<StepRow>,
) -> Result<Order, ApiError> {
    let (
        customer,
        currency,
        total,
        status,
        _,
        created_at,
        expires_at,
        checkout_started_at,
        compensation_pending,
        failure_capability,
        failure_problem,
        failure_detail,
        lease_until,
    ) = row;
    let tokens = steps
        .into_iter()
        .map(|(iss, jti, capability, amount, currency, outcome, _)| {
            Ok(TokenRecord {
                iss,
                jti: Uuid::try_parse(&jti).map_err(|_| corrupt("jti"))?,
                capability,
                settles: money(amount, &currency)?,
                outcome: TokenOutcome::parse(&outcome).ok_or_else(|| corrupt("outcome"))?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let failure = failure_capability.map(|capability| Failure {
        capability,
        call: match failure_problem {
            Some(problem_type) => CallFailure::Refused {
                problem_type,
                detail: failure_detail.unwrap_or_default(),
            },
            None => CallFailure::Unavailable,
        },
    });
    Ok(Order {
        id: id.clone(),
        customer_id: CustomerId::parse(&customer).map_err(|_| corrupt("customer"))?,
        total: money(total, &currency)?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        created_at,
        expires_at,
        tokens,
        failure,
        checkout_started_at,
        compensation_pending: compensation_pending != 0,
        lease_until,
    })
}
