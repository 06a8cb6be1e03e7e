-- Coupons: the definition as seeded (JSON), and the counters that holds and redemptions move.
CREATE TABLE coupons (
    code TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    max_uses BIGINT NOT NULL,
    uses BIGINT NOT NULL,
    reserved BIGINT NOT NULL
);
