-- Points per customer: available to hold, held by confirmations, spent by redemptions.
CREATE TABLE balances (
    customer_id TEXT PRIMARY KEY,
    available BIGINT NOT NULL,
    held BIGINT NOT NULL,
    spent BIGINT NOT NULL
);
