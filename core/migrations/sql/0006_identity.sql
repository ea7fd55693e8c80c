-- Migration 0006: customer identity (issue 15, items 1-3 and 6). Accounts, sessions and
-- verification tokens shaped like Auth.js's tables, so an external identity (Clerk, Auth.js) maps
-- onto an `accounts` row; the mail outbox of the embedded default; sign-in failure counters for
-- the lockout; the ids of provider webhooks already applied (Clerk's Svix message ids).
-- users.email keeps its normalised form (trimmed, lower-case), as the domain always wrote it.

ALTER TABLE users ADD COLUMN email_verified_at BIGINT;

ALTER TABLE users ADD COLUMN password_changed_at BIGINT;

-- The organization sign-up created: its promotional credit is granted when the email is verified.
ALTER TABLE users ADD COLUMN signup_org_id TEXT;

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
