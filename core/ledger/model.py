"""The ledger's value types: what callers pass in and what they get back (msgspec Structs).

Every amount is an integer number of nano-dollars (1 USD = 10^9); no float exists on these paths.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "CUSTOMER_KINDS",
    "KIND_ORDER",
    "AccountKind",
    "BalanceView",
    "Drift",
    "EntryView",
    "Hold",
    "Leg",
    "Settlement",
    "StatementLine",
    "StatementPage",
    "TransactionView",
    "Usage",
]

AccountKind = Literal["wallet", "promo", "revenue", "clearing", "promotions", "adjustments", "receivable"]
CUSTOMER_KINDS: frozenset[str] = frozenset({"wallet", "promo"})
# Row locks are always taken in this order (after hold rows and budget rows), so concurrent
# ledger writers on PostgreSQL never wait on each other in a cycle.
KIND_ORDER: dict[str, int] = {"promo": 0, "wallet": 1, "revenue": 2, "clearing": 3, "promotions": 4,
                              "adjustments": 5, "receivable": 6}
NonNeg = Annotated[int, msgspec.Meta(ge=0)]


class Drift(msgspec.Struct, frozen=True, kw_only=True):
    """One difference reconcile found (reconcile.py, billed.py)."""

    check: str
    subject: str
    expected: int
    actual: int


class Leg(msgspec.Struct, frozen=True):
    """One side of a transaction: `amount` is added to the account's balance (negative = debit);
    `release` is removed from the account's held amount in the same update (settling a hold)."""

    kind: AccountKind
    amount: int
    release: int = 0


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    object: Literal["ledger.hold"] = "ledger.hold"
    org_id: str
    project_id: str
    key_id: str
    request_id: str
    model_id: str
    price_version: int
    endpoint: str
    backend_id: str
    client_ip: str
    amount: int
    promo_part: int
    period: str
    status: Literal["open", "settled", "released", "expired"]
    charged: int | None
    txn_id: str | None
    expires_at: int
    created_at: int


class Usage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the adapter measured for one request. `input_tokens` includes `cached_tokens`."""

    status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 200
    input_tokens: NonNeg = 0
    cached_tokens: NonNeg = 0
    output_tokens: NonNeg = 0
    ttft_ms: NonNeg | None = None
    latency_ms: NonNeg | None = None
    cache_status: Literal["hit", "miss", "partial", "bypass"] | None = None
    # A routed request (issue 16) may be answered by another target than the one its hold names:
    # it is charged at that target's price card, and its usage record names that target.
    model_id: str | None = None
    price_version: int | None = None
    backend_id: str | None = None
    route_attempts: str | None = None
    """The backend calls made, as JSON (`x-route-attempts`); None for a single call."""


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    hold_id: str
    request_id: str
    charged: int
    """The exact charge in nano-dollars (goes into `x-wallet-debit` and the final stream event)."""
    released: int
    receivable: int = 0
    """The part of `charged` above the hold's amount, booked as owed (settle.py)."""
    txn_id: str | None
    """None when the charge is zero: nothing moved, so no ledger transaction exists."""
    model_id: str
    price_version: int


class EntryView(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    account: str
    amount: int
    balance_after: int


class TransactionView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    object: Literal["ledger.transaction"] = "ledger.transaction"
    organization: str
    kind: str
    amount: int
    reason: str
    reverses: str | None
    request_id: str | None
    model_id: str | None
    price_version: int | None
    actor: str
    created_at: int
    entries: list[EntryView]


class BalanceView(msgspec.Struct, frozen=True, kw_only=True):
    object: Literal["ledger.balance"] = "ledger.balance"
    organization: str
    wallet_nanos: int
    promo_nanos: int
    held_nanos: int
    available_nanos: int
    """wallet + promo - held: what new holds can still reserve."""
    low_balance_nanos: int | None
    owed_nanos: int = 0
    """What the organization owes: the part of charges above their holds (the `receivable`
    account, settle.py), not yet paid."""


class StatementLine(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    txn_id: str
    kind: str
    amount: int
    balance_after: int
    reason: str
    request_id: str | None
    reverses: str | None
    created_at: int


class StatementPage(msgspec.Struct, frozen=True, kw_only=True):
    object: Literal["list"] = "list"
    organization: str
    account: str
    opening_balance: int
    closing_balance: int
    data: list[StatementLine]
    has_more: bool
    next_after: int | None
