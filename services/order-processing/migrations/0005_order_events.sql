-- The outbox: an event per order transition a downstream system cares about, written in the
-- transaction of the transition (sequence numbered per order), and one delivery per event and
-- configured webhook endpoint, written with it.
CREATE TABLE order_events (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (order_id, seq)
);
CREATE INDEX order_events_created ON order_events (created_ms);

-- A delivery is pending until its endpoint answers 2xx (delivered) or its window of tries
-- (from since_ms) runs out (failed). A dispatcher claims it by bumping claim and taking a lease
-- (database clock); its outcome is written only under that claim.
CREATE TABLE webhook_deliveries (
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    order_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    since_ms BIGINT NOT NULL,
    claim BIGINT NOT NULL DEFAULT 0,
    lease_until_ms BIGINT,
    last_status BIGINT,
    last_error TEXT,
    ended_ms BIGINT,
    PRIMARY KEY (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_ms);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint, order_id, seq);
