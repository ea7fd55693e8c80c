"""`python -m bench report [--write]`: docs/benchmarks.md from the newest result of each lane.

The page is a generated part (commands, machine, goals table, one section per lane), then `MARKER`,
then a hand-written tail (analysis, history). `render()` is the generated part; `write()` replaces
everything above the marker and keeps the tail byte for byte, so rerunning the bench and then
`report --write` reproduces the figures without touching what people wrote about them.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report_goals import dig, goals_table
from bench.tools import BENCH, RESULTS

__all__ = ["DOC", "MARKER", "render", "write"]

DOC = BENCH.parent / "docs" / "benchmarks.md"
MARKER = "<!-- end of generated part: everything below is kept by python -m bench report --write -->"


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
    return rows + _stages(d.get("summary", {}).get("stages_c1"))


def _stages(st: dict[str, Any] | None) -> list[str]:
    """The c=1 stage breakdown (bench/stages.py): where the pipeline's added p50 goes."""
    if not st:
        return []
    return ["", "Where the added p50 at c=1 goes (means over the c=1 run, from the platform's own histograms; "
            "bench/stages.py):", "",
            "| added p50 | sidecar check | of it, the hold's commit | adapter to the backend's last byte, "
            "less the backend | settlement commit | Envoy, hops and wake-ups (the rest) |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {_f(st['added_p50_ms'])} | {_f(st['check_ms'])} | {_f(st['hold_ms'])} | "
            f"{_f(st['adapter_before_settle_ms'])} | {_f(st['settlement_ms'])} | {_f(st['edge_and_hops_ms'])} |"]


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


def _fairness(d: dict[str, Any]) -> list[str]:
    if "skipped" in d:
        return [f"Skipped: {d['skipped']}"]
    rows = ["| model | small request | alone | behind another org's work (fair) | behind its own org's work "
            "(first come, first served) |", "| --- | --- | --- | --- | --- |"]
    e, t = d["embeddings"], d["text"]

    def cell(x: dict[str, Any]) -> str:
        return f"{_f(x['median_ms'], 0)} ms (max {_f(x['max_ms'], 0)})"

    rows.append(f"| embeddings | 1 short text, a {e['batch_inputs']}-input batch of 1,000 characters running | "
                f"{cell(e['alone'])} | {cell(e['other_org_fair']['small'])} | {cell(e['same_org_fifo']['small'])} |")
    rows.append(f"| text | 4 tokens, two {t['long_max_tokens']}-token generations ahead (one running) | "
                f"{cell(t['alone'])} | {cell(t['other_org_fair']['small'])} | {cell(t['same_org_fifo']['small'])} |")
    r = d["oversized_refusal"]
    rows += ["", f"The batch itself took {cell(e['other_org_fair']['batch'])}. The issue's request (2,048 inputs "
             f"of 1,000 characters) against the default budget: status {r['status']} in {_f(r['ms'], 0)} ms."]
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


def _failover(d: dict[str, Any]) -> list[str]:
    rows = [f"{d['rate_per_s']} req/s open loop for {d['duration_s']} s per scenario; upstream "
            f"{d['upstream_ms']} ms. Added: a scenario's p50/p99 minus the same system's in `healthy`.", "",
            "| system | scenario | success | p50 (ms) | p99 (ms) | added p50 | added p99 | statuses |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for system, scenarios in d["results"].items():
        for name, r in scenarios.items():
            rows.append(f"| {system} | {name} | {r['success_rate'] * 100:.1f}% | {_f(r.get('p50_ms'))} | "
                        f"{_f(r.get('p99_ms'))} | {_f(r.get('added_p50_ms'))} | {_f(r.get('added_p99_ms'))} | "
                        f"{r['statuses']} |")
    return rows


def _about(lane: str) -> str:
    """The first sentence of bench/lane_<lane>.py's docstring: the lane says itself what it measures."""
    path = BENCH / f"lane_{lane.removesuffix('-postgresql')}.py"
    doc = ast.get_docstring(ast.parse(path.read_text())) if path.exists() else None
    found = re.match(r"(.+?\.)(\s|$)", " ".join((doc or "").split()))
    return found.group(1) if found else ""


def _other_cores(v: Any) -> list[float]:
    """Every `cpu.other_cores` in a result (each gated measurement records one)."""
    if isinstance(v, list):
        return [x for c in v for x in _other_cores(c)]
    if not isinstance(v, dict):
        return []
    own = v.get("other_cores")
    return ([float(own)] if isinstance(own, int | float) else []) + [x for c in v.values() for x in _other_cores(c)]


def _machine(found: dict[str, dict[str, Any]]) -> list[str]:
    """Each machine field once; a field that differs between lanes (a kernel update) lists each value's lanes."""
    parts = []
    for key, label in (("nproc", "cores: "), ("memory_gib", "memory GiB: "), ("cpu", "CPU: "), ("kernel", "kernel "),
                       ("python", "Python "), ("wrk", "")):
        seen: dict[str, list[str]] = {}
        for lane, d in found.items():
            seen.setdefault(str(dig(d, "machine", key)), []).append(lane)
        values = [f"{v} ({', '.join(lanes)})" for v, lanes in seen.items()] if len(seen) > 1 else list(seen)
        parts.append(label + " / ".join(values))
    return [f"Machine: {'; '.join(parts)}."] if found else []


def _runs(found: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| lane | date (UTC) | command | quick | wall (s) | database | other work (cores) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for lane, d in found.items():
        other = _other_cores({k: v for k, v in d.items() if k != "machine"})
        spread = sorted({f"{min(other):.2f}", f"{max(other):.2f}"}) if other else ["-"]
        rows.append(f"| {lane} | {str(d.get('date', '-'))[:16].replace('T', ' ')} | `{d.get('command')}` | "
                    f"{'yes' if d.get('quick') else 'no'} | {_f(d.get('wall_s'), 1)} | {_f(d.get('database'))} | "
                    f"{'-'.join(spread)} |")
    return rows


def _intro(found: dict[str, dict[str, Any]]) -> list[str]:
    return [
        "Generated by `.venv/bin/python -m bench report --write` from the newest result of each lane in "
        "bench/results/ (everything down to the marker line; the text after it is written by hand). To "
        "reproduce: `apt-get install -y wrk` once; `.venv/bin/python -m bench run` runs every lane, one "
        "after another; `NX_TEST_DATABASE=postgresql .venv/bin/python -m bench run --lane overhead` runs "
        "the overhead lane with the platform on PostgreSQL; `.venv/bin/python -m bench report --write` "
        "regenerates this page.", "",
        *_machine(found), "",
        "The load generator, the simulator, Envoy and every platform process share these cores, and the "
        "machine is shared with other work: each gated measurement records the cores busy with something "
        "else while it ran (`cpu.other_cores`), shown per lane below.", "",
        *_runs(found)]


def _observability(d: dict[str, Any]) -> list[str]:
    goal = d["goal"]
    rows = [f"Goal: under {goal['throughput_loss_pct_max']} % of throughput and {goal['added_p50_ms_max']} ms at p50 "
            f"(means of {len(d['rounds'])} rounds, alternating order; {d['spans_received']:,} spans received).", "",
            "| configuration | p50 c=1 (ms) | added p50 | added p99 | max req/s (c=64) | throughput change "
            "| platform CPU us/request | CPU change |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in d["summary"].items():
        rows.append(f"| {name} | {_f(s['p50_ms'], 3)} | {_f(s['added_p50_ms'], 3)} | {_f(s['added_p99_ms'], 3)} | "
                    f"{_f(s['rate'], 0)} | {_f(s['throughput_change_pct'])} % | {_f(s.get('cpu_us_per_request'), 0)} "
                    f"| {_f(s.get('cpu_change_pct'))} % |")
    hooks = d.get("hooks_cpu_us")
    if hooks:
        rows += ["", "The hooks' own CPU per request, in process (bench/observability_hooks.py):", "",
                 "| configuration | sidecar (us) | adapter (us) | group commit (us) | total (us) |",
                 "| --- | --- | --- | --- | --- |"]
        rows += [f"| {name} | {_f(p['sidecar'])} | {_f(p['adapter'])} | {_f(p['groupcommit'])} | {_f(p['total'])} |"
                 for name, p in hooks.items()]
    return rows


Renderer = Callable[[dict[str, Any]], list[str]]
_LANES: tuple[tuple[str, str, Renderer], ...] = (
    ("overhead", "Overhead", _overhead), ("streaming", "Streaming", _streaming), ("peers", "Peers", _peers),
    ("embeddings", "Embeddings", _embeddings), ("memory", "Memory", _memory), ("usage", "Usage", _usage),
    ("profile", "Profile", _profile), ("fairness", "Local model fairness", _fairness),
    ("observability", "Observability", _observability), ("failover", "Failover", _failover))
SECTIONS: tuple[tuple[str, str, Renderer], ...] = tuple(
    section for lane, title, fn in _LANES
    # The usage lane measures both databases in one result; every other lane runs the platform on
    # one, so a PostgreSQL run (NX_TEST_DATABASE=postgresql) gets its own section beside SQLite's.
    for section in ((lane, title, fn),)
    + (() if lane == "usage" else ((f"{lane}-postgresql", f"{title} on PostgreSQL", fn),)))
OPTIONAL = {"observability", "failover"} | {lane for lane, _, _ in SECTIONS if lane.endswith("-postgresql")}
"""Sections left out when their lane has no result; the others say "not measured"."""


def render() -> str:
    """The generated part of docs/benchmarks.md; the same results always give the same text."""
    found = {lane: d for lane, _, _ in SECTIONS if (d := _latest(lane)) is not None}
    out = ["# Benchmarks", "", *_intro(found), "", "## Goals", "", *goals_table(found), ""]
    for lane, title, fn in SECTIONS:
        d = found.get(lane)
        if d is None and lane in OPTIONAL:
            continue
        out += [f"## {title}", "", _about(lane), ""]
        if d is None:
            out += ["Not measured: no result in bench/results/.", ""]
            continue
        run = [f"`{d.get('command')}`", str(d.get("date"))[:10], d.get("database"), d.get("quick") and "--quick"]
        out += [f"From {', '.join(str(x) for x in run if x)}.", "", *fn(d), ""]
    return "\n".join(out)


def write(path: Path | None = None) -> Path:
    """Replace the page above `MARKER` with `render()`; keep every byte after the marker."""
    path = path or DOC
    old = path.read_bytes() if path.exists() else b""
    at = old.find(MARKER.encode())
    tail = old[at + len(MARKER):] if at >= 0 else b"\n"
    path.write_bytes((render() + "\n" + MARKER).encode() + tail)
    return path


if __name__ == "__main__":
    print(render(), end="")
