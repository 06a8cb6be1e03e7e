-- The SHA-256 (hex) of the token issued for the hold. A redemption presents the token; the
-- hold is found by its jti and the token must hash to this, byte for byte: only the token
-- this domain signed matches, so no second signature check is needed. Holds placed before
-- this column existed have none and cannot be redeemed (they expire within their TTL).
ALTER TABLE holds ADD COLUMN token_sha256 TEXT;
