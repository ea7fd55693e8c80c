"""Usage analytics and finance exports over the ledger's usage records.

- `/v1/usage` (control_plane/api/usage.py): `params.parse_query` -> `query.run_query`, answered
  from hourly/daily rollups plus raw records for the open tail (query.py);
- rollups (rollups.py): the worker's `usage_rollups` job, watermark-based and idempotent;
- exports (exports.py): usage records and ledger statements streamed as CSV or JSON Lines, with
  totals that reconcile to the ledger to the nano-dollar (management API and `nx export`).
"""

from control_plane.usage.model import UsagePage, UsageQuery
from control_plane.usage.params import parse_query
from control_plane.usage.query import run_query
from control_plane.usage.rollups import RollupJob, roll_step

__all__ = ["RollupJob", "UsagePage", "UsageQuery", "parse_query", "roll_step", "run_query"]
