//! The statements that read the database's clock, written once with the engine's expression
//! for it ([`Store::now_ms_sql`]).

use ctr_store::Store;

use super::rows::ORDER_COLUMNS;

/// The statements that read the database's clock, with its expression for this engine.
#[derive(Debug)]
pub(super) struct ClockSql {
    pub(super) begin: String,
    pub(super) renew: String,
    pub(super) admit: String,
    pub(super) complete: String,
    pub(super) fail: String,
    pub(super) end_compensation: String,
    pub(super) claim: String,
    pub(super) abandoned: String,
    pub(super) backlog: String,
    pub(super) prune_replay: String,
    /// The clock alone.
    pub(super) now: String,
}

impl ClockSql {
    pub(super) fn new(store: &Store) -> Self {
        let now = store.now_ms_sql();
        let now_secs = store.now_secs_sql();
        Self {
            begin: format!(
                "UPDATE orders SET status = 'checking_out', generation = generation + 1, \
                 lease_expires_ms = {now} + $1 WHERE id = $2 AND customer_id = $4 \
                 AND status = 'open' AND expires_at > $3 \
                 RETURNING {ORDER_COLUMNS}, generation, {now}"
            ),
            renew: format!(
                "UPDATE orders SET lease_expires_ms = {now} + $1 \
                 WHERE id = $2 AND generation = $3 RETURNING {now}"
            ),
            admit: format!(
                "UPDATE orders SET checkout_started_ms = {now}, lease_expires_ms = {now} + $1 \
                 WHERE id = $2 AND generation = $3 AND status = 'checking_out' RETURNING {now}"
            ),
            complete: format!(
                "UPDATE orders SET status = 'completed', lease_expires_ms = NULL, forget_at = $1 \
                 WHERE id = $2 AND generation = $3 AND status = 'checking_out' RETURNING {now}"
            ),
            fail: format!(
                "UPDATE orders SET status = 'failed', compensation_pending = 1, \
                 failure_capability = $1, failure_problem = $2, failure_detail = $3, \
                 lease_expires_ms = {now} + $4, compensation_attempts = 0, \
                 compensation_since_ms = {now} \
                 WHERE id = $5 AND generation = $6 AND status = 'checking_out' RETURNING {now}"
            ),
            end_compensation: format!(
                "UPDATE orders SET compensation_pending = $1, needs_attention = $2, \
                 attention_reason = $3, forget_at = $4, \
                 lease_expires_ms = CASE WHEN $1 = 1 THEN {now} + $7 ELSE NULL END, \
                 compensation_attempts = compensation_attempts + $1, \
                 compensation_since_ms = COALESCE(compensation_since_ms, {now}) \
                 WHERE id = $5 AND generation = $6 AND status = 'failed' RETURNING {now}"
            ),
            claim: format!(
                "UPDATE orders SET generation = generation + 1, lease_expires_ms = {now} + $1 \
                 WHERE id = $2 AND (status = 'checking_out' OR compensation_pending = 1) \
                 AND (lease_expires_ms IS NULL OR lease_expires_ms <= {now}) \
                 RETURNING {ORDER_COLUMNS}, generation, {now}, checkout_started_ms"
            ),
            // Crashed checkouts first, then compensations by the time they fell due; the same
            // order on every engine (no NULL is left to the engine to place).
            abandoned: format!(
                "SELECT id, status FROM orders \
                 WHERE (status = 'checking_out' OR compensation_pending = 1) \
                 AND (lease_expires_ms IS NULL OR lease_expires_ms <= {now}) \
                 ORDER BY CASE WHEN status = 'checking_out' THEN 0 ELSE 1 END, \
                 COALESCE(lease_expires_ms, 0), id LIMIT $1"
            ),
            backlog: format!(
                "SELECT (SELECT COUNT(*) FROM orders WHERE needs_attention = 1), COUNT(*), \
                 MIN(compensation_since_ms), {now} FROM orders WHERE compensation_pending = 1"
            ),
            prune_replay: format!(
                "DELETE FROM replay WHERE (iss, jti) IN \
                 (SELECT iss, jti FROM replay WHERE forget_at <= {now_secs} LIMIT $1)"
            ),
            now: format!("SELECT {now}"),
        }
    }
}
