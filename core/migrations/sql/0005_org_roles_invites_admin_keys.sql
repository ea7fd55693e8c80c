-- Migration 0005 (issue 15, items 4 and 5): organizations of their own.
-- 1. Roles become owner, admin, developer, billing, reader. The release's 'member' could create keys
--    and use the API, which is what 'developer' may do now: it becomes 'developer'. SQLite cannot
--    change a CHECK in place: memberships is rebuilt (no index or trigger of its own; nothing
--    references it).
-- 2. membership_projects narrows a member to some projects (no row: every project).
-- 3. invitations: by email with a role and projects; only the token's HMAC is stored.
-- 4. admin_api_keys: `nx_admin_...` keys scoped to one organization, for the customer REST API.
-- 5. audit_log.ip: the client address a change came from.

-- dialect: postgresql
ALTER TABLE memberships DROP CONSTRAINT IF EXISTS memberships_role_check;

-- dialect: postgresql
UPDATE memberships SET role = 'developer' WHERE role = 'member';

-- dialect: postgresql
ALTER TABLE memberships ADD CONSTRAINT memberships_role_check
    CHECK (role IN ('owner', 'admin', 'developer', 'billing', 'reader'));

-- dialect: sqlite
CREATE TABLE memberships_0008 (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'billing', 'reader')),
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, user_id)
);

-- dialect: sqlite
INSERT INTO memberships_0008 (id, org_id, user_id, role, created_at)
SELECT id, org_id, user_id, CASE role WHEN 'member' THEN 'developer' ELSE role END, created_at FROM memberships;

-- dialect: sqlite
DROP TABLE memberships;

-- dialect: sqlite
ALTER TABLE memberships_0008 RENAME TO memberships;

CREATE TABLE IF NOT EXISTS membership_projects (
    org_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    PRIMARY KEY (org_id, user_id, project_id)
);

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

ALTER TABLE audit_log ADD COLUMN ip TEXT;
