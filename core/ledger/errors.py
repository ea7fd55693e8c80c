"""The ledger's own refusals: money speaks in its terms, not HTTP's.

Each refusal names its code in the one error table (core/errors.py); the table alone decides the
status and error type a boundary answers with (`core.errors.refusal`), so the ledger can be used
from a CLI, a worker or a test without knowing that HTTP exists. A refusal always means nothing
was written: the caller's transaction must be rolled back (the ledger raises before or instead of
its writes, or the caller's `write_tx` undoes the partial ones).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["HoldResolved", "InsufficientFunds", "InvalidAmount", "KeyInUse", "KeyReused", "LedgerError",
           "MissingReason", "NotFound", "NotPriced", "NotReversible"]


class LedgerError(Exception):
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidAmount(LedgerError):
    """An amount or token count the ledger cannot book (zero, negative, out of range)."""

    code = "invalid_request_error"


class MissingReason(LedgerError):
    """An adjustment or reversal without the reason the audit trail needs."""

    code = "missing_required_parameter"


class InsufficientFunds(LedgerError):
    """The wallet, promotional credit or a monthly budget cannot cover the amount."""

    code = "insufficient_quota"


class NotFound(LedgerError):
    """No such hold or transaction (in this organization)."""

    code = "not_found"


class HoldResolved(LedgerError):
    """The hold was already settled, released or expired (or is being resolved concurrently)."""

    code = "hold_already_resolved"


class KeyReused(LedgerError):
    """An idempotency key (or request id) already names a different movement of money."""

    code = "idempotency_key_reused"


class KeyInUse(LedgerError):
    """A transaction with this idempotency key is being written right now; retrying gets its result."""

    code = "idempotency_key_in_use"


class NotReversible(LedgerError):
    """A reversal of a reversal, or of a transaction already reversed."""

    code = "conflict"


class NotPriced(LedgerError):
    """The model has no price card in force (or the named version does not exist)."""

    code = "model_not_priced"
