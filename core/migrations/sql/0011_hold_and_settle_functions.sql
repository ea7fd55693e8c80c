-- Migration 0011: nx_place_holds and nx_settle_batch (issue 17): on PostgreSQL a batch of holds is
-- one call (the sidecar's hold transaction: three round trips instead of about eight), and a batch
-- of settlements' writes one call (the adapter's: about five instead of about eleven). Nothing
-- changes on SQLite.
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
