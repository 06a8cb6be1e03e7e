//! The outbox and its deliveries. An event is written by the transaction of the transition
//! it tells of (a statement of that transaction decides whether it exists), with one delivery
//! per configured webhook endpoint. Dispatchers, in this process or a replica, claim due
//! deliveries by bumping their `claim` and taking a lease on the database's clock, and write
//! an attempt's outcome only under that claim: one attempt in flight per delivery. A later
//! event of an order waits while an earlier one is pending for the same endpoint.

use std::sync::Arc;

use ctr_service_kit::ApiError;
use ctr_store::{Query, Store, StoreError, query, query_as};
use ctr_webhooks::{Event, EventFailure, EventType, OrderEvent};
use tokio::sync::Notify;

use super::rows::numbered;
use crate::orders::Order;

/// How many ended deliveries, or events with none left, one prune deletes at most.
const PRUNE_BATCH: i64 = 500;
/// The most deliveries one admin listing shows.
pub const LIST_LIMIT: i64 = 500;

/// Whether a proposed event exists: always (its transition's fence decides), or only when the
/// order's `needs_attention` was this before the transaction's own update.
#[derive(Debug, Clone, Copy)]
pub(super) enum When {
    Always,
    AttentionWas(bool),
}

/// The outbox's statements, written once for both engines with the database's clock, and the
/// endpoints every event is delivered to.
#[derive(Debug)]
pub struct Outbox {
    endpoints: Vec<String>,
    insert_event: String,
    insert_deliveries: Option<String>,
    /// Woken when this process commits an event: its dispatcher need not wait for its poll.
    pub(crate) written: Arc<Notify>,
}

impl Outbox {
    pub fn new(store: &Store, endpoints: Vec<String>) -> Self {
        let now = store.now_ms_sql();
        let insert_event = format!(
            "INSERT INTO order_events (id, order_id, seq, type, body, created_ms) \
             SELECT $1, id, (SELECT COALESCE(MAX(seq), 0) + 1 FROM order_events \
             WHERE order_id = $2), $3, $4, {now} \
             FROM orders WHERE id = $2 AND needs_attention IN ($5, $6)"
        );
        let insert_deliveries = (!endpoints.is_empty()).then(|| {
            let selects: Vec<String> = (0..endpoints.len())
                .map(|i| {
                    format!(
                        "SELECT id, ${}, order_id, seq, 'pending', {now}, {now} \
                         FROM order_events WHERE id = $1",
                        i + 2
                    )
                })
                .collect();
            format!(
                "INSERT INTO webhook_deliveries \
                 (event_id, endpoint, order_id, seq, state, next_attempt_ms, since_ms) {}",
                selects.join(" UNION ALL ")
            )
        });
        Self {
            endpoints,
            insert_event,
            insert_deliveries,
            written: Arc::new(Notify::new()),
        }
    }

    /// The statements that write event `kind` of `order` as it stands after its transition (at
    /// `now`, Unix seconds), with its deliveries: deferred into the transition's transaction,
    /// before its fence.
    pub(super) fn propose(
        &self,
        order: &Order,
        kind: EventType,
        when: When,
        now: i64,
    ) -> Vec<Query> {
        let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let event = Event {
            kind,
            timestamp: ctr_service_kit::rfc3339(now),
            data: OrderEvent {
                order_processing_id: order.id.as_str().to_owned(),
                customer_id: order.customer_id.as_str().to_owned(),
                total: order.total,
                failure: order.failure.as_ref().map(|f| EventFailure {
                    capability: f.capability.clone(),
                    problem_type: format!("{}{}", ctr_service_kit::PROBLEM_BASE, f.call.cause()),
                    detail: f.call.detail().to_owned(),
                }),
                attention: order.attention.clone(),
            },
        };
        // Serializing plain strings and numbers cannot fail.
        let body = serde_json::to_string(&event).unwrap_or_default();
        let (low, high) = match when {
            When::Always => (0, 1),
            When::AttentionWas(was) => (i64::from(was), i64::from(was)),
        };
        let mut statements = vec![
            query(self.insert_event.clone())
                .bind(id.clone())
                .bind(order.id.as_str())
                .bind(kind.as_str())
                .bind(body)
                .bind(low)
                .bind(high),
        ];
        if let Some(sql) = &self.insert_deliveries {
            let mut deliveries = query(sql.clone()).bind(id);
            for endpoint in &self.endpoints {
                deliveries = deliveries.bind(endpoint.clone());
            }
            statements.push(deliveries);
        }
        statements
    }
}

/// A delivery a dispatcher claimed: its event, and the claim its outcome is written under.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub event_id: String,
    pub endpoint: String,
    pub claim: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    pub body: String,
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// The endpoint answered 2xx.
    Delivered { status: u16 },
    /// Anything else: retried `retry_in_ms` later, or failed once its window of tries is over.
    NotDelivered {
        status: Option<u16>,
        error: String,
        retry_in_ms: i64,
    },
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    Retried,
    Failed,
    /// Another dispatcher claimed it since (this one's lease ran out): its word stands.
    ClaimLost,
}

/// A delivery as an operator reads it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub event_id: String,
    pub endpoint: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_processing_id: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    /// RFC 3339: when a pending delivery is tried next.
    pub next_attempt_at: Option<String>,
    /// The endpoint's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    /// Why the last attempt did not deliver.
    pub last_error: Option<String>,
    /// RFC 3339: when the event was written.
    pub created_at: String,
}

/// What waits for delivery, for the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryBacklog {
    pub pending: i64,
    pub failed: i64,
    /// How long the oldest pending delivery has waited (milliseconds; 0 when none does).
    pub oldest_pending_ms: i64,
}

/// The deliveries in the relay's store.
#[derive(Clone)]
pub struct Deliveries {
    store: Store,
    endpoints: Arc<[String]>,
    sql: Arc<DeliverySql>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct DeliverySql {
    claim: String,
    bodies: &'static str,
    delivered: String,
    not_delivered: String,
    redeliver: String,
    backlog: String,
    prune_deliveries: String,
    prune_events: String,
    list: &'static str,
}

/// The endpoints' names as parameters from `$first`, or a list nothing is in.
fn names(first: usize, endpoints: &[String]) -> String {
    if endpoints.is_empty() {
        "NULL".to_owned()
    } else {
        numbered(first, endpoints.len())
    }
}

impl Deliveries {
    /// The deliveries to `endpoints`, the configured ones: a delivery to an endpoint no
    /// longer configured is never claimed, and is pruned once its window of tries is over.
    pub fn new(store: Store, endpoints: &[String]) -> Self {
        let now = store.now_ms_sql();
        let sql = DeliverySql {
            claim: format!(
                "UPDATE webhook_deliveries SET claim = claim + 1, lease_until_ms = {now} + $1 \
                 WHERE (event_id, endpoint) IN (SELECT d.event_id, d.endpoint \
                 FROM webhook_deliveries d WHERE d.state = 'pending' \
                 AND d.next_attempt_ms <= {now} \
                 AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= {now}) \
                 AND d.endpoint IN ({}) \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
                 WHERE p.endpoint = d.endpoint AND p.order_id = d.order_id \
                 AND p.seq < d.seq AND p.state = 'pending') \
                 ORDER BY d.next_attempt_ms, d.order_id, d.seq LIMIT $2) \
                 AND state = 'pending' AND (lease_until_ms IS NULL OR lease_until_ms <= {now}) \
                 RETURNING event_id, endpoint, claim, attempts",
                names(3, endpoints)
            ),
            bodies: "SELECT id, body FROM order_events WHERE id IN ",
            delivered: format!(
                "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, \
                 lease_until_ms = NULL, last_status = $1, last_error = NULL, ended_ms = {now} \
                 WHERE event_id = $2 AND endpoint = $3 AND claim = $4 AND state = 'pending'"
            ),
            not_delivered: format!(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until_ms = NULL, \
                 last_status = $1, last_error = $2, \
                 state = CASE WHEN {now} - since_ms >= $5 THEN 'failed' ELSE 'pending' END, \
                 ended_ms = CASE WHEN {now} - since_ms >= $5 THEN {now} ELSE NULL END, \
                 next_attempt_ms = {now} + $6 \
                 WHERE event_id = $3 AND endpoint = $4 AND claim = $7 AND state = 'pending' \
                 RETURNING state"
            ),
            redeliver: format!(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, \
                 next_attempt_ms = {now}, since_ms = {now}, ended_ms = NULL, \
                 lease_until_ms = NULL, last_error = NULL, claim = claim + 1 \
                 WHERE endpoint = $1 AND state = 'failed' AND ($2 = '' OR event_id = $2)"
            ),
            backlog: format!(
                "SELECT COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0), \
                 MIN(CASE WHEN state = 'pending' THEN since_ms END), {now} \
                 FROM webhook_deliveries"
            ),
            prune_deliveries: format!(
                "DELETE FROM webhook_deliveries WHERE (event_id, endpoint) IN \
                 (SELECT event_id, endpoint FROM webhook_deliveries \
                 WHERE (state <> 'pending' AND ended_ms <= {now} - $1) \
                 OR ({} AND since_ms <= {now} - $3) LIMIT $2)",
                // `NOT IN (NULL)` is never true: with no endpoint left, every one is gone.
                if endpoints.is_empty() {
                    "TRUE".to_owned()
                } else {
                    format!("endpoint NOT IN ({})", numbered(4, endpoints.len()))
                }
            ),
            prune_events: format!(
                "DELETE FROM order_events WHERE id IN (SELECT e.id FROM order_events e \
                 WHERE e.created_ms <= {now} - $1 AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id) LIMIT $2)"
            ),
            list: "SELECT d.event_id, d.endpoint, e.type, e.order_id, d.state, d.attempts, \
                   d.next_attempt_ms, d.last_status, d.last_error, e.created_ms \
                   FROM webhook_deliveries d JOIN order_events e ON e.id = d.event_id \
                   WHERE ($1 = '' OR d.state = $1) AND ($2 = '' OR d.endpoint = $2) \
                   ORDER BY e.created_ms, d.event_id, d.endpoint LIMIT $3",
        };
        Self {
            store,
            endpoints: endpoints.into(),
            sql: Arc::new(sql),
        }
    }

    /// Claims up to `limit` due deliveries for `lease_ms` (database clock), with their bodies.
    pub async fn claim(&self, limit: usize, lease_ms: i64) -> Result<Vec<Claimed>, ApiError> {
        if self.endpoints.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut claim = query_as::<(String, String, i64, i64)>(self.sql.claim.clone())
            .bind(lease_ms)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        for endpoint in self.endpoints.iter() {
            claim = claim.bind(endpoint.clone());
        }
        let bodies = self.sql.bodies;
        let claimed = self
            .store
            .transact(move |tx| {
                Box::pin(async move {
                    let claimed = claim.fetch_all(tx).await?;
                    if claimed.is_empty() {
                        return Ok::<_, StoreError>(Vec::new());
                    }
                    let mut ids: Vec<&String> = claimed.iter().map(|c| &c.0).collect();
                    ids.sort();
                    ids.dedup();
                    let mut read = query_as::<(String, String)>(format!(
                        "{bodies}({})",
                        numbered(1, ids.len())
                    ));
                    for id in ids {
                        read = read.bind(id.clone());
                    }
                    let bodies = read.fetch_all(tx).await?;
                    Ok(claimed
                        .into_iter()
                        .filter_map(|(event_id, endpoint, claim, attempts)| {
                            let body = bodies.iter().find(|(id, _)| *id == event_id)?.1.clone();
                            Some(Claimed {
                                event_id,
                                endpoint,
                                claim,
                                attempts,
                                body,
                            })
                        })
                        .collect())
                })
            })
            .await?;
        Ok(claimed)
    }

    /// Writes how `attempt` of `claimed` went, under its claim; a delivery not delivered fails
    /// once `window_ms` have passed since its tries began.
    pub async fn settle(
        &self,
        claimed: &Claimed,
        attempt: &Attempt,
        window_ms: i64,
    ) -> Result<Settled, ApiError> {
        match attempt {
            Attempt::Delivered { status } => {
                let changed = self
                    .store
                    .execute(
                        query(self.sql.delivered.clone())
                            .bind(i64::from(*status))
                            .bind(claimed.event_id.clone())
                            .bind(claimed.endpoint.clone())
                            .bind(claimed.claim),
                    )
                    .await?;
                Ok(if changed == 1 {
                    Settled::Delivered
                } else {
                    Settled::ClaimLost
                })
            }
            Attempt::NotDelivered {
                status,
                error,
                retry_in_ms,
            } => {
                let state: Option<(String,)> = self
                    .store
                    .fetch_optional(
                        query_as(self.sql.not_delivered.clone())
                            .bind(status.map(i64::from))
                            .bind(error.clone())
                            .bind(claimed.event_id.clone())
                            .bind(claimed.endpoint.clone())
                            .bind(window_ms)
                            .bind(*retry_in_ms)
                            .bind(claimed.claim),
                    )
                    .await?;
                Ok(match state {
                    None => Settled::ClaimLost,
                    Some((state,)) if state == "failed" => Settled::Failed,
                    Some(_) => Settled::Retried,
                })
            }
        }
    }

    /// Gives the failed deliveries to `endpoint` (one event's, or all when `event_id` is
    /// empty) a new window of tries, due now. Answers how many.
    pub async fn redeliver(&self, endpoint: &str, event_id: &str) -> Result<u64, ApiError> {
        Ok(self
            .store
            .execute(
                query(self.sql.redeliver.clone())
                    .bind(endpoint.to_owned())
                    .bind(event_id.to_owned()),
            )
            .await?)
    }

    /// Deliveries in `state` to `endpoint` (either empty: any), oldest event first.
    pub async fn list(
        &self,
        state: &str,
        endpoint: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryView>, ApiError> {
        type Listed = (
            String,
            String,
            String,
            String,
            String,
            i64,
            i64,
            Option<i64>,
            Option<String>,
            i64,
        );
        let rows: Vec<Listed> = self
            .store
            .fetch_all(
                query_as(self.sql.list)
                    .bind(state.to_owned())
                    .bind(endpoint.to_owned())
                    .bind(limit),
            )
            .await?;
        let at = |ms: i64| ctr_service_kit::rfc3339(ms.div_euclid(1000));
        Ok(rows
            .into_iter()
            .map(
                |(
                    event_id,
                    endpoint,
                    kind,
                    order,
                    state,
                    attempts,
                    next,
                    status,
                    error,
                    created,
                )| {
                    DeliveryView {
                        next_attempt_at: (state == "pending").then(|| at(next)),
                        event_id,
                        endpoint,
                        kind,
                        order_processing_id: order,
                        state,
                        attempts,
                        last_status: status,
                        last_error: error,
                        created_at: at(created),
                    }
                },
            )
            .collect())
    }

    /// Pending and failed deliveries, and the age of the oldest pending one.
    pub async fn backlog(&self) -> Result<DeliveryBacklog, ApiError> {
        let (pending, failed, oldest, now): (i64, i64, Option<i64>, i64) = self
            .store
            .fetch_one(query_as(self.sql.backlog.clone()))
            .await?;
        Ok(DeliveryBacklog {
            pending,
            failed,
            oldest_pending_ms: oldest.map_or(0, |since| now.saturating_sub(since).max(0)),
        })
    }

    /// Deletes, in bounded batches, deliveries ended more than `retention_ms` ago, those to
    /// endpoints no longer configured whose window of tries (`window_ms`) is over, and events
    /// older than `retention_ms` with no delivery left.
    pub async fn prune(&self, retention_ms: i64, window_ms: i64) -> Result<(), ApiError> {
        let mut deliveries = query(self.sql.prune_deliveries.clone())
            .bind(retention_ms)
            .bind(PRUNE_BATCH)
            .bind(window_ms);
        for endpoint in self.endpoints.iter() {
            deliveries = deliveries.bind(endpoint.clone());
        }
        let events = query(self.sql.prune_events.clone())
            .bind(retention_ms)
            .bind(PRUNE_BATCH);
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    deliveries.execute(tx).await?;
                    events.execute(tx).await?;
                    Ok::<_, StoreError>(())
                })
            })
            .await?;
        Ok(())
    }
}
