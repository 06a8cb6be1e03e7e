-- The saga is fenced: every claim of a checkout (admission, takeover by recovery) bumps the
-- order's generation, and every write of the saga is conditional on it. Leases are judged on
-- the database's clock, in milliseconds, so that replicas with skewed clocks cannot disagree
-- on whether one ran out. A checkout's bound is measured on the same clock.
ALTER TABLE orders ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN lease_expires_ms BIGINT;
ALTER TABLE orders ADD COLUMN checkout_started_ms BIGINT;
-- A failed checkout whose compensation a domain refused for good (the cancellation window
-- closed, the hold belongs elsewhere, a redemption the domain lost): an operator settles it.
-- Such an order is never pruned while it needs attention.
ALTER TABLE orders ADD COLUMN needs_attention BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN attention_reason TEXT;
DROP INDEX orders_by_lease;
ALTER TABLE orders DROP COLUMN lease_owner;
ALTER TABLE orders DROP COLUMN lease_until;
ALTER TABLE orders DROP COLUMN checkout_started_at;
CREATE INDEX orders_running ON orders (lease_expires_ms)
    WHERE status = 'checking_out' OR compensation_pending = 1;
CREATE INDEX orders_needing_attention ON orders (needs_attention) WHERE needs_attention = 1;
