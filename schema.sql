-- Canonical schema for SQLite and PostgreSQL. Applying it is idempotent.
-- Portable types only: TEXT ids with prefixes, BIGINT unix milliseconds, INTEGER 0/1 flags,
-- TEXT JSON documents, BIGINT nano-dollars (1 USD = 10^9). No floats anywhere money lives.
-- A statement preceded by a line `-- dialect: sqlite` or `-- dialect: postgresql` runs only there.
-- A fresh install applies this file; every change to it lands with its migration in
-- core/migrations/sql/ (tests/migrations fails otherwise; docs/operations.md). The table
-- schema_migrations, which records them, is kept by core/migrations.

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
    created_at BIGINT NOT NULL,
    email_verified_at BIGINT,
    password_changed_at BIGINT,
    -- The organization sign-up created: its promotional credit is granted when the email is verified.
    signup_org_id TEXT
);

CREATE TABLE IF NOT EXISTS memberships (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'billing', 'reader')),
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
    updated_at BIGINT NOT NULL,
    -- A route group (core/routeplan.py RoutePolicy as JSON): targets with weights and priorities,
    -- strategy, fallbacks, attempt budget. '{}': the alias has its one model, model_id. With
    -- targets, model_id is the first target of the lowest priority.
    policy TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS audit_log (
    id TEXT PRIMARY KEY,
    org_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    -- The client address the change came from (NULL: the operator's CLI or a background job).
    ip TEXT
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
CREATE OR REPLACE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION nx_append_only();

-- dialect: postgresql
CREATE OR REPLACE TRIGGER price_cards_append_only BEFORE UPDATE OR DELETE ON price_cards
FOR EACH ROW EXECUTE FUNCTION nx_append_only();

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS price_cards_no_update BEFORE UPDATE ON price_cards
BEGIN SELECT RAISE(ABORT, 'price_cards is append-only'); END;

-- Webhooks (core/events/): endpoints, the transactional event outbox, deliveries and the
-- per-attempt log. Event payloads are the exact bytes sent, frozen when the event happened.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    event_types TEXT NOT NULL DEFAULT '["*"]',
    project_id TEXT REFERENCES projects (id),
    -- The current signing secret, encrypted at rest (core/events/signing.py); secrets
    -- replaced by a rotation are in webhook_endpoint_secrets until their own expiry.
    secret_enc TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    disabled_at BIGINT,
    failing_since BIGINT,
    deleted_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_org ON webhook_endpoints (org_id, created_at);

-- Secrets replaced by rotations: each keeps signing (one more signature per delivery) until its own
-- expires_at, however many rotations follow (core/events/endpoints.py).
CREATE TABLE IF NOT EXISTS webhook_endpoint_secrets (
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id),
    secret_enc TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, secret_enc)
);

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
-- The scheduler probes each endpoint's due work through this index, so the cost of a tick does not
-- grow with any one endpoint's backlog (core/events/schedule.py).
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint_due
    ON webhook_deliveries (endpoint_id, status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);

CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id),
    attempt INTEGER NOT NULL,
    endpoint_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    status_code INTEGER,
    -- NULL until the attempt finishes: a row is written when the attempt starts, so an attempt cut
    -- short by a worker crash still shows in the log.
    latency_ms BIGINT,
    error TEXT,
    response_excerpt TEXT NOT NULL DEFAULT '',
    next_attempt_at BIGINT,
    PRIMARY KEY (delivery_id, attempt)
);

-- Stored responses (/v1/responses, control_plane/domain/responses.py). A row is written before a
-- background response is acknowledged, so no process restart can lose it. `request` is the
-- validated request (what the worker needs to run it); `body` the latest Response object.
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    backend_id TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed', 'failed', 'cancelled',
                                           'incomplete')),
    background INTEGER NOT NULL DEFAULT 0,
    previous_response_id TEXT,
    request TEXT NOT NULL,
    body TEXT NOT NULL,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_org ON responses (org_id, created_at);

-- The conversation a response served: its own input items and its output items, in order.
CREATE TABLE IF NOT EXISTS response_items (
    response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('input', 'output')),
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (response_id, kind, position)
);

-- Background runs: claimed by a worker under a lease; a job whose lease expired (its worker died)
-- is claimed again and restarts from `base_seq` (events from the lost attempt are replaced).
CREATE TABLE IF NOT EXISTS response_jobs (
    response_id TEXT PRIMARY KEY REFERENCES responses (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    lease_owner TEXT,
    lease_until BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    base_seq INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS response_jobs_due ON response_jobs (state, lease_until);

-- Stream events of background responses, for `GET /v1/responses/{id}?stream=true&starting_after=N`.
CREATE TABLE IF NOT EXISTS response_events (
    response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (response_id, seq)
);

-- ==== ledger (control_plane/ledger) ====================================================
-- Double-entry, integer nano-dollars. Every organization has its own set of accounts; platform
-- accounts (revenue, clearing, promotions, adjustments) are kept per organization too, so each
-- tenant's books sum to zero on their own and no single platform row is a write hot spot.
-- Sign convention: an entry's `amount` is added to its account's balance; a customer account's
-- positive balance is credit the platform owes that customer. `receivable` is what the customer
-- owes the platform (a negative balance): the part of a settlement above its hold.
CREATE TABLE IF NOT EXISTS ledger_accounts (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    kind TEXT NOT NULL CHECK (kind IN ('wallet', 'promo', 'revenue', 'clearing', 'promotions', 'adjustments',
                                       'receivable')),
    customer INTEGER NOT NULL,
    balance BIGINT NOT NULL DEFAULT 0,
    -- Sum of open holds reserved against this account (pending debits, TigerBeetle-style).
    held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    -- Number of entries posted to this account; each entry records the value it produced.
    entry_seq BIGINT NOT NULL DEFAULT 0,
    low_balance_nanos BIGINT CHECK (low_balance_nanos IS NULL OR low_balance_nanos >= 0),
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, kind),
    CHECK (customer = CASE WHEN kind IN ('wallet', 'promo') THEN 1 ELSE 0 END),
    CHECK (customer = 1 OR held = 0),
    -- The overdraft guard: no code path can leave a customer account negative or over-reserved.
    CHECK (customer = 0 OR (balance >= 0 AND balance - held >= 0))
);

CREATE TABLE IF NOT EXISTS ledger_transactions (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'promo_grant', 'adjustment', 'charge', 'reversal')),
    idempotency_key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    reverses TEXT UNIQUE REFERENCES ledger_transactions (id),
    request_id TEXT,
    project_id TEXT,
    key_id TEXT,
    period TEXT,
    model_id TEXT,
    price_version INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_transactions_org ON ledger_transactions (org_id, created_at);
CREATE INDEX IF NOT EXISTS ledger_transactions_request ON ledger_transactions (request_id);

-- Entries are written before their transaction row; inserting the transaction row seals them
-- (a trigger checks they sum to zero), hence the deferred foreign key.
CREATE TABLE IF NOT EXISTS ledger_entries (
    txn_id TEXT NOT NULL REFERENCES ledger_transactions (id) DEFERRABLE INITIALLY DEFERRED,
    seq INTEGER NOT NULL,
    account_id TEXT NOT NULL REFERENCES ledger_accounts (id),
    amount BIGINT NOT NULL CHECK (amount <> 0),
    account_seq BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (txn_id, seq),
    UNIQUE (account_id, account_seq)
);

-- A hold is a pending debit: it reserves `amount` (split between promo credit and the wallet)
-- and resolves exactly once: settled (posted), released, or expired.
CREATE TABLE IF NOT EXISTS ledger_holds (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    request_id TEXT NOT NULL UNIQUE,
    model_id TEXT NOT NULL,
    price_version INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    backend_id TEXT NOT NULL,
    client_ip TEXT NOT NULL DEFAULT '',
    amount BIGINT NOT NULL CHECK (amount >= 0),
    promo_part BIGINT NOT NULL CHECK (promo_part >= 0 AND promo_part <= amount),
    period TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'settled', 'released', 'expired')),
    charged BIGINT CHECK (charged IS NULL OR (charged >= 0 AND charged <= amount)),
    txn_id TEXT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE INDEX IF NOT EXISTS ledger_holds_open ON ledger_holds (status, expires_at);

-- Monthly budget consumption (calendar month UTC) per key and per project: settled charges plus
-- open holds, kept as counters so a conditional UPDATE enforces the budget under concurrency.
CREATE TABLE IF NOT EXISTS budget_usage (
    scope_id TEXT NOT NULL,
    period TEXT NOT NULL,
    org_id TEXT NOT NULL,
    spent BIGINT NOT NULL DEFAULT 0 CHECK (spent >= 0),
    held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    -- The budget in force at the latest hold (NULL: none), for threshold checks at settlement.
    limit_nanos BIGINT,
    PRIMARY KEY (scope_id, period)
);

-- One row per threshold crossing: the unique key makes `usage.threshold_reached` fire once.
CREATE TABLE IF NOT EXISTS threshold_crossings (
    org_id TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('key', 'project', 'wallet')),
    scope_id TEXT NOT NULL,
    period TEXT NOT NULL,
    threshold TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    value_nanos BIGINT NOT NULL,
    limit_nanos BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope_kind, scope_id, period, threshold)
);

CREATE TABLE IF NOT EXISTS usage_records (
    request_id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    backend_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status INTEGER NOT NULL,
    input_tokens BIGINT NOT NULL CHECK (input_tokens >= 0),
    cached_tokens BIGINT NOT NULL CHECK (cached_tokens >= 0 AND cached_tokens <= input_tokens),
    output_tokens BIGINT NOT NULL CHECK (output_tokens >= 0),
    cost_nanos BIGINT NOT NULL CHECK (cost_nanos >= 0),
    price_version INTEGER NOT NULL,
    txn_id TEXT,
    hold_id TEXT,
    ttft_ms BIGINT,
    latency_ms BIGINT,
    cache_status TEXT,
    client_ip TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    -- The backend calls a routed request made, as JSON (`x-route-attempts`); NULL: one call.
    route_attempts TEXT
);
CREATE INDEX IF NOT EXISTS usage_records_org ON usage_records (org_id, created_at);
CREATE INDEX IF NOT EXISTS usage_records_project ON usage_records (project_id, created_at);
CREATE INDEX IF NOT EXISTS usage_records_key ON usage_records (key_id, created_at);
CREATE INDEX IF NOT EXISTS usage_records_model ON usage_records (org_id, model_id, created_at);

-- History is append-only; a correction is a new reversing transaction.
-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_transactions_no_update BEFORE UPDATE ON ledger_transactions
BEGIN SELECT RAISE(ABORT, 'ledger_transactions is append-only'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_transactions_no_delete BEFORE DELETE ON ledger_transactions
BEGIN SELECT RAISE(ABORT, 'ledger_transactions is append-only'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS usage_records_no_update BEFORE UPDATE ON usage_records
BEGIN SELECT RAISE(ABORT, 'usage_records is append-only'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS usage_records_no_delete BEFORE DELETE ON usage_records
BEGIN SELECT RAISE(ABORT, 'usage_records is append-only'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS threshold_crossings_no_change BEFORE UPDATE ON threshold_crossings
BEGIN SELECT RAISE(ABORT, 'threshold_crossings is append-only'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS threshold_crossings_no_delete BEFORE DELETE ON threshold_crossings
BEGIN SELECT RAISE(ABORT, 'threshold_crossings is append-only'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
BEGIN SELECT RAISE(ABORT, 'ledger_accounts cannot be deleted'); END;

-- An account's identity never changes, and its balance moves only with a new entry.
-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_accounts_guard BEFORE UPDATE ON ledger_accounts
WHEN NEW.id <> OLD.id OR NEW.org_id <> OLD.org_id OR NEW.kind <> OLD.kind OR NEW.customer <> OLD.customer
  OR NEW.entry_seq <> OLD.entry_seq + (CASE WHEN NEW.balance <> OLD.balance THEN 1 ELSE 0 END)
BEGIN SELECT RAISE(ABORT, 'ledger account: identity is fixed and a balance moves only with an entry'); END;

-- An entry joins an open (unsealed) transaction and records the account state it produced.
-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_entries_check BEFORE INSERT ON ledger_entries
WHEN EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.txn_id)
  OR NOT EXISTS (SELECT 1 FROM ledger_accounts WHERE id = NEW.account_id
                 AND balance = NEW.balance_after AND entry_seq = NEW.account_seq)
BEGIN SELECT RAISE(ABORT, 'ledger entry: transaction sealed or account state mismatch'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_transactions_balanced AFTER INSERT ON ledger_transactions
WHEN (SELECT COUNT(*) FROM ledger_entries WHERE txn_id = NEW.id) < 2
  OR (SELECT SUM(amount) FROM ledger_entries WHERE txn_id = NEW.id) <> 0
  OR EXISTS (SELECT 1 FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
             WHERE e.txn_id = NEW.id AND a.org_id <> NEW.org_id)
BEGIN SELECT RAISE(ABORT, 'ledger transaction does not balance'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_holds_no_delete BEFORE DELETE ON ledger_holds
BEGIN SELECT RAISE(ABORT, 'ledger_holds cannot be deleted'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_holds_resolve_once BEFORE UPDATE ON ledger_holds
WHEN NEW.amount <> OLD.amount OR NEW.promo_part <> OLD.promo_part OR NEW.org_id <> OLD.org_id
  OR NEW.request_id <> OLD.request_id
  OR NOT ((OLD.status = 'open' AND NEW.status <> 'open')
       OR (OLD.status = 'open' AND NEW.status = 'open' AND NEW.charged IS NULL AND NEW.resolved_at IS NULL)
       OR (OLD.status = 'expired' AND NEW.status = 'settled'))
BEGIN SELECT RAISE(ABORT, 'a hold resolves exactly once'); END;

-- dialect: postgresql
CREATE OR REPLACE FUNCTION nx_ledger_account_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger_accounts cannot be deleted';
    END IF;
    IF NEW.id <> OLD.id OR NEW.org_id <> OLD.org_id OR NEW.kind <> OLD.kind OR NEW.customer <> OLD.customer
       OR NEW.entry_seq <> OLD.entry_seq + (CASE WHEN NEW.balance <> OLD.balance THEN 1 ELSE 0 END) THEN
        RAISE EXCEPTION 'ledger account: identity is fixed and a balance moves only with an entry';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- dialect: postgresql
CREATE OR REPLACE FUNCTION nx_ledger_entry_check() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.txn_id) OR NOT EXISTS (
            SELECT 1 FROM ledger_accounts WHERE id = NEW.account_id
            AND balance = NEW.balance_after AND entry_seq = NEW.account_seq) THEN
        RAISE EXCEPTION 'ledger entry: transaction sealed or account state mismatch';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- dialect: postgresql
CREATE OR REPLACE FUNCTION nx_ledger_txn_balanced() RETURNS trigger AS $$
BEGIN
    IF (SELECT COUNT(*) FROM ledger_entries WHERE txn_id = NEW.id) < 2
       OR (SELECT SUM(amount) FROM ledger_entries WHERE txn_id = NEW.id) <> 0
       OR EXISTS (SELECT 1 FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
                  WHERE e.txn_id = NEW.id AND a.org_id <> NEW.org_id) THEN
        RAISE EXCEPTION 'ledger transaction % does not balance', NEW.id;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- dialect: postgresql
CREATE OR REPLACE FUNCTION nx_ledger_hold_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger_holds cannot be deleted';
    END IF;
    IF NEW.amount <> OLD.amount OR NEW.promo_part <> OLD.promo_part OR NEW.org_id <> OLD.org_id
       OR NEW.request_id <> OLD.request_id
       OR NOT ((OLD.status = 'open' AND NEW.status <> 'open')
            OR (OLD.status = 'open' AND NEW.status = 'open' AND NEW.charged IS NULL AND NEW.resolved_at IS NULL)
            OR (OLD.status = 'expired' AND NEW.status = 'settled')) THEN
        RAISE EXCEPTION 'a hold resolves exactly once';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- One leg of a ledger transaction on PostgreSQL: the account's move, then the entry recording the
-- state it produced, exactly the two statements core/ledger/core.py runs one by one (every trigger
-- above still checks them). A settlement batch calls it for every leg in one pipelined statement
-- (core/ledger/settle_batch.py) instead of two round trips per leg. `p_guard`: a customer debit,
-- which must leave balance - held >= 0; a leg that cannot be paid raises, and the batch is rerun
-- item by item.
-- dialect: postgresql
CREATE OR REPLACE FUNCTION nx_ledger_leg(p_txn TEXT, p_seq INTEGER, p_org TEXT, p_kind TEXT, p_amount BIGINT,
                                         p_release BIGINT, p_guard BOOLEAN, p_now BIGINT) RETURNS VOID AS $$
DECLARE
    a_id TEXT;
    a_seq BIGINT;
    a_balance BIGINT;
BEGIN
    UPDATE ledger_accounts SET balance = balance + p_amount, held = held - p_release, entry_seq = entry_seq + 1
        WHERE org_id = p_org AND kind = p_kind AND (NOT p_guard OR balance + p_amount - held + p_release >= 0)
        RETURNING id, entry_seq, balance INTO a_id, a_seq, a_balance;
    IF a_id IS NULL THEN
        RAISE EXCEPTION 'ledger leg: the % account of % cannot take %', p_kind, p_org, p_amount;
    END IF;
    INSERT INTO ledger_entries (txn_id, seq, account_id, amount, account_seq, balance_after, created_at)
        VALUES (p_txn, p_seq, a_id, p_amount, a_seq, a_balance, p_now);
END;
$$ LANGUAGE plpgsql;

-- A batch of holds on PostgreSQL in one call (core/ledger/hold_batch.py), the same statements the
-- batch otherwise sends one round trip at a time: every price card still the one in force, each
-- key's and project's budget counter (scope order: the global lock order of budget rows), then per
-- organization its promotional credit and wallet locked (promo, then wallet) and reserved,
-- promotional credit taken greedily in batch order, then every hold inserted. Returns each hold's
-- promotional part, in input order. Only the plain path: anything else (a card that moved, a
-- budget, credit or wallet that cannot cover the batch's sum, a request id already held) raises,
-- and the batch is rerun hold by hold with place_hold.
-- dialect: postgresql
CREATE OR REPLACE FUNCTION nx_place_holds(p_id TEXT[], p_org TEXT[], p_project TEXT[], p_key TEXT[],
                                          p_request TEXT[], p_model TEXT[], p_version INTEGER[],
                                          p_endpoint TEXT[], p_backend TEXT[], p_ip TEXT[],
                                          p_amount BIGINT[], p_expires BIGINT[], p_period TEXT,
                                          p_now BIGINT) RETURNS BIGINT[] AS $$
DECLARE
    n INTEGER := cardinality(p_id);
    promo BIGINT[] := array_fill(0::BIGINT, ARRAY[cardinality(p_id)]);
    r RECORD;
    a RECORD;
    lim BIGINT;
    moved INTEGER;
    promo_free BIGINT;
    wallet_free BIGINT;
    take BIGINT;
    promo_total BIGINT;
    rest BIGINT;
BEGIN
    FOR r IN SELECT DISTINCT t.m, t.v FROM unnest(p_model, p_version) AS t(m, v) LOOP
        IF (SELECT version FROM price_cards WHERE model_id = r.m AND effective_at <= p_now
            ORDER BY effective_at DESC, version DESC LIMIT 1) IS DISTINCT FROM r.v THEN
            RAISE EXCEPTION 'nx_place_holds: not plain: the price card in force for % moved', r.m;
        END IF;
    END LOOP;
    FOR r IN SELECT s.scope, min(s.org) AS org, bool_or(s.is_key) AS is_key, sum(s.amount)::BIGINT AS amount
             FROM (SELECT k.scope, k.org, TRUE AS is_key, k.amount FROM unnest(p_key, p_org, p_amount) AS k(scope, org, amount)
                   UNION ALL
                   SELECT j.scope, j.org, FALSE, j.amount FROM unnest(p_project, p_org, p_amount) AS j(scope, org, amount)) s
             GROUP BY s.scope ORDER BY s.scope COLLATE "C" LOOP
        IF r.is_key THEN
            SELECT monthly_budget_nanos INTO lim FROM api_keys WHERE id = r.scope AND org_id = r.org;
        ELSE
            SELECT monthly_budget_nanos INTO lim FROM projects WHERE id = r.scope AND org_id = r.org;
        END IF;
        IF lim IS NOT NULL AND r.amount > lim THEN
            RAISE EXCEPTION 'nx_place_holds: not plain: a budget cannot cover the batch';
        END IF;
        INSERT INTO budget_usage (scope_id, period, org_id, held, limit_nanos) VALUES (r.scope, p_period, r.org, r.amount, lim)
            ON CONFLICT (scope_id, period) DO UPDATE SET held = budget_usage.held + excluded.held,
            limit_nanos = excluded.limit_nanos WHERE excluded.limit_nanos IS NULL
            OR budget_usage.spent + budget_usage.held + excluded.held <= excluded.limit_nanos;
        GET DIAGNOSTICS moved = ROW_COUNT;
        IF moved <> 1 THEN
            RAISE EXCEPTION 'nx_place_holds: not plain: a budget cannot cover the batch';
        END IF;
    END LOOP;
    FOR r IN SELECT DISTINCT t.o COLLATE "C" AS o FROM unnest(p_org) AS t(o) ORDER BY 1 LOOP
        promo_free := 0;
        wallet_free := 0;
        FOR a IN SELECT kind, balance - held AS free FROM ledger_accounts
                 WHERE org_id = r.o AND kind IN ('promo', 'wallet') ORDER BY kind FOR UPDATE LOOP
            IF a.kind = 'promo' THEN
                promo_free := GREATEST(0, a.free);
            ELSE
                wallet_free := a.free;
            END IF;
        END LOOP;
        promo_total := 0;
        rest := 0;
        FOR i IN 1..n LOOP
            IF p_org[i] = r.o THEN
                take := LEAST(p_amount[i], promo_free);
                promo_free := promo_free - take;
                promo[i] := take;
                promo_total := promo_total + take;
                rest := rest + p_amount[i] - take;
            END IF;
        END LOOP;
        IF rest > wallet_free THEN
            RAISE EXCEPTION 'nx_place_holds: not plain: the wallet cannot cover the batch';
        END IF;
        IF promo_total > 0 THEN
            UPDATE ledger_accounts SET held = held + promo_total
                WHERE org_id = r.o AND kind = 'promo' AND balance - held >= promo_total;
            GET DIAGNOSTICS moved = ROW_COUNT;
            IF moved <> 1 THEN
                RAISE EXCEPTION 'nx_place_holds: not plain: the promo cannot cover the batch';
            END IF;
        END IF;
        IF rest > 0 THEN
            UPDATE ledger_accounts SET held = held + rest
                WHERE org_id = r.o AND kind = 'wallet' AND balance - held >= rest;
            GET DIAGNOSTICS moved = ROW_COUNT;
            IF moved <> 1 THEN
                RAISE EXCEPTION 'nx_place_holds: not plain: the wallet cannot cover the batch';
            END IF;
        END IF;
    END LOOP;
    INSERT INTO ledger_holds (id, org_id, project_id, key_id, request_id, model_id, price_version, endpoint,
                              backend_id, client_ip, amount, promo_part, period, status, expires_at, created_at)
        SELECT h.id, h.o, h.p, h.k, h.r, h.m, h.v, h.e, h.b, h.ip, h.a, h.pp, p_period, 'open', h.x, p_now
        FROM unnest(p_id, p_org, p_project, p_key, p_request, p_model, p_version, p_endpoint, p_backend, p_ip,
                    p_amount, promo, p_expires) AS h(id, o, p, k, r, m, v, e, b, ip, a, pp, x);
    RETURN promo;
END;
$$ LANGUAGE plpgsql;

-- A plain batch of settlements on PostgreSQL in one call (core/ledger/settle_call.py): the writes
-- settle_batch.py otherwise sends one round trip at a time, in the same order and with the same
-- checks. Each hold is claimed (it must still be open: it was read locked in this transaction),
-- each key's and project's budget counter takes its spend and gives back its reservation (scope
-- order: the global lock order of budget rows), each leg moves its account and records its entry
-- (nx_ledger_leg: a customer debit that cannot be paid raises), the transaction rows are sealed
-- after their entries (their trigger checks the entries balance), then the usage records. Returns
-- what the caller needs for the threshold checks: each budget counter's spend after and the
-- budget it remembers, and each organization's spendable balance after (wallet + promo), its
-- low-balance mark and wallet id. Anything unexpected raises, and the batch is rerun item by item.
-- dialect: postgresql
CREATE OR REPLACE FUNCTION nx_settle_batch(p_claims JSONB, p_budgets JSONB, p_legs JSONB, p_txns JSONB,
                                           p_usage JSONB, p_orgs TEXT[], p_now BIGINT) RETURNS JSONB AS $$
DECLARE
    x JSONB;
    moved INTEGER;
    b_spent BIGINT;
    b_limit BIGINT;
    budgets JSONB := '[]'::JSONB;
    wallets JSONB := '[]'::JSONB;
    w RECORD;
    o TEXT;
BEGIN
    UPDATE ledger_holds h SET status = 'settled', charged = (c->>'c')::BIGINT, txn_id = c->>'t', resolved_at = p_now
        FROM jsonb_array_elements(p_claims) AS c WHERE h.id = c->>'id' AND h.status = 'open';
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> jsonb_array_length(p_claims) THEN
        RAISE EXCEPTION 'nx_settle_batch: not plain: % of % holds claimed', moved, jsonb_array_length(p_claims);
    END IF;
    FOR x IN SELECT e FROM jsonb_array_elements(p_budgets) AS e ORDER BY e->>'s' COLLATE "C", e->>'p' COLLATE "C" LOOP
        UPDATE budget_usage SET spent = spent + (x->>'c')::BIGINT, held = held - (x->>'r')::BIGINT
            WHERE scope_id = x->>'s' AND period = x->>'p' RETURNING spent, limit_nanos INTO b_spent, b_limit;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'nx_settle_batch: not plain: no budget counter for % in %', x->>'s', x->>'p';
        END IF;
        budgets := budgets || jsonb_build_array(jsonb_build_array(x->>'s', x->>'p', b_spent, b_limit));
    END LOOP;
    FOR x IN SELECT e FROM jsonb_array_elements(p_legs) WITH ORDINALITY AS t(e, n) ORDER BY n LOOP
        IF (x->>'a')::BIGINT = 0 THEN  -- a reservation given back, no money moved (release_held)
            UPDATE ledger_accounts SET held = held - (x->>'r')::BIGINT WHERE org_id = x->>'o' AND kind = x->>'k';
        ELSE
            PERFORM nx_ledger_leg(x->>'t', (x->>'s')::INTEGER, x->>'o', x->>'k', (x->>'a')::BIGINT,
                                  (x->>'r')::BIGINT, (x->>'g')::BOOLEAN, (x->>'now')::BIGINT);
        END IF;
    END LOOP;
    FOREACH o IN ARRAY p_orgs LOOP
        SELECT SUM(balance) AS balance, MAX(CASE WHEN kind = 'wallet' THEN low_balance_nanos END) AS low,
               MAX(CASE WHEN kind = 'wallet' THEN id END) AS wallet_id
            INTO w FROM ledger_accounts WHERE org_id = o AND kind IN ('wallet', 'promo');
        wallets := wallets || jsonb_build_array(jsonb_build_array(o, w.balance, w.low, w.wallet_id));
    END LOOP;
    INSERT INTO ledger_transactions (id, org_id, kind, idempotency_key, fingerprint, amount, reverses, request_id,
                                     project_id, key_id, period, model_id, price_version, reason, actor, created_at)
        SELECT t->>'id', t->>'o', t->>'kind', t->>'k', t->>'f', (t->>'amount')::BIGINT, t->>'rev', t->>'req',
               t->>'proj', t->>'key', t->>'period', t->>'model', (t->>'pv')::INTEGER, t->>'reason', t->>'actor',
               (t->>'now')::BIGINT
        FROM jsonb_array_elements(p_txns) WITH ORDINALITY AS r(t, n) ORDER BY n;
    INSERT INTO usage_records (request_id, org_id, project_id, key_id, model_id, backend_id, endpoint, status,
                               input_tokens, cached_tokens, output_tokens, cost_nanos, price_version, txn_id, hold_id,
                               ttft_ms, latency_ms, cache_status, client_ip, created_at, route_attempts)
        SELECT u->>'r', u->>'o', u->>'p', u->>'k', u->>'m', u->>'b', u->>'e', (u->>'s')::INTEGER,
               (u->>'it')::BIGINT, (u->>'ct')::BIGINT, (u->>'ot')::BIGINT, (u->>'cost')::BIGINT,
               (u->>'pv')::INTEGER, u->>'t', u->>'h', (u->>'ttft')::BIGINT, (u->>'lat')::BIGINT, u->>'cache',
               u->>'ip', (u->>'now')::BIGINT, u->>'ra'
        FROM jsonb_array_elements(p_usage) WITH ORDINALITY AS r(u, n) ORDER BY n;
    RETURN jsonb_build_object('budgets', budgets, 'wallets', wallets);
END;
$$ LANGUAGE plpgsql;

-- dialect: postgresql
CREATE OR REPLACE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
FOR EACH ROW EXECUTE FUNCTION nx_append_only();

-- dialect: postgresql
CREATE OR REPLACE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
FOR EACH ROW EXECUTE FUNCTION nx_append_only();

-- dialect: postgresql
CREATE OR REPLACE TRIGGER usage_records_append_only BEFORE UPDATE OR DELETE ON usage_records
FOR EACH ROW EXECUTE FUNCTION nx_append_only();

-- dialect: postgresql
CREATE OR REPLACE TRIGGER threshold_crossings_append_only BEFORE UPDATE OR DELETE ON threshold_crossings
FOR EACH ROW EXECUTE FUNCTION nx_append_only();

-- dialect: postgresql
CREATE OR REPLACE TRIGGER ledger_accounts_guard BEFORE UPDATE OR DELETE ON ledger_accounts
FOR EACH ROW EXECUTE FUNCTION nx_ledger_account_guard();

-- dialect: postgresql
CREATE OR REPLACE TRIGGER ledger_entries_check BEFORE INSERT ON ledger_entries
FOR EACH ROW EXECUTE FUNCTION nx_ledger_entry_check();

-- dialect: postgresql
CREATE OR REPLACE TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
FOR EACH ROW EXECUTE FUNCTION nx_ledger_txn_balanced();

-- dialect: postgresql
CREATE OR REPLACE TRIGGER ledger_holds_guard BEFORE UPDATE OR DELETE ON ledger_holds
FOR EACH ROW EXECUTE FUNCTION nx_ledger_hold_guard();
-- ==== end ledger ========================================================================

-- ==== usage rollups (control_plane/usage) ==============================================
-- Pre-aggregated usage_records so month-long /v1/usage queries read thousands of rows, not
-- millions. `grain` 'hour' is built from usage_records, 'day' from the hour rows, by the worker's
-- `usage_rollups` job; usage_rollup_state.watermark says up to where (unix ms, exclusive) a grain
-- is complete. Queries read rollups below the watermark and raw records above it.
-- lat_NN count requests per latency bin (fixed log bins, control_plane/usage/histogram.py). Counts
-- are INTEGER (int4): PostgreSQL sums those on its fast int8 path, where BIGINT sums go through numeric.
-- dialect: postgresql
CREATE TABLE IF NOT EXISTS usage_rollups (
    grain TEXT NOT NULL CHECK (grain IN ('hour', 'day')),
    bucket_start BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    lat_00 INTEGER NOT NULL, lat_01 INTEGER NOT NULL, lat_02 INTEGER NOT NULL, lat_03 INTEGER NOT NULL,
    lat_04 INTEGER NOT NULL, lat_05 INTEGER NOT NULL, lat_06 INTEGER NOT NULL, lat_07 INTEGER NOT NULL,
    lat_08 INTEGER NOT NULL, lat_09 INTEGER NOT NULL, lat_10 INTEGER NOT NULL, lat_11 INTEGER NOT NULL,
    lat_12 INTEGER NOT NULL, lat_13 INTEGER NOT NULL, lat_14 INTEGER NOT NULL, lat_15 INTEGER NOT NULL,
    lat_16 INTEGER NOT NULL, lat_17 INTEGER NOT NULL, lat_18 INTEGER NOT NULL, lat_19 INTEGER NOT NULL,
    lat_20 INTEGER NOT NULL, lat_21 INTEGER NOT NULL, lat_22 INTEGER NOT NULL, lat_23 INTEGER NOT NULL,
    lat_24 INTEGER NOT NULL, lat_25 INTEGER NOT NULL, lat_26 INTEGER NOT NULL, lat_27 INTEGER NOT NULL,
    lat_28 INTEGER NOT NULL, lat_29 INTEGER NOT NULL, lat_30 INTEGER NOT NULL, lat_31 INTEGER NOT NULL,
    lat_32 INTEGER NOT NULL, lat_33 INTEGER NOT NULL, lat_34 INTEGER NOT NULL, lat_35 INTEGER NOT NULL,
    lat_36 INTEGER NOT NULL, lat_37 INTEGER NOT NULL, lat_38 INTEGER NOT NULL, lat_39 INTEGER NOT NULL,
    PRIMARY KEY (grain, org_id, bucket_start, project_id, key_id, model_id, endpoint, status)
);

-- SQLite: the same table clustered on its primary key (WITHOUT ROWID), so a query's range of
-- rollup rows is read in order from one b-tree instead of one table lookup per index entry.
-- dialect: sqlite
CREATE TABLE IF NOT EXISTS usage_rollups (
    grain TEXT NOT NULL CHECK (grain IN ('hour', 'day')),
    bucket_start BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    lat_00 INTEGER NOT NULL, lat_01 INTEGER NOT NULL, lat_02 INTEGER NOT NULL, lat_03 INTEGER NOT NULL,
    lat_04 INTEGER NOT NULL, lat_05 INTEGER NOT NULL, lat_06 INTEGER NOT NULL, lat_07 INTEGER NOT NULL,
    lat_08 INTEGER NOT NULL, lat_09 INTEGER NOT NULL, lat_10 INTEGER NOT NULL, lat_11 INTEGER NOT NULL,
    lat_12 INTEGER NOT NULL, lat_13 INTEGER NOT NULL, lat_14 INTEGER NOT NULL, lat_15 INTEGER NOT NULL,
    lat_16 INTEGER NOT NULL, lat_17 INTEGER NOT NULL, lat_18 INTEGER NOT NULL, lat_19 INTEGER NOT NULL,
    lat_20 INTEGER NOT NULL, lat_21 INTEGER NOT NULL, lat_22 INTEGER NOT NULL, lat_23 INTEGER NOT NULL,
    lat_24 INTEGER NOT NULL, lat_25 INTEGER NOT NULL, lat_26 INTEGER NOT NULL, lat_27 INTEGER NOT NULL,
    lat_28 INTEGER NOT NULL, lat_29 INTEGER NOT NULL, lat_30 INTEGER NOT NULL, lat_31 INTEGER NOT NULL,
    lat_32 INTEGER NOT NULL, lat_33 INTEGER NOT NULL, lat_34 INTEGER NOT NULL, lat_35 INTEGER NOT NULL,
    lat_36 INTEGER NOT NULL, lat_37 INTEGER NOT NULL, lat_38 INTEGER NOT NULL, lat_39 INTEGER NOT NULL,
    PRIMARY KEY (grain, org_id, bucket_start, project_id, key_id, model_id, endpoint, status)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS usage_rollup_state (
    grain TEXT PRIMARY KEY CHECK (grain IN ('hour', 'day')),
    watermark BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The rollup job and the latency bands on /v1/models scan usage_records by time across organizations.
CREATE INDEX IF NOT EXISTS usage_records_created ON usage_records (created_at);
-- ==== end usage rollups ================================================================

-- ==== idempotency (control_plane/idempotency.py) =======================================
-- One row per (organization, key, method, path, Idempotency-Key). `state` is 'in_flight' while
-- the first request runs (its lease bounds how long a crashed run can block the key) and
-- 'completed' once its response is stored; completed rows are kept 24 hours.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
    lease_expires_at BIGINT NOT NULL,
    response_status INTEGER,
    response_headers TEXT,
    response_body TEXT,
    created_at BIGINT NOT NULL,
    completed_at BIGINT,
    UNIQUE (org_id, key_id, method, path, idem_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX IF NOT EXISTS idempotency_keys_request ON idempotency_keys (request_id);

-- Nonces of signed requests (proxy_plugins/replay.py), kept until no request carrying them could
-- still pass the timestamp check, so a replay is refused across sidecar and Redis restarts alike.
-- The worker deletes expired rows.
CREATE TABLE IF NOT EXISTS request_nonces (
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX IF NOT EXISTS request_nonces_expiry ON request_nonces (expires_at);

-- ==== embedding cache (proxy_plugins/adapter/embedding_cache.py) ===========================
-- Vectors already computed, per organization and project (a shared cache would tell one tenant
-- what another embedded). `entry_key` is the SHA-256 of project, model, backend, upstream name,
-- dimensions and input: the input text is not stored. `vector` is base64 of little-endian float32; `tokens` the input's token
-- count, billed at the cached-input price on a hit. The worker evicts by `last_used_at`.
CREATE TABLE IF NOT EXISTS embedding_cache (
    org_id TEXT NOT NULL,
    entry_key TEXT NOT NULL,
    model_id TEXT NOT NULL,
    tokens BIGINT NOT NULL CHECK (tokens >= 0),
    vector TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, entry_key)
);
CREATE INDEX IF NOT EXISTS embedding_cache_used ON embedding_cache (last_used_at);
CREATE INDEX IF NOT EXISTS embedding_cache_org_used ON embedding_cache (org_id, last_used_at, entry_key);
-- ==== end embedding cache ==============================================================

-- ==== organizations of their own (issue 15; migration 0005) ================================
-- A member narrowed to some projects (no row: every project of the organization).
CREATE TABLE IF NOT EXISTS membership_projects (
    org_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    PRIMARY KEY (org_id, user_id, project_id)
);

-- Invitations by email: single use, 7 days; only the token's HMAC is stored. 'expired' is not a
-- stored status: a pending invitation past expires_at is expired (control_plane/domain/invites.py).
CREATE TABLE IF NOT EXISTS invitations (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    email TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'billing', 'reader')),
    -- JSON array of project ids; NULL: every project.
    projects TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'revoked')),
    invited_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT,
    accepted_by TEXT,
    revoked_at BIGINT
);
CREATE INDEX IF NOT EXISTS invitations_org ON invitations (org_id, id);

-- `nx_admin_...` keys of the customer REST API, one organization each; hashed like API keys.
CREATE TABLE IF NOT EXISTS admin_api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL DEFAULT '',
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX IF NOT EXISTS admin_api_keys_org ON admin_api_keys (org_id, id);
-- ==== end organizations ====================================================================

-- ==== identity (control_plane/identity/, docs/identity.md) ===================================
-- Accounts, sessions and verification tokens shaped like Auth.js's tables, so an external identity
-- (Clerk, Auth.js) maps onto an `accounts` row. users.email holds the normalised form.
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    -- Auth.js's account types: 'credentials' (local password), 'oidc', 'oauth', 'email'.
    type TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_account_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (provider, provider_account_id)
);

CREATE INDEX IF NOT EXISTS accounts_user ON accounts (user_id);

-- Only the SHA-256 of a session token is stored: a copy of the database signs nobody in.
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    session_token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users (id),
    provider TEXT NOT NULL DEFAULT 'local',
    -- Absolute expiry (Auth.js's `expires`), and the idle one moved forward while it is used.
    expires BIGINT NOT NULL,
    idle_expires BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT ''
);

CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);

CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);

-- Single-use, expiring tokens (email verification, password reset), stored as SHA-256.
CREATE TABLE IF NOT EXISTS verification_tokens (
    token_hash TEXT PRIMARY KEY,
    identifier TEXT NOT NULL,
    purpose TEXT NOT NULL,
    expires BIGINT NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS verification_tokens_identifier ON verification_tokens (identifier, purpose);

-- Every mail the platform sends; without SMTP it stays here for `nx mail`.
CREATE TABLE IF NOT EXISTS mail_outbox (
    id TEXT PRIMARY KEY,
    to_address TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);

CREATE INDEX IF NOT EXISTS mail_outbox_pending ON mail_outbox (sent_at, created_at);

-- Failed sign-ins per account (SHA-256 of the normalised email, whether or not a user has it) and
-- per client address, and sign-ups per client address; `locked_until` grows exponentially with
-- the count (control_plane/identity/throttle.py).
CREATE TABLE IF NOT EXISTS signin_throttle (
    scope TEXT NOT NULL CHECK (scope IN ('account', 'ip', 'signup')),
    subject TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, subject)
);

-- Webhook messages already applied, by the provider's message id (Clerk: Svix's `svix-id`).
CREATE TABLE IF NOT EXISTS processed_webhooks (
    provider TEXT NOT NULL,
    message_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (provider, message_id)
);

-- Organizations that mirror one of an external provider's (a Clerk organization).
CREATE TABLE IF NOT EXISTS external_organizations (
    provider TEXT NOT NULL,
    external_id TEXT NOT NULL,
    org_id TEXT NOT NULL UNIQUE REFERENCES organizations (id),
    PRIMARY KEY (provider, external_id)
);
-- ==== end identity ==========================================================================
