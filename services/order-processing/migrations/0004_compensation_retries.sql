-- A pending compensation waits its turn: it is due again at lease_expires_ms (exponential
-- backoff with jitter, on the database's clock), counts its passes, and remembers since when it
-- has been pending (for CTR_COMPENSATION_ATTENTION_AFTER and the age of the oldest).
ALTER TABLE orders ADD COLUMN compensation_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN compensation_since_ms BIGINT;
