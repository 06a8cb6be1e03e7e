-- The mock KMS's key seed when none is configured: drawn once, so that keys (and the tokens
-- they signed) outlive a restart and every replica of the domain signs with the same keys.
CREATE TABLE mock_kms_seed (
    id BIGINT PRIMARY KEY,
    seed TEXT NOT NULL
);
