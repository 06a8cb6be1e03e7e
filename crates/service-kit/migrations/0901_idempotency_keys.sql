-- Idempotency keys (draft-ietf-httpapi-idempotency-key-header): a customer's key for one
-- route, the fingerprint of the request that first used it, what it made (`resource`: an
-- order's id, a hold's jti) and the answer given, written in the transaction of the effect.
-- `status` is NULL while the answer is not known yet (a hold whose token is being signed, a
-- checkout, whose answer is its order's state). A row is live until `expires_at` (the
-- database's clock, Unix seconds); expired rows are pruned and their keys may be used again.
CREATE TABLE idempotency_keys (
    customer_id TEXT NOT NULL,
    route TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    resource TEXT NOT NULL,
    status BIGINT,
    location TEXT,
    body TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (customer_id, route, idempotency_key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
