-- Canonical schema for SQLite and PostgreSQL. Applying it is idempotent.
-- Portable types only: TEXT ids with prefixes, BIGINT unix milliseconds, INTEGER 0/1 flags,
-- TEXT JSON documents, BIGINT nano-dollars (1 USD = 10^9). No floats anywhere money lives.
-- A statement preceded by a line `-- dialect: sqlite` or `-- dialect: postgresql` runs only there.

CREATE TABLE IF NOT EXISTS config_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);

-- Organization-wide rate-limit defaults; organizations.plan names one.
CREATE TABLE IF NOT EXISTS plans (
    id TEXT PRIMARY KEY,
    rpm BIGINT CHECK (rpm IS NULL OR rpm > 0),
    tpm BIGINT CHECK (tpm IS NULL OR tpm > 0),
    concurrent BIGINT CHECK (concurrent IS NULL OR concurrent > 0)
);
INSERT INTO plans (id, rpm, tpm, concurrent) VALUES ('default', 6000, 10000000, 256)
ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL DEFAULT 'default',
    created_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    password_hash TEXT,
    is_platform_admin INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS memberships (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'billing')),
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, user_id)
);

CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    monthly_budget_nanos BIGINT CHECK (monthly_budget_nanos IS NULL OR monthly_budget_nanos >= 0),
    -- JSON {"rpm": n, "tpm": n, "concurrent": n}; absent fields mean no project-level limit.
    rate_limits TEXT NOT NULL DEFAULT '{}',
    archived INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL DEFAULT '',
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    -- JSON arrays; see control_plane/domain/keys.py for the meaning of an empty list.
    projects TEXT NOT NULL DEFAULT '[]',
    models TEXT NOT NULL DEFAULT '["*"]',
    endpoints TEXT NOT NULL DEFAULT '["responses","chat","embeddings","models","usage","webhooks"]',
    ip_ranges TEXT NOT NULL DEFAULT '[]',
    rate_limits TEXT NOT NULL DEFAULT '{}',
    -- Replay protection: when set, every request must be signed with this per-key secret
    -- (proxy_plugins/replay.py); stored encrypted with the server's secret box.
    signing_secret_enc TEXT,
    monthly_budget_nanos BIGINT CHECK (monthly_budget_nanos IS NULL OR monthly_budget_nanos >= 0),
    expires_at BIGINT,
    disabled INTEGER NOT NULL DEFAULT 0,
    revoked_at BIGINT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_org ON api_keys (org_id, created_at);

CREATE TABLE IF NOT EXISTS backends (
    id TEXT PRIMARY KEY,
    protocol TEXT NOT NULL CHECK (protocol IN ('openai', 'openai_chat', 'anthropic')),
    base_url TEXT NOT NULL,
    api_key_env TEXT,
    timeout_ms BIGINT NOT NULL DEFAULT 300000,
    connect_timeout_ms BIGINT NOT NULL DEFAULT 5000,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    backend_id TEXT NOT NULL REFERENCES backends (id),
    upstream_name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'embedding')),
    context_window BIGINT NOT NULL CHECK (context_window > 0),
    max_output_tokens BIGINT NOT NULL CHECK (max_output_tokens >= 0),
    capabilities TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'unavailable')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Versioned prices in integer nano-dollars per million tokens. Rows are never updated: a new
-- price is a new version with a later effective date, so every charge can name the card it used.
CREATE TABLE IF NOT EXISTS price_cards (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models (id),
    version INTEGER NOT NULL CHECK (version >= 1),
    input_nanos_per_mtok BIGINT NOT NULL CHECK (input_nanos_per_mtok >= 0),
    cached_input_nanos_per_mtok BIGINT NOT NULL CHECK (cached_input_nanos_per_mtok >= 0),
    output_nanos_per_mtok BIGINT NOT NULL CHECK (output_nanos_per_mtok >= 0),
    effective_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (model_id, version)
);

-- Platform-branded names (aliases) pointing at a model; an operator re-points them.
CREATE TABLE IF NOT EXISTS routes (
    alias TEXT PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_log (
    id TEXT PRIMARY KEY,
    org_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_org ON audit_log (org_id, created_at);

-- Audit rows are append-only: no bug or operator can rewrite them.
-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

-- dialect: postgresql
CREATE OR REPLACE FUNCTION nx_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;

-- dialect: postgresql
DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;

-- dialect: postgresql
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION nx_append_only();

-- dialect: postgresql
DROP TRIGGER IF EXISTS price_cards_append_only ON price_cards;

-- dialect: postgresql
CREATE TRIGGER price_cards_append_only BEFORE UPDATE OR DELETE ON price_cards
FOR EACH ROW EXECUTE FUNCTION nx_append_only();

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS price_cards_no_update BEFORE UPDATE ON price_cards
BEGIN SELECT RAISE(ABORT, 'price_cards is append-only'); END;

-- Webhooks (control_plane/events/): endpoints, the transactional event outbox, deliveries and the
-- per-attempt log. Event payloads are the exact bytes sent, frozen when the event happened.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    event_types TEXT NOT NULL DEFAULT '["*"]',
    project_id TEXT REFERENCES projects (id),
    -- Signing secrets, encrypted at rest (control_plane/events/signing.py).
    secret_enc TEXT NOT NULL,
    previous_secret_enc TEXT,
    previous_secret_expires_at BIGINT,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    disabled_at BIGINT,
    failing_since BIGINT,
    deleted_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_org ON webhook_endpoints (org_id, created_at);

CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    project_id TEXT,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    dedup_key TEXT,
    fanned_out INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, dedup_key)
);
CREATE INDEX IF NOT EXISTS events_unfanned ON events (fanned_out, created_at);
CREATE INDEX IF NOT EXISTS events_org ON events (org_id, created_at);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id),
    event_id TEXT NOT NULL REFERENCES events (id),
    kind TEXT NOT NULL CHECK (kind IN ('event', 'test', 'replay')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);

CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id),
    attempt INTEGER NOT NULL,
    endpoint_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    status_code INTEGER,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    response_excerpt TEXT NOT NULL DEFAULT '',
    next_attempt_at BIGINT,
    PRIMARY KEY (delivery_id, attempt)
);
