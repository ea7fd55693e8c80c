-- Migration 0002: the webhook changes of issue 20 (commit 709d209).
-- 1. Every secret a rotation replaced keeps signing until its own expiry: the single
--    previous_secret_enc / previous_secret_expires_at pair of webhook_endpoints moves to rows of
--    webhook_endpoint_secrets (the rotation's time is not recorded by the release: updated_at is
--    the closest it kept), then the two columns are dropped.
-- 2. The scheduler reads due deliveries per endpoint: webhook_deliveries_due is replaced by
--    webhook_deliveries_endpoint_due.
-- 3. webhook_attempts.latency_ms may be NULL (an attempt is logged when it starts). SQLite cannot
--    drop a NOT NULL in place: the table is rebuilt (nothing references it, it has no index).

CREATE TABLE IF NOT EXISTS webhook_endpoint_secrets (
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id),
    secret_enc TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, secret_enc)
);

INSERT INTO webhook_endpoint_secrets (endpoint_id, secret_enc, expires_at, created_at)
SELECT id, previous_secret_enc, previous_secret_expires_at, updated_at FROM webhook_endpoints
WHERE previous_secret_enc IS NOT NULL AND previous_secret_expires_at IS NOT NULL
ON CONFLICT (endpoint_id, secret_enc) DO NOTHING;

ALTER TABLE webhook_endpoints DROP COLUMN previous_secret_enc;

ALTER TABLE webhook_endpoints DROP COLUMN previous_secret_expires_at;

DROP INDEX IF EXISTS webhook_deliveries_due;

CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint_due
    ON webhook_deliveries (endpoint_id, status, next_attempt_at);

-- dialect: postgresql
ALTER TABLE webhook_attempts ALTER COLUMN latency_ms DROP NOT NULL;

-- dialect: sqlite
CREATE TABLE webhook_attempts_0002 (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id),
    attempt INTEGER NOT NULL,
    endpoint_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    status_code INTEGER,
    latency_ms BIGINT,
    error TEXT,
    response_excerpt TEXT NOT NULL DEFAULT '',
    next_attempt_at BIGINT,
    PRIMARY KEY (delivery_id, attempt)
);

-- dialect: sqlite
INSERT INTO webhook_attempts_0002 (delivery_id, attempt, endpoint_id, started_at, status_code, latency_ms, error,
                                   response_excerpt, next_attempt_at)
SELECT delivery_id, attempt, endpoint_id, started_at, status_code, latency_ms, error, response_excerpt,
       next_attempt_at FROM webhook_attempts;

-- dialect: sqlite
DROP TABLE webhook_attempts;

-- dialect: sqlite
ALTER TABLE webhook_attempts_0002 RENAME TO webhook_attempts;
