-- Payment methods of customers, with a per-payment limit. Captured payments are the holds.
CREATE TABLE payment_methods (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    limit_amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    declines_at_capture BIGINT NOT NULL
);
