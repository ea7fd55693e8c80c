-- Migration 0007: holds of live streams are leases, and served work settles even after expiry
-- (issue 12, findings 4-6). Two transitions the hold guard refused become allowed:
-- - an open hold's `expires_at` moves (the adapter renews the hold of a stream while it streams,
--   core/ledger/holds.py `renew_holds`); nothing else of an open hold may change;
-- - an expired hold becomes settled, once (`settle_many(late=True)`: a request whose hold expired
--   while it was served, or whose adapter died, is charged what it delivered by the settler).
-- A settled or released hold still never changes again.

-- dialect: sqlite
DROP TRIGGER IF EXISTS ledger_holds_resolve_once;

-- dialect: sqlite
CREATE TRIGGER IF NOT EXISTS ledger_holds_resolve_once BEFORE UPDATE ON ledger_holds
WHEN NEW.amount <> OLD.amount OR NEW.promo_part <> OLD.promo_part OR NEW.org_id <> OLD.org_id
  OR NEW.request_id <> OLD.request_id
  OR NOT ((OLD.status = 'open' AND NEW.status <> 'open')
       OR (OLD.status = 'open' AND NEW.status = 'open' AND NEW.charged IS NULL AND NEW.resolved_at IS NULL)
       OR (OLD.status = 'expired' AND NEW.status = 'settled'))
BEGIN SELECT RAISE(ABORT, 'a hold resolves exactly once'); END;

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
