-- When a hold was redeemed: a cancellation may reverse it only within the cancellation window
-- after this. Rows redeemed before this column existed have none, and cannot be reversed.
ALTER TABLE holds ADD COLUMN redeemed_at BIGINT;
-- A customer's open holds are counted on every confirmation (CTR_MAX_HOLDS_PER_CUSTOMER).
CREATE INDEX holds_by_customer ON holds (customer_id, state);
