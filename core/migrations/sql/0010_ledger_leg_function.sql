-- Migration 0010: nx_ledger_leg (issue 17): one leg of a ledger transaction in one call on
-- PostgreSQL, so a settlement batch runs all its legs in one pipelined statement. Nothing changes
-- on SQLite.
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
