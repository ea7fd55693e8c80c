"""`python -m bench report`: markdown tables from the newest result of each lane (for docs/benchmarks.md)."""

from __future__ import annotations

import json
from typing import Any

from bench.tools import RESULTS

__all__ = ["render"]


def _latest(lane: str) -> dict[str, Any] | None:
    found = sorted(RESULTS.glob(f"*-{lane}.json"))
    return json.loads(found[-1].read_text()) if found else None


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _overhead(d: dict[str, Any]) -> list[str]:
    t = d["targets"]
    rows = ["| target | p50 c=1 (ms) | p99 c=1 (ms) | added p50 | added p99 | max req/s (c=64) "
            "| CPU us/req by process |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in t.items():
        c1, top = r["c1"], r["max_rate"]
        add50 = c1["p50"] - t["direct"]["c1"]["p50"]
        add99 = c1["p99"] - t["direct"]["c1"]["p99"]
        cpu = ", ".join(f"{k} {v:,.0f}" for k, v in top["cpu_us_per_request"].items()
                        if v >= 1 and k in _USED[name])
        rows.append(f"| {name} | {_f(c1['p50'])} | {_f(c1['p99'])} | {_f(add50)} | {_f(add99)} | "
                    f"{_f(top['rate'], 0)} | {cpu} |")
    f = d.get("frontier")
    if f:
        rows += ["", f"Frontier (open loop, added p99 <= {f['limit_added_p99_ms']} ms over the simulator's own "
                     f"p99 of {_f(f['baseline_p99_ms'])} ms at 50 req/s): **{f['rate']} req/s**", "",
                 "| offered req/s | achieved | p50 (ms) | p99 (ms) | added p99 | statuses |",
                 "| --- | --- | --- | --- | --- | --- |"]
        rows += [f"| {s['rate']} | {_f(s['achieved'], 0)} | {_f(s['p50'])} | {_f(s['p99'])} | {_f(s['added_p99'])} | "
                 f"{s['statuses']} |" for s in f["steps"]]
    return rows


_USED = {
    "direct": {"simulator"}, "plain_envoy": {"simulator", "plain-envoy"},
    "pipeline": {"simulator", "envoy", "sidecar", "adapter", "control-plane", "worker"},
    "litellm": {"simulator", "litellm", "litellm-child-1", "litellm-child-2", "litellm-child-3"},
    "portkey": {"simulator", "portkey"},
}


def _streaming(d: dict[str, Any]) -> list[str]:
    rows = [f"Simulator pace: first byte {d['first_byte_ms']} ms, then {d['chunks']} words at {d['chunk_ms']} ms; "
            f"stall = gap over {d['stall_threshold_ms']} ms.", "",
            "| target | streams | streams/s | TTFT p50 | TTFT p99 | added TTFT p50 | gap p50 | gap p99 | gap max | "
            "stalls | failed |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, levels in d["targets"].items():
        for c, r in levels.items():
            added = None if name == "direct" else d["summary"][name][c]["added_ttft_p50_ms"]
            failed = r["requests"] - r["ok"] + r["errors"]
            ttft, gap = r["ttft_ms"], r["gap_ms"]
            rows.append(f"| {name} | {c} | {_f(r['rate'], 0)} | {_f(ttft['p50'])} | {_f(ttft['p99'])} | "
                        f"{_f(added)} | {_f(gap['p50'])} | {_f(gap['p99'])} | {_f(gap['max'])} | "
                        f"{r['stalls']} | {failed} |")
    return rows


def _peers(d: dict[str, Any]) -> list[str]:
    rows = _overhead(d)[:2 + len(d["targets"])]
    rows += ["", "| peer | version | our max rate / theirs | their added p50 / ours | features on |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in d["ratios"].items():
        rows.append(f"| {name} | {d['versions'][name]} | {_f(r['max_rate_ours_over_theirs'])}x | "
                    f"{_f(r['added_p50_theirs_over_ours'])}x | {d['features'][name]} |")
    rows.append(f"| pipeline (ours) | - | - | - | {d['features']['pipeline']} |")
    return rows


def _embeddings(d: dict[str, Any]) -> list[str]:
    if "skipped" in d:
        return [f"Skipped: {d['skipped']}"]
    rows = ["| target | batch | texts/s | requests/s | p50 (ms) | p99 (ms) | statuses |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, batches in d["targets"].items():
        for b, r in batches.items():
            rows.append(f"| {name} | {b} | {_f(r['texts_per_s'], 0)} | {_f(r['rate'], 1)} | "
                        f"{_f(r['latency_ms']['p50'])} | {_f(r['latency_ms']['p99'])} | {r['statuses']} |")
    cache = d["cache"]
    rows += ["", f"Cache probe (same 32 texts twice, `x-cache-status`): {cache['probe']}"]
    if "hit_batch_32" in cache:
        h = cache["hit_batch_32"]
        rows.append(f"Cache hit path, batch 32: {_f(h['texts_per_s'], 0)} texts/s, p50 {_f(h['latency_ms']['p50'])} ms")
    return rows


def _memory(d: dict[str, Any]) -> list[str]:
    rows = [f"Load: {d['rate']} req/s open loop ({d.get('rate_from', 'frontier')}) for {d['duration_s']} s, "
            f"then 256 streams for {d['duration_s'] / 2} s; 5 s idle; the same rate again; 5 s idle.", "",
            "| process | idle (MB) | peak at rate | peak with 256 streams | after load | after a second round |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, r in d["rss_mb"].items():
        rows.append(f"| {name} | {_f(r['idle'], 1)} | {_f(r['at_frontier_peak'], 1)} | "
                    f"{_f(r['streams_256_peak'], 1)} | {_f(r['after_load'], 1)} | "
                    f"{_f(r.get('after_second_round'), 1)} |")
    return rows


def _profile(d: dict[str, Any]) -> list[str]:
    rows = [f"wrk c=32 for {d['duration_s']} s: {d['load'].get('rate')} req/s while sampled."]
    for name, p in d["profiles"].items():
        if "error" in p:
            rows += ["", f"{name}: {p['error']}"]
            continue
        rows += ["", f"**{name}** ({p['samples']} samples at 200 Hz)", "",
                 "| own time | frame | | project, inclusive | frame |", "| --- | --- | --- | --- | --- |"]
        for a, b in zip(p["own"][:12], p["project_inclusive"][:12] + [None] * 12, strict=False):
            right = f"{b['share'] * 100:.1f}% | `{b['frame']}`" if b else " | "
            rows.append(f"| {a['share'] * 100:.1f}% | `{a['frame']}` | | {right} |")
    return rows


def _usage(d: dict[str, Any]) -> list[str]:
    if "skipped" in d:
        return [f"Skipped: {d['skipped']}"]
    rows = [f"{d['records']:,} records (bench/usage_query.py).", "", "| query (median) | " +
            " | ".join(d["runs"]) + " |", "| --- |" + " --- |" * len(d["runs"])]
    names = next((list(r["result"]["queries"]) for r in d["runs"].values() if "result" in r), [])
    for q in names:
        cells = [_f(r.get("result", {}).get("queries", {}).get(q, {}).get("median_ms")) for r in d["runs"].values()]
        rows.append(f"| {q} | " + " | ".join(f"{c} ms" for c in cells) + " |")
    return rows


def render() -> str:
    out: list[str] = []
    for lane, fn in (("overhead", _overhead), ("streaming", _streaming), ("peers", _peers),
                     ("embeddings", _embeddings), ("memory", _memory), ("usage", _usage), ("profile", _profile)):
        d = _latest(lane)
        if d is None:
            continue
        out += [f"### {lane} ({d['date']}, `{d['command']}`)", "", *fn(d), ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(render())
