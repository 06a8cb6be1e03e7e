-- Orders, the checkout log (one step per token: recorded before its domain is called and its
-- outcome after) and the replay store. Times are Unix seconds.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    total_amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    forget_at BIGINT NOT NULL,
    checkout_started_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    compensation_pending BIGINT NOT NULL DEFAULT 0,
    failure_capability TEXT,
    failure_problem TEXT,
    failure_detail TEXT
);
CREATE INDEX orders_by_forget_at ON orders (forget_at);
CREATE INDEX orders_by_lease ON orders (status, lease_until);

CREATE TABLE checkout_steps (
    order_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    iss TEXT NOT NULL,
    jti TEXT NOT NULL,
    capability TEXT NOT NULL,
    settles_amount BIGINT NOT NULL,
    settles_currency TEXT NOT NULL,
    -- The token, kept only while its checkout runs (a recovering relay redeems it); cleared after.
    token TEXT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (order_id, position)
);

CREATE TABLE replay (
    iss TEXT NOT NULL,
    jti TEXT NOT NULL,
    forget_at BIGINT NOT NULL,
    PRIMARY KEY (iss, jti)
);
CREATE INDEX replay_by_forget_at ON replay (forget_at);
