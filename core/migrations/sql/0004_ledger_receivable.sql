-- Migration 0004: the ledger's `receivable` account kind (issue 12). A settlement above its hold
-- (a backend that produced more than it was asked for, a tokenizer counting differently than the
-- estimate) takes the held amount from the wallet and books the rest as owed by the organization,
-- on this account, instead of posting nothing. Only the CHECK on ledger_accounts.kind changes; an
-- organization's receivable account is created on first use (core/ledger/core.py).
-- SQLite cannot alter a CHECK in place: the table is rebuilt and its two triggers recreated (the
-- triggers of ledger_entries and ledger_transactions name it and keep working after the rename).

-- dialect: postgresql
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_kind_check;

-- dialect: postgresql
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check
    CHECK (kind IN ('wallet', 'promo', 'revenue', 'clearing', 'promotions', 'adjustments', 'receivable'));

-- dialect: sqlite
CREATE TABLE ledger_accounts_0004 (
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

-- dialect: sqlite
INSERT INTO ledger_accounts_0004 (id, org_id, kind, customer, balance, held, entry_seq, low_balance_nanos, created_at)
SELECT id, org_id, kind, customer, balance, held, entry_seq, low_balance_nanos, created_at FROM ledger_accounts;

-- dialect: sqlite
DROP TABLE ledger_accounts;

-- dialect: sqlite
ALTER TABLE ledger_accounts_0004 RENAME TO ledger_accounts;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
BEGIN SELECT RAISE(ABORT, 'ledger_accounts cannot be deleted'); END;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_accounts_guard BEFORE UPDATE ON ledger_accounts
WHEN NEW.id <> OLD.id OR NEW.org_id <> OLD.org_id OR NEW.kind <> OLD.kind OR NEW.customer <> OLD.customer
  OR NEW.entry_seq <> OLD.entry_seq + (CASE WHEN NEW.balance <> OLD.balance THEN 1 ELSE 0 END)
BEGIN SELECT RAISE(ABORT, 'ledger account: identity is fixed and a balance moves only with an entry'); END;
