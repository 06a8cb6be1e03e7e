-- The DPoP proofs this service has accepted (RFC 9449 section 11.1): a proof's key and `jti`,
-- hashed, kept until the proof would be refused as too old anyway. Every replica writes here,
-- so a proof replayed at another replica is refused too. The service kit's own table: its
-- version (900) stays clear of the services' and the domain kit's.
CREATE TABLE dpop_proofs (
    proof_key TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dpop_proofs_by_expiry ON dpop_proofs (expires_at);
