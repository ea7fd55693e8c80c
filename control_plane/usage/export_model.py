"""Finance export shapes: the columns of each export and the totals that reconcile them."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["LEDGER_COLUMNS", "USAGE_COLUMNS", "AccountTotals", "LedgerTotals", "UsageTotals"]

USAGE_COLUMNS = ("request_id", "created_at", "created_at_ms", "org_id", "project_id", "key_id", "model",
                 "backend_id", "endpoint", "status", "input_tokens", "cached_tokens", "output_tokens",
                 "cost_nanos", "cost_usd", "price_version", "txn_id", "ttft_ms", "latency_ms", "cache_status",
                 "client_ip")
LEDGER_COLUMNS = ("account", "seq", "created_at", "created_at_ms", "txn_id", "kind", "amount_nanos",
                  "amount_usd", "balance_after_nanos", "balance_after_usd", "request_id", "reverses",
                  "reason", "actor")


class UsageTotals(msgspec.Struct, frozen=True, kw_only=True):
    object: Literal["export.totals"] = "export.totals"
    export: Literal["usage"] = "usage"
    organization: str
    start_ms: int
    end_ms: int
    records: int
    errors: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_nanos: int
    """Sum of the records' cost."""
    cost_usd: str
    charge_transactions: int
    ledger_charged_nanos: int
    """Sum of the ledger charge transactions the records name."""
    customer_debits_nanos: int
    """What those transactions took from the wallet and promotional credit."""
    reconciled: bool
    """cost_nanos == ledger_charged_nanos == customer_debits_nanos."""


class AccountTotals(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    entries: int
    opening_balance_nanos: int
    credits_nanos: int
    debits_nanos: int
    charges_nanos: int
    """The part of the debits that paid for requests (charge transactions)."""
    closing_balance_nanos: int
    reconciled: bool
    """opening + credits - debits == closing."""


class LedgerTotals(msgspec.Struct, frozen=True, kw_only=True):
    object: Literal["export.totals"] = "export.totals"
    export: Literal["ledger"] = "ledger"
    organization: str
    start_ms: int
    end_ms: int
    accounts: list[AccountTotals]
    reconciled: bool
