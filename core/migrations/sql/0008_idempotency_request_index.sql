-- Migration 0008: an index on idempotency_keys(request_id) (issue 12, findings 8, 9). The sidecar
-- gives back the Idempotency-Key claim of a request that ended without a settlement, and when
-- Envoy's log names only the request id (the sidecar's check never answered: it died or was too
-- slow), the claim is found by request id (proxy_plugins/sidecar/ended.py).
CREATE INDEX IF NOT EXISTS idempotency_keys_request ON idempotency_keys (request_id);
