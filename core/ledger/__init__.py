"""The money core: a double-entry ledger in integer nano-dollars, holds, settlement, budgets.

Entry points (each takes an open connection and runs inside the caller's transaction; open it
with `core.db.write_tx`, which takes SQLite's write lock up front):
- sidecar, before a backend call: `place_hold(...)` -> Hold, or `InsufficientFunds` (core/ledger/errors.py);
  a group-commit batch of them set-based: `place_holds(conn, [HoldRequest(...)])` (hold_batch.py);
- adapter, after the response: `settle_hold(conn, ref, Usage(...))` / `settle_many(conn, items)`;
  a group-commit batch with fewer statements per item: `settle_batch` (settle_batch.py);
- adapter, while a stream is live: `renew_holds(conn, request_ids, expires_at_ms)`;
- worker: `expire_holds(conn)`;
- operators: `grant`, `adjust`, `reverse`, `balance`, `statement`, `set_low_balance`, `reconcile`.
Invariants, enforced by the database as well (schema.sql, ledger section): entries sum to zero per
transaction, customer balances never go below what they hold, history is append-only, a hold
resolves once.
"""

from core.ledger.core import ensure_accounts, get_transaction
from core.ledger.errors import LedgerError
from core.ledger.hold_batch import HoldRequest, place_holds
from core.ledger.holds import expire_holds, load_hold, place_hold, release_hold, renew_holds
from core.ledger.model import BalanceView, Hold, Settlement, StatementPage, TransactionView, Usage
from core.ledger.ops import adjust, balance, grant, reverse, set_low_balance, statement
from core.ledger.pricing import PriceCard, card_in_force, card_version, charge_for, max_cost
from core.ledger.reconcile import ReconcileReport, reconcile
from core.ledger.settle import settle_hold, settle_many
from core.ledger.settle_batch import settle_batch

__all__ = ["BalanceView", "Hold", "HoldRequest", "LedgerError", "PriceCard", "ReconcileReport", "Settlement",
           "StatementPage", "TransactionView", "Usage", "adjust", "balance", "card_in_force", "card_version",
           "charge_for", "ensure_accounts", "expire_holds", "get_transaction", "grant", "load_hold", "max_cost",
           "place_hold", "place_holds", "reconcile", "release_hold", "renew_holds", "reverse", "set_low_balance",
           "settle_batch", "settle_hold", "settle_many", "statement"]
