"""Where the pipeline's added time goes at concurrency 1: the platform's own timings, read from its
Prometheus endpoints before and after a run, so each stage is a mean over exactly that run.

Stages (each a mean per request, in ms):
- `check`: the sidecar's whole ext_authz check (`nx_sidecar_check_duration_seconds`), of which
  `hold` is the hold's group commit (queue wait and its transaction: `nx_groupcommit_latency_seconds`
  of `hold`);
- `adapter_before_settle`: adapter receipt to the backend's last byte (`nx_upstream_duration_seconds`)
  minus the backend's own time, measured as the direct target's p50 in the same run;
- `settlement`: the answer's settlement group commit (`nx_settlement_duration_seconds`);
- `edge_and_hops`: what is left of the added p50: Envoy's three HTTP exchanges, the hops between
  processes, and every process waking up for each request.
Means and a p50 are not the same statistic; the remainder is an estimate, good to a few tenths of
a millisecond at c=1, where the distribution is narrow.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

__all__ = ["Scrape", "breakdown", "parse", "scrape"]

Scrape = dict[str, tuple[float, float]]
"""(metric, group-commit name or "") -> (sum of seconds, count), summed over the other labels."""

_SAMPLE = re.compile(r'^(\w+)_(sum|count)(?:\{([^}]*)\})? ([0-9.eE+-]+)$')
_WANTED = ("nx_sidecar_check_duration_seconds", "nx_groupcommit_latency_seconds", "nx_upstream_duration_seconds",
           "nx_settlement_duration_seconds", "gen_ai_server_request_duration_seconds")


def scrape(urls: list[str]) -> Scrape:
    """Sum and count of the stage histograms over every process in `urls` (sidecars, adapters)."""
    out: dict[str, tuple[float, float]] = {}
    for url in urls:
        for key, (total, count) in parse(httpx.get(url, timeout=10).text).items():
            s0, c0 = out.get(key, (0.0, 0.0))
            out[key] = (s0 + total, c0 + count)
    return out


def parse(text: str) -> Scrape:
    """The stage histograms' sums and counts in one Prometheus text page."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m.group(1) not in _WANTED:
            continue
        name = re.search(r'name="([^"]*)"', m.group(3) or "")
        slot = out.setdefault(f"{m.group(1)}:{name.group(1) if name else ''}", [0.0, 0.0])
        slot[0 if m.group(2) == "sum" else 1] += float(m.group(4))
    return {k: (v[0], v[1]) for k, v in out.items()}


def _mean_ms(before: Scrape, after: Scrape, key: str) -> float | None:
    s0, c0 = before.get(key, (0.0, 0.0))
    s1, c1 = after.get(key, (0.0, 0.0))
    return None if c1 <= c0 else round((s1 - s0) / (c1 - c0) * 1000, 3)


def breakdown(before: Scrape, after: Scrape, added_p50_ms: float, backend_ms: float) -> dict[str, Any]:
    """The stages of one run (see the module docstring); `backend_ms` is the direct target's p50."""
    check = _mean_ms(before, after, "nx_sidecar_check_duration_seconds:")
    hold = _mean_ms(before, after, "nx_groupcommit_latency_seconds:hold")
    upstream = _mean_ms(before, after, "nx_upstream_duration_seconds:")
    settlement = _mean_ms(before, after, "nx_settlement_duration_seconds:")
    before_settle = None if upstream is None else round(upstream - backend_ms, 3)
    known = [x for x in (check, before_settle, settlement) if x is not None]
    return {"added_p50_ms": added_p50_ms, "check_ms": check, "hold_ms": hold,
            "adapter_before_settle_ms": before_settle, "settlement_ms": settlement,
            "edge_and_hops_ms": round(added_p50_ms - sum(known), 3) if len(known) == 3 else None}
