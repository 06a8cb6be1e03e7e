-- Holds of a domain, keyed by the jti of the token that confirms them.
CREATE TABLE holds (
    jti TEXT PRIMARY KEY,
    order_processing_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    state TEXT NOT NULL,
    hold TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    forget_at BIGINT
);
CREATE INDEX holds_by_expiry ON holds (state, expires_at);
CREATE INDEX holds_by_forget_at ON holds (forget_at);
