-- Migration 0003: nonces of signed requests move into the database (issue 13, replay protection).
-- Until now they lived in the sidecar's memory or in Redis, and were forgotten when either
-- restarted; nothing to carry over (a nonce matters for ten minutes at most).

CREATE TABLE IF NOT EXISTS request_nonces (
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (key_id, nonce)
);

CREATE INDEX IF NOT EXISTS request_nonces_expiry ON request_nonces (expires_at);
