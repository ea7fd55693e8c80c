"""The contract between Envoy, the sidecar, the adapter and the control plane, in one place.

Envoy's templates (envoy/*.yaml) name these values as `${header.*}`, `${route.*}` and
`${status.*}` (control_plane/envoy_config.py fills them), and the sidecar, the adapter and the
control plane import them: a header renamed here is renamed everywhere.
tests/foundation/test_contract.py fails on an `x-nx-*` string literal anywhere else in the code.
(The local model server imports nothing of ours and spells `x-nx-tenant` itself; the customers'
library `nx_client` owns the signature headers a client sends, re-exported below.)
"""

from __future__ import annotations

from typing import Final

from core.snapshot import ModelRecord, PriceRecord
from nx_client.signing import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER


class Header:
    """Header names, lower case (as ASGI and Envoy hand them over)."""

    PREFIX: Final = "x-nx-"
    """Envoy removes every client-sent header with this prefix before anything else reads one."""
    CLIENT_IP: Final = "x-nx-client-ip"
    """Stamped by Envoy from the socket peer (or the trusted X-Forwarded-For hop), overwriting."""
    # The client's replay-protection headers, kept by Envoy under x-nxsig-* through the strip.
    CLIENT_TIMESTAMP: Final = TIMESTAMP_HEADER
    CLIENT_NONCE: Final = NONCE_HEADER
    CLIENT_SIGNATURE: Final = SIGNATURE_HEADER
    SIG_TIMESTAMP: Final = "x-nxsig-timestamp"
    SIG_NONCE: Final = "x-nxsig-nonce"
    SIG_SIGNATURE: Final = "x-nxsig-signature"
    # Set by the sidecar on an allowed request (Envoy passes every x-nx-* answer header upstream).
    ORG: Final = "x-nx-org"
    PROJECT: Final = "x-nx-project"
    KEY: Final = "x-nx-key"
    ENDPOINT: Final = "x-nx-endpoint"
    INTERNAL: Final = "x-nx-internal"
    """The internal token: only a caller that went through the edge's check (or a platform process)
    has it; the adapter and the control plane's /v1 refuse a request without it."""
    MODEL: Final = "x-nx-model"
    BACKEND: Final = "x-nx-backend"
    ROUTE: Final = "x-nx-route"
    """Where Envoy's router sends the request: one of `Route`'s values."""
    IDEM: Final = "x-nx-idem"
    IDEM_REPLAY: Final = "x-nx-idem-replay"
    HOLD_PRICE: Final = "x-nx-hold-price"
    """The price card the hold was placed at: `hold_price()`'s format."""
    HOLD_OUTPUT: Final = "x-nx-hold-output"
    PLAN: Final = "x-nx-plan"
    """The model ids a routed request may try (core/routeplan.py `encode_plan`), which its hold
    covers; absent when the request has one target (`x-nx-model`)."""
    RATE_LIMIT: Final = "x-nx-rl"
    TENANT: Final = "x-nx-tenant"
    """The organization of a call, told only to this platform's own local model servers."""


class Route:
    """`x-nx-route` values, matched by Envoy's routes (envoy/routes.yaml, envoy/backend-route.yaml)."""

    ADAPTER: Final = "adapter"
    CONTROL_PLANE: Final = "control_plane"
    BACKEND_PREFIX: Final = "backend."
    """`backend.<id>`: straight to that model backend's cluster."""


SIDECAR_REFUSAL_503 = 418
"""Envoy treats any 5xx from the authorization service as its failure, so the sidecar sends its own
503 refusals with this status and Envoy's local reply restores 503 (envoy/local-reply.yaml)."""
SIDECAR_ERROR_STATUS = 511
"""What Envoy answers when the sidecar cannot be reached (ext_authz `status_on_error`), mapped to
503 `sidecar_unavailable` by the local reply."""


def hold_price(version: int, input_nanos: int, cached_nanos: int, output_nanos: int) -> str:
    """`x-nx-hold-price`: `version,input,cached,output` (nano-dollars per million tokens)."""
    return f"{version},{input_nanos},{cached_nanos},{output_nanos}"


def parse_hold_price(value: str) -> PriceRecord:
    version, inp, cached, out = (int(x) for x in value.split(","))
    return PriceRecord(version, inp, cached, out)


HOLD_MARGIN_MS = 5 * 60 * 1000
"""A hold outlives its backend's timeout by this much, so a slow answer still settles; the worker
expires it only when the process carrying the request is gone."""


def output_cap(model: ModelRecord) -> int:
    """The most output one choice may have: the catalog's `max_output_tokens`, or (0: not stated)
    the context window, which no output can outgrow. The sidecar holds at most this and refuses a
    request asking for more; the adapter never asks a backend for more than was held
    (`x-nx-hold-output`)."""
    return model.max_output_tokens or model.context_window


SLOT_LEASE_MS = 30_000
"""A concurrency slot is a lease: it frees itself this long after it was taken or last renewed.
The adapter renews the slots of the requests it is running every `SLOT_RENEW_MS`; a request that
ends is released at once (the adapter's finish report, or Envoy's access log), so this expiry only
frees the slots of a request whose reports were all lost (a killed adapter and sidecar)."""

SLOT_RENEW_MS = 10_000
"""How often the adapter renews its running requests' slots: three renewals fit in one lease."""

ORPHAN_GRACE_MS = 15_000
"""A request whose adapter died under it (Envoy saw the upstream connection end: `UC`) keeps its
hold and Idempotency-Key claim this much longer, for the adapter's successor to settle what it
served; then the worker expires them (seconds, not the hold's full backend timeout + 5 min)."""

ACCESS_LOG_TAG = "nx.ended"
"""Fluentd tag of Envoy's access-log entries for authorized /v1 requests (envoy/ended-log.yaml)."""
