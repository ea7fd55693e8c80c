"""The goals table of docs/benchmarks.md (issue 7), computed from the newest result of each lane.

Every row's figure and its met/not met come from the result files, never from typed-in numbers, so
that `python -m bench report --write` reproduces the page from a fresh run. A lane without a result,
or a result without the figure (an older shape), gives "not measured" instead of failing: a partial
run still renders. A figure taken from a result more than a day older than the newest overhead
result says so ("measured <date>"), since the goals are read as one run of the whole bench.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["dig", "goals_table"]

Results = Mapping[str, dict[str, Any]]
Note = Callable[[str], str]
Row = tuple[str, bool | None]
"""The measured text and whether the goal is met (None: not measured)."""

RATE_GOAL, MOONSHOT = 1_500, 3_000
SQLITE_RATE = 2_500
"""Issue 17: the SQLite pipeline's maximum rate."""
PORTKEY_FACTOR = 2
"""Issue 17: at least this many times Portkey's maximum rate in the same run."""
TTFT_256_OVER_ENVOY_MS = 5.0
"""Issue 17: added time to first token at 256 streams at most plain Envoy's plus this."""
PG_P50_GAP_MS = 0.5
"""Issue 17: PostgreSQL's added p50 at c=1 within this of SQLite's."""
FRONTIER_BOTH = 1_000
"""Issue 17: the frontier on each database."""
LITELLM_FACTOR = 15
ADDED_P50_MS, ADDED_P99_MS = 1.0, 3.0
TTFT_P50_MS = 1.0
RSS_LIMIT_MB = 300
RSS_GROWTH_MB = 10.0
"""Growth from after the first load to after the second, same load: VmRSS moves by a few MB with
allocator noise, so growth within 10 MB (about 10 % of these processes) counts as none."""
RSS_PROCESSES = ("sidecar", "control-plane")
USAGE_MS = 200
USAGE_RECORDS = 10_000_000
USAGE_QUERY = "30d_1d_by_model"
STALE = dt.timedelta(days=1)
MISSING = "no result"


def dig(d: Any, *keys: str) -> Any:
    """`d[k1][k2]...`, or None when any level is missing (older result shapes, skipped lanes)."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _n(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def _pipeline_rate(r: Results, note: Note) -> Row:
    rate = dig(r.get("overhead"), "targets", "pipeline", "max_rate", "rate")
    if rate is None:
        return MISSING, None
    text = f"SQLite {_n(rate)} req/s{note('overhead')}"
    pg = dig(r.get("overhead-postgresql"), "targets", "pipeline", "max_rate", "rate")
    if pg is not None:
        text += f"; PostgreSQL {_n(pg)} req/s{note('overhead-postgresql')}"
    return text, rate >= RATE_GOAL


def _moonshot(r: Results, note: Note) -> Row:
    rate = dig(r.get("overhead"), "targets", "pipeline", "max_rate", "rate")
    if rate is None:
        return MISSING, None
    plain = dig(r.get("overhead"), "targets", "plain_envoy", "max_rate", "rate")
    ref = "" if plain is None else f"; plain Envoy (listener + router only) {_n(plain)} req/s"
    return f"{_n(rate)} req/s{note('overhead')}{ref}", rate >= MOONSHOT


def _litellm(r: Results, note: Note) -> Row:
    d = r.get("peers")
    ratio = dig(d, "ratios", "litellm", "max_rate_ours_over_theirs")
    if ratio is None:
        return MISSING, None
    ours = dig(d, "targets", "pipeline", "max_rate", "rate")
    theirs = dig(d, "targets", "litellm", "max_rate", "rate")
    rates = "" if ours is None or theirs is None else f" ({_n(ours)} vs {_n(theirs)} req/s)"
    return f"{_n(ratio, 2)}x{rates}{note('peers')}", ratio >= LITELLM_FACTOR


def _sqlite_rate(r: Results, note: Note) -> Row:
    rate = dig(r.get("overhead"), "targets", "pipeline", "max_rate", "rate")
    if rate is None:
        return MISSING, None
    peers = dig(r.get("peers"), "targets", "pipeline", "max_rate", "rate")
    also = "" if peers is None else f" (the peers lane's run: {_n(peers)} req/s{note('peers')})"
    return f"{_n(rate)} req/s{note('overhead')}{also}", rate >= SQLITE_RATE


def _per_database(r: Results, note: Note, lanes: tuple[str, str],
                  one: Callable[[dict[str, Any] | None], tuple[str, bool] | None]) -> Row:
    """A goal measured in a lane and in its PostgreSQL twin: each database's text, met if both are."""
    parts: list[str] = []
    met: list[bool] = []
    for name, lane in zip(("SQLite", "PostgreSQL"), lanes, strict=True):
        found = one(r.get(lane))
        if found is not None:
            parts.append(f"{name} {found[0]}{note(lane)}")
            met.append(found[1])
    if not parts:
        return MISSING, None
    return "; ".join(parts), all(met)


def _portkey_one(d: dict[str, Any] | None) -> tuple[str, bool] | None:
    ratio = dig(d, "ratios", "portkey", "max_rate_ours_over_theirs")
    if ratio is None:
        return None
    ours, theirs = dig(d, "targets", "pipeline", "max_rate", "rate"), dig(d, "targets", "portkey", "max_rate", "rate")
    rates = "" if ours is None or theirs is None else f" ({_n(ours)} vs {_n(theirs)} req/s)"
    return f"{_n(ratio, 2)}x{rates}", ratio >= PORTKEY_FACTOR


def _ttft_256_one(d: dict[str, Any] | None) -> tuple[str, bool] | None:
    ours = dig(d, "summary", "pipeline", "256", "added_ttft_p50_ms")
    envoy = dig(d, "summary", "plain_envoy", "256", "added_ttft_p50_ms")
    if ours is None or envoy is None:
        return None
    return f"+{_n(ours, 2)} ms against plain Envoy's +{_n(envoy, 2)} ms", ours <= envoy + TTFT_256_OVER_ENVOY_MS


def _portkey(r: Results, note: Note) -> Row:
    return _per_database(r, note, ("peers", "peers-postgresql"), _portkey_one)


def _ttft_256(r: Results, note: Note) -> Row:
    return _per_database(r, note, ("streaming", "streaming-postgresql"), _ttft_256_one)


def _added(d: dict[str, Any] | None, q: str) -> float | None:
    """Pipeline minus direct at c=1, as the overhead section's table computes it."""
    ours, direct = dig(d, "targets", "pipeline", "c1", q), dig(d, "targets", "direct", "c1", q)
    return None if ours is None or direct is None else float(ours - direct)


def _added_row(q: str, limit: float) -> Callable[[Results, Note], Row]:
    def row(r: Results, note: Note) -> Row:
        v = _added(r.get("overhead"), q)
        if v is None:
            return MISSING, None
        text = f"SQLite +{_n(v, 2)} ms{note('overhead')}"
        pg = _added(r.get("overhead-postgresql"), q)
        if pg is not None:
            text += f"; PostgreSQL +{_n(pg, 2)} ms{note('overhead-postgresql')}"
        return text, v <= limit
    return row


def _frontier(r: Results, note: Note) -> Row:
    f = dig(r.get("overhead"), "frontier")
    if dig(f, "rate") is None:
        return MISSING, None
    over = next((s for s in f.get("steps", []) if not s.get("within")), None)
    why = "" if over is None else \
        f" (over the limit at {_n(over['rate'])} req/s: added p99 {_n(over['added_p99'], 2)} ms)"
    return f"{_n(f['rate'])} req/s{why}{note('overhead')}", f["rate"] >= RATE_GOAL


def _pg_rate(r: Results, note: Note) -> Row:
    pg = dig(r.get("overhead-postgresql"), "targets", "pipeline", "max_rate", "rate")
    if pg is None:
        return MISSING, None
    return f"{_n(pg)} req/s{note('overhead-postgresql')}", pg >= RATE_GOAL


def _pg_p50_gap(r: Results, note: Note) -> Row:
    lite, pg = _added(r.get("overhead"), "p50"), _added(r.get("overhead-postgresql"), "p50")
    if lite is None or pg is None:
        return MISSING, None
    return (f"PostgreSQL +{_n(pg, 2)} ms{note('overhead-postgresql')} against SQLite +{_n(lite, 2)} ms"
            f"{note('overhead')}: {pg - lite:+.2f} ms"), pg - lite <= PG_P50_GAP_MS


def _frontier_both(r: Results, note: Note) -> Row:
    rates = {name: dig(r.get(lane), "frontier", "rate")
             for name, lane in (("SQLite", "overhead"), ("PostgreSQL", "overhead-postgresql"))}
    if None in rates.values():
        return MISSING, None
    text = "; ".join(f"{name} {_n(v)} req/s" for name, v in rates.items())
    return f"{text}{note('overhead-postgresql')}", all(v >= FRONTIER_BOTH for v in rates.values())


def _ttft(r: Results, note: Note) -> Row:
    v = dig(r.get("streaming"), "summary", "pipeline", "1", "added_ttft_p50_ms")
    if v is None:
        return MISSING, None
    text = f"SQLite +{_n(v, 2)} ms{note('streaming')}"
    pg = dig(r.get("streaming-postgresql"), "summary", "pipeline", "1", "added_ttft_p50_ms")
    if pg is not None:
        text += f"; PostgreSQL +{_n(pg, 2)} ms{note('streaming-postgresql')}"
    return text, v <= TTFT_P50_MS and (pg is None or pg <= TTFT_P50_MS)


def _stalls(r: Results, note: Note) -> Row:
    t = dig(r.get("streaming"), "targets", "pipeline", "256")
    if dig(t, "stalls") is None:
        return MISSING, None
    failed = t["requests"] - t["ok"] + t["errors"]
    gap = dig(t, "gap_ms", "max")
    worst = "" if gap is None else f", longest gap {_n(gap)} ms"
    return f"{t['stalls']:,} stalls, {failed:,} failed streams{worst}{note('streaming')}", t["stalls"] == 0


def _rss(r: Results, note: Note) -> Row:
    rss = dig(r.get("memory"), "rss_mb")
    peaks = {p: [v for k in ("at_frontier_peak", "streams_256_peak")
                 if (v := dig(rss, p, k)) is not None] for p in RSS_PROCESSES}
    if not all(peaks.values()):
        return MISSING, None
    top = {p: max(v) for p, v in peaks.items()}
    text = ", ".join(f"{p} {_n(v, 1)} MB" for p, v in top.items())
    return f"peak {text}{note('memory')}", all(v < RSS_LIMIT_MB for v in top.values())


def _growth(r: Results, note: Note) -> Row:
    rss = dig(r.get("memory"), "rss_mb")
    pairs = {p: (dig(rss, p, "after_load"), dig(rss, p, "after_second_round")) for p in RSS_PROCESSES}
    if any(a is None or b is None for a, b in pairs.values()):
        return MISSING, None
    growth = {p: b - a for p, (a, b) in pairs.items()}
    text = ", ".join(f"{p} {v:+.1f} MB" for p, v in growth.items())
    return f"{text} over a second round{note('memory')}", all(v <= RSS_GROWTH_MB for v in growth.values())


def _usage(r: Results, note: Note) -> Row:
    d = r.get("usage")
    ms = {db: dig(d, "runs", db, "result", "queries", USAGE_QUERY, "median_ms") for db in ("sqlite", "postgresql")}
    shown = [f"{name} {_n(v, 1)} ms" for name, v in zip(("SQLite", "PostgreSQL"), ms.values(), strict=True)
             if v is not None]
    if not shown:
        return MISSING, None
    records = dig(d, "records") or 0
    over = any(v is not None and v >= USAGE_MS for v in ms.values())
    text = f"{', '.join(shown)} (median) at {records:,} records{note('usage')}"
    if over:
        return text, False
    if records < USAGE_RECORDS or None in ms.values():
        return text, None  # fast at fewer records (--quick) or on one database only: not the goal yet
    return text, True


GOALS: tuple[tuple[str, Callable[[Results, Note], Row]], ...] = (
    (f"full pipeline max rate, non-streaming (wrk c=64) >= {RATE_GOAL:,} req/s", _pipeline_rate),
    (f"moonshot: full pipeline >= {MOONSHOT:,} req/s", _moonshot),
    (f"SQLite full pipeline max rate >= {SQLITE_RATE:,} req/s (issue 17)", _sqlite_rate),
    (f">= {LITELLM_FACTOR}x LiteLLM's max rate, same run", _litellm),
    (f">= {PORTKEY_FACTOR}x Portkey's max rate, same run (issue 17)", _portkey),
    (f"added p50 <= {ADDED_P50_MS:g} ms at c=1", _added_row("p50", ADDED_P50_MS)),
    (f"added p99 <= {ADDED_P99_MS:g} ms at c=1", _added_row("p99", ADDED_P99_MS)),
    (f"frontier (highest open-loop rate with added p99 <= 10 ms) >= {RATE_GOAL:,} req/s", _frontier),
    (f"PostgreSQL full pipeline max rate >= {RATE_GOAL:,} req/s (issue 17)", _pg_rate),
    (f"PostgreSQL added p50 at c=1 within {PG_P50_GAP_MS:g} ms of SQLite's (issue 17)", _pg_p50_gap),
    (f"both databases: frontier >= {FRONTIER_BOTH:,} req/s (issue 17)", _frontier_both),
    (f"streaming: added TTFT p50 <= {TTFT_P50_MS:g} ms at 1 stream", _ttft),
    (f"streaming: added TTFT p50 at 256 streams <= plain Envoy's + {TTFT_256_OVER_ENVOY_MS:g} ms (issue 17)",
     _ttft_256),
    ("streaming: no stalls at 256 streams (gap > 10x the simulator's pace)", _stalls),
    (f"sidecar and control-plane RSS under load < {RSS_LIMIT_MB} MB", _rss),
    (f"no RSS growth after load (second round vs first, within {RSS_GROWTH_MB:g} MB)", _growth),
    (f"`/v1/usage` {USAGE_RECORDS // 1_000_000}M records, 30 d, `1d`, by model < {USAGE_MS} ms "
     "on SQLite and PostgreSQL", _usage),
)


def _date(d: dict[str, Any]) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(d["date"])
    except (KeyError, TypeError, ValueError):
        return None


def goals_table(results: Results) -> list[str]:
    """Markdown rows: goal, measured, met (yes / no / not measured)."""
    dates = {lane: t for lane, d in results.items() if (t := _date(d)) is not None}
    ref = dates.get("overhead") or max(dates.values(), default=None)

    def note(lane: str) -> str:
        d = results.get(lane, {})
        flags = ["--quick"] if d.get("quick") else []
        t = dates.get(lane)
        if ref is not None and t is not None and ref - t > STALE:
            flags.append(f"measured {t:%Y-%m-%d}")
        return f" ({', '.join(flags)})" if flags else ""

    rows = ["| goal | measured | met |", "| --- | --- | --- |"]
    for goal, fn in GOALS:
        text, met = fn(results, note)
        rows.append(f"| {goal} | {text} | {'not measured' if met is None else 'yes' if met else 'no'} |")
    return rows
