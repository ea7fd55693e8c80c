-- Migration 0011: nx_place_holds (issue 17): a batch of holds in one call on PostgreSQL, so the
-- sidecar's hold transaction is three round trips (BEGIN, the call, COMMIT) instead of about eight.
-- Nothing changes on SQLite.
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
             GROUP BY s.scope ORDER BY s.scope LOOP
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
    FOR r IN SELECT DISTINCT t.o FROM unnest(p_org) AS t(o) ORDER BY t.o LOOP
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
