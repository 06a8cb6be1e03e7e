-- When a hold was redeemed: a cancellation may reverse it only within the cancellation window
-- after this. Rows redeemed before this column existed have none, and cannot be reversed.
ALTER TABLE holds ADD COLUMN redeemed_at BIGINT;
