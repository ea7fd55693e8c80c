"""`python -m bench report [--write]` on synthetic results shaped like bench/results/*.json.

The goals table must follow the figures in the files (both sides of every threshold), say "not
measured" for a missing lane, and `--write` must keep the hand-written tail of the page byte for
byte and give the same file when run twice.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import bench.report
import bench.tools
from bench.__main__ import main
from bench.report import MARKER, render, write

MACHINE = {"nproc": 2, "memory_gib": 23.5, "cpu": "AMD EPYC", "kernel": "6.18.44", "python": "3.11.7",
           "wrk": "wrk debian/4.1.0-3+b2 [epoll]", "loadavg_at_start": [0.5, 0.5, 0.5]}
DATE = "2026-12-02T10:00:00+00:00"


def _head(lane: str, date: str = DATE, **extra: Any) -> dict[str, Any]:
    return {"lane": lane, "date": date, "command": f"python -m bench run --lane {lane}", "machine": MACHINE,
            "quick": False, "wall_s": 10.0, "database": "sqlite", **extra}


def _wrk(p50: float, p99: float, rate: float, other: float = 0.05) -> dict[str, Any]:
    c1 = {"requests": 100, "errors": 0, "status_errors": 0, "timeouts": 0, "p50": p50, "p90": p50, "p99": p99,
          "p99.9": p99, "max": p99, "rate": 100.0, "connections": 1, "ok": 100}
    top = {**c1, "rate": rate, "connections": 64,
           "cpu": {"machine_cores": 1.5, "loadgen_cores": 0.1, "process_cores": {}, "other_cores": other},
           "cpu_us_per_request": {"simulator": 90.0, "sidecar": 300.0}}
    return {"c1": c1, "max_rate": top, "gates": [{"waited_s": 1.0, "busy_cores_before": 0.1, "quiet": True}]}


def _overhead(pipeline_rate: float = 2_500.0, plain_rate: float = 6_000.0, p50: float = 6.0, p99: float = 9.0,
              frontier: float = 1_500.0, **head: Any) -> dict[str, Any]:
    steps = [{"rate": 1500, "achieved": 1500.0, "p50": 6.0, "p99": 12.0, "added_p99": 5.0, "errors": 0,
              "statuses": {"200": 9000}, "within": True},
             {"rate": 2000, "achieved": 1800.0, "p50": 30.0, "p99": 80.0, "added_p99": 73.0, "errors": 0,
              "statuses": {"200": 9000}, "within": False}]
    return {**_head("overhead", **head), "upstream_ms": 5, "duration_s": 10.0,
            "targets": {"direct": _wrk(5.0, 6.0, 8_000.0), "plain_envoy": _wrk(5.5, 7.0, plain_rate),
                        "pipeline": _wrk(p50, p99, pipeline_rate, other=0.33)},
            "frontier": {"limit_added_p99_ms": 10.0, "baseline_p99_ms": 7.0, "rate": frontier, "steps": steps}}


def _peers(ratio: float = 15.0, portkey: float = 2.0) -> dict[str, Any]:
    return {**_head("peers"), "duration_s": 10.0,
            "targets": {"direct": _wrk(5.0, 6.0, 8_000.0), "pipeline": _wrk(6.0, 9.0, 1_500.0),
                        "litellm": _wrk(18.0, 100.0, 100.0), "portkey": _wrk(6.0, 9.0, 750.0)},
            "ratios": {"litellm": {"max_rate_ours_over_theirs": ratio, "added_p50_theirs_over_ours": 13.0,
                                   "p99_c1_theirs_over_ours": 10.0},
                       "portkey": {"max_rate_ours_over_theirs": portkey, "added_p50_theirs_over_ours": 1.0,
                                   "p99_c1_theirs_over_ours": 1.0}},
            "features": {"pipeline": "everything", "litellm": "master key", "portkey": "routing"},
            "versions": {"litellm": "1.108.7", "portkey": "1.0.0"}}


def _streams(stalls: int, failed: int = 0) -> dict[str, Any]:
    return {"requests": 20, "ok": 20 - failed, "errors": 0, "statuses": {"200": 20}, "rate": 2.0,
            "latency_ms": {"p50": 512.0, "p99": 520.0}, "connections": 1,
            "ttft_ms": {"p50": 6.0, "p90": 6.5, "p99": 7.0},
            "gap_ms": {"p50": 25.0, "p90": 25.5, "p99": 26.0, "p99.9": 27.0, "max": 28.0}, "stalls": stalls,
            "cpu": {"machine_cores": 0.2, "loadgen_cores": 0.01, "process_cores": {}, "other_cores": 1.2}}


def _streaming(ttft: float = 1.0, stalls: int = 0, ttft_256: float = 15.0) -> dict[str, Any]:
    levels = ("1", "64", "256")
    return {**_head("streaming"), "first_byte_ms": 5, "chunk_ms": 25, "chunks": 16, "stall_threshold_ms": 250,
            "duration_s": 10.0,
            "targets": {"direct": {c: _streams(0) for c in levels},
                        "pipeline": {"1": _streams(0), "64": _streams(0), "256": _streams(stalls)}},
            "summary": {"pipeline": {c: {"added_ttft_p50_ms": {"1": ttft, "256": ttft_256}.get(c, 50.0), "stalls": 0}
                                     for c in levels},
                        # Plain Envoy's added TTFT at 256 streams is 10 ms: the pipeline may add 5 more.
                        "plain_envoy": {c: {"added_ttft_p50_ms": 10.0 if c == "256" else 0.5, "stalls": 0}
                                        for c in levels}}}


def _memory(peak: float = 299.9, growth: float = 10.0) -> dict[str, Any]:
    def rss(p: float) -> dict[str, float]:
        return {"idle": 70.0, "at_frontier_peak": 75.0, "streams_256_peak": p, "after_load": 80.0,
                "after_second_round": 80.0 + growth}
    return {**_head("memory"), "rate": 38, "rate_from": "frontier", "duration_s": 30.0,
            "rss_mb": {"sidecar": rss(peak), "control-plane": rss(90.0), "adapter": rss(500.0)}}


def _usage(sqlite_ms: float | None = 199.9, pg_ms: float | None = 150.0, records: int = 10_000_000) -> dict[str, Any]:
    def run(ms: float | None) -> dict[str, Any]:
        if ms is None:
            return {"returncode": 1, "stderr_tail": "connection refused"}
        q = {"params": {"bucket_width": "1d"}, "pages": 1, "results": 240, "median_ms": ms, "runs": 5}
        return {"returncode": 0, "stderr_tail": "",
                "result": {"records": records, "queries": {"30d_1d_by_model": q, "7d_1h_by_project_one_page": q}}}
    return {**_head("usage"), "records": records, "runs": {"sqlite": run(sqlite_ms), "postgresql": run(pg_ms)}}


def _others() -> dict[str, dict[str, Any]]:
    return {
        "embeddings": {**_head("embeddings"), "duration_s": 10.0, "concurrency": 2,
                       "targets": {"direct": {"1": {"rate": 149.0, "texts_per_s": 149.0, "statuses": {"200": 10},
                                                    "latency_ms": {"p50": 13.0, "p99": 22.0}}}},
                       "cache": {"probe": {"first": "miss", "second": "hit"}}},
        "profile": {**_head("profile"), "duration_s": 20, "load": {"rate": 56.9},
                    "profiles": {"sidecar": {"samples": 100, "own": [{"frame": "f (a.py:1)", "share": 0.5}],
                                             "project_inclusive": [{"frame": "g (b.py:2)", "share": 0.4}]},
                                 "adapter": {"error": "py-spy failed"}}},
    }


def _good() -> dict[str, dict[str, Any]]:
    """Every goal exactly at its threshold (met), overhead also on PostgreSQL."""
    pg = _overhead(pipeline_rate=88.0, p50=20.0, p99=30.0, frontier=0.0)
    pg.update(lane="overhead-postgresql", database="postgresql")
    return {"overhead": _overhead(), "overhead-postgresql": pg, "peers": _peers(), "streaming": _streaming(),
            "memory": _memory(), "usage": _usage(), **_others()}


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "results"
    out.mkdir()
    monkeypatch.setattr(bench.tools, "RESULTS", out)
    monkeypatch.setattr(bench.report, "RESULTS", out)
    return out


def _save(results: Path, lanes: dict[str, dict[str, Any]]) -> None:
    for lane, data in lanes.items():
        (results / f"{data['date'][:10]}-{lane}.json").write_text(json.dumps(data))


def _goals(text: str) -> dict[str, tuple[str, str]]:
    """Goal cell -> (measured, met), from the table under `## Goals`."""
    section = text.split("## Goals\n\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in section]
    return {goal: (measured, met) for goal, measured, met in cells}


def _met(goals: dict[str, tuple[str, str]], prefix: str) -> str:
    (hit,) = [met for goal, (_, met) in goals.items() if goal.startswith(prefix)]
    return hit


# goal prefix -> (lane, builder arguments putting the figure just past the threshold)
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "full pipeline max rate": ("overhead", {"pipeline_rate": 1_499.9}),
    "SQLite full pipeline max rate": ("overhead", {"pipeline_rate": 2_499.9}),
    ">= 2x Portkey": ("peers", {"portkey": 1.99}),
    "streaming: added TTFT p50 at 256": ("streaming", {"ttft_256": 15.01}),
    ">= 15x LiteLLM": ("peers", {"ratio": 14.9}),
    "added p50": ("overhead", {"p50": 6.01}),
    "added p99": ("overhead", {"p99": 9.01}),
    "frontier": ("overhead", {"frontier": 1_250.0}),
    "streaming: added TTFT p50 <=": ("streaming", {"ttft": 1.01}),
    "streaming: no stalls": ("streaming", {"stalls": 1}),
    "sidecar and control-plane RSS": ("memory", {"peak": 300.0}),
    "no RSS growth": ("memory", {"growth": 10.1}),
    "`/v1/usage`": ("usage", {"sqlite_ms": 200.0}),
}
BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {"overhead": _overhead, "peers": _peers, "streaming": _streaming,
                                                     "memory": _memory, "usage": _usage}


def test_every_goal_met_at_its_threshold(results: Path) -> None:
    _save(results, _good())
    goals = _goals(render())
    assert len(goals) == 17
    for prefix in ROWS:
        assert _met(goals, prefix) == "yes", prefix
    assert _met(goals, "moonshot") == "no"  # 2,500 req/s is not 3,000
    measured = goals[next(g for g in goals if g.startswith("full pipeline"))][0]
    assert "SQLite 2,500 req/s" in measured and "PostgreSQL 88 req/s" in measured
    assert "plain Envoy (listener + router only) 6,000 req/s" in _goals(render())[
        next(g for g in goals if g.startswith("moonshot"))][0]


@pytest.mark.parametrize("prefix", list(ROWS))
def test_each_goal_not_met_past_its_threshold(results: Path, prefix: str) -> None:
    lanes = _good()
    lane, kwargs = ROWS[prefix]
    lanes[lane] = BUILDERS[lane](**kwargs)
    _save(results, lanes)
    goals = _goals(render())
    assert _met(goals, prefix) == "no"
    others = [p for p in ROWS if p != prefix and ROWS[p][0] != lane]
    assert all(_met(goals, p) == "yes" for p in others)


def test_postgresql_goals_of_issue_17(results: Path) -> None:
    lanes = _good()
    lanes["overhead-postgresql"] = _overhead(pipeline_rate=1_500.0, p50=6.5, frontier=1_000.0)
    lanes["overhead-postgresql"].update(lane="overhead-postgresql", database="postgresql")
    _save(results, lanes)
    goals = _goals(render())
    assert [_met(goals, p) for p in ("PostgreSQL full pipeline", "PostgreSQL added p50", "both databases: frontier")] \
        == ["yes", "yes", "yes"]
    lanes["overhead-postgresql"] = _overhead(pipeline_rate=1_499.0, p50=6.51, frontier=999.0)
    lanes["overhead-postgresql"].update(lane="overhead-postgresql", database="postgresql")
    _save(results, lanes)
    goals = _goals(render())
    assert [_met(goals, p) for p in ("PostgreSQL full pipeline", "PostgreSQL added p50", "both databases: frontier")] \
        == ["no", "no", "no"]


def test_streaming_on_postgresql_sits_beside_sqlite(results: Path) -> None:
    lanes = _good()
    lanes["streaming-postgresql"] = _streaming(ttft=1.0)
    lanes["streaming-postgresql"].update(lane="streaming-postgresql", database="postgresql")
    _save(results, lanes)
    text = render()
    goals = _goals(text)
    row = next(g for g in goals if g.startswith("streaming: added TTFT p50 <="))
    assert "SQLite +1.00 ms" in goals[row][0] and "PostgreSQL +1.00 ms" in goals[row][0]
    assert _met(goals, "streaming: added TTFT p50 <=") == "yes" and "## Streaming on PostgreSQL\n" in text
    lanes["streaming-postgresql"] = _streaming(ttft=1.01)  # within on SQLite, over on PostgreSQL: not met
    lanes["streaming-postgresql"].update(lane="streaming-postgresql", database="postgresql")
    _save(results, lanes)
    assert _met(_goals(render()), "streaming: added TTFT p50 <=") == "no"


def test_moonshot_met_at_3000(results: Path) -> None:
    lanes = _good()
    lanes["overhead"] = _overhead(pipeline_rate=3_000.0)
    _save(results, lanes)
    assert _met(_goals(render()), "moonshot") == "yes"


def test_missing_lanes_are_not_measured(results: Path) -> None:
    lanes = _good()
    for lane in ("peers", "streaming", "memory", "overhead-postgresql"):
        del lanes[lane]
    _save(results, lanes)
    text = render()
    goals = _goals(text)
    for prefix in (">= 15x LiteLLM", "streaming: added TTFT p50 <=", "streaming: no stalls", "sidecar and control-plane",
                   "no RSS growth"):
        assert _met(goals, prefix) == "not measured", prefix
    assert _met(goals, "full pipeline max rate") == "yes"
    assert "PostgreSQL" not in goals[next(g for g in goals if g.startswith("full pipeline"))][0]
    for prefix in ("PostgreSQL full pipeline", "PostgreSQL added p50", "both databases: frontier"):
        assert _met(goals, prefix) == "not measured", prefix
    assert "## Peers\n" in text and "Not measured: no result" in text
    assert "## Overhead on PostgreSQL" not in text


def test_nothing_at_all_still_renders(results: Path) -> None:
    goals = _goals(render())
    assert {met for _, met in goals.values()} == {"not measured"}


def test_usage_below_goal_size_or_one_database_is_not_measured(results: Path) -> None:
    lanes = _good()
    for usage, want in ((_usage(records=200_000), "not measured"), (_usage(pg_ms=None), "not measured"),
                        (_usage(pg_ms=None, sqlite_ms=250.0), "no")):
        lanes["usage"] = usage
        _save(results, lanes)
        assert _met(_goals(render()), "`/v1/usage`") == want


def test_old_results_are_flagged(results: Path) -> None:
    lanes = _good()
    lanes["peers"]["date"] = "2026-11-30T09:00:00+00:00"  # more than a day before the overhead run
    lanes["streaming"]["date"] = "2026-12-01T11:00:00+00:00"  # within a day
    _save(results, lanes)
    goals = _goals(render())
    litellm = goals[next(g for g in goals if g.startswith(">= 15x"))][0]
    ttft = goals[next(g for g in goals if g.startswith("streaming: added TTFT p50 <="))][0]
    assert "measured 2026-11-30" in litellm
    assert "measured" not in ttft


def test_newest_result_of_a_lane_wins(results: Path) -> None:
    lanes = _good()
    _save(results, lanes)
    older = copy.deepcopy(lanes["overhead"])
    older["date"] = "2026-11-01T00:00:00+00:00"
    older["targets"]["pipeline"]["max_rate"]["rate"] = 10.0
    _save(results, {"overhead": older})
    assert _met(_goals(render()), "full pipeline max rate") == "yes"


def test_page_header_sections_and_machine(results: Path) -> None:
    _save(results, _good())
    text = render()
    assert text.startswith("# Benchmarks\n")
    for command in ("apt-get install -y wrk", ".venv/bin/python -m bench run`",
                    "NX_TEST_DATABASE=postgresql .venv/bin/python -m bench run --lane overhead",
                    ".venv/bin/python -m bench report --write"):
        assert command in text
    assert "Machine: cores: 2; memory GiB: 23.5; CPU: AMD EPYC; kernel 6.18.44;" in text
    assert "| overhead | 2026-12-02 10:00 | `python -m bench run --lane overhead` |" in text
    assert "| 0.05-0.33 |" in text  # other-work cores seen in the overhead lane's measurements
    for title in ("Overhead", "Overhead on PostgreSQL", "Streaming", "Peers", "Embeddings", "Memory", "Usage",
                  "Profile"):
        assert f"\n## {title}\n" in text
    assert "Overhead lane: the same non-streaming chat request" in text  # from bench/lane_overhead.py
    assert MARKER not in text


def test_write_keeps_the_tail_byte_for_byte_and_is_idempotent(results: Path, tmp_path: Path) -> None:
    _save(results, _good())
    doc = tmp_path / "benchmarks.md"
    tail = "\n## Problems found\n\ncrlf line\r\ntrailing space   \n\tü €\n<!-- another comment -->no final newline"
    doc.write_bytes(("# Old generated part\n\nstale figures\n" + MARKER + tail).encode())
    write(doc)
    first = doc.read_bytes()
    assert first == (render() + "\n" + MARKER).encode() + tail.encode()
    assert b"stale figures" not in first
    write(doc)
    assert doc.read_bytes() == first


def test_write_without_marker_starts_an_empty_tail(results: Path, tmp_path: Path) -> None:
    _save(results, _good())
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nhand-written, no marker\n")
    write(doc)
    assert doc.read_text() == render() + "\n" + MARKER + "\n"
    write(tmp_path / "new.md")
    assert (tmp_path / "new.md").read_text() == doc.read_text()


def test_cli(results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> None:
    _save(results, _good())
    doc = tmp_path / "benchmarks.md"
    monkeypatch.setattr(bench.report, "DOC", doc)
    main(["report"])
    assert capsys.readouterr().out == render()
    assert not doc.exists()
    doc.write_text(MARKER + "\nkept\n")
    main(["report", "--write"])
    assert doc.read_text() == render() + "\n" + MARKER + "\nkept\n"


def test_every_lane_has_a_postgresql_section_beside_sqlite(results: Path) -> None:
    lanes = _good()
    for lane in ("embeddings", "profile", "memory"):
        pg = copy.deepcopy(lanes[lane])
        pg.update(lane=f"{lane}-postgresql", database="postgresql")
        lanes[f"{lane}-postgresql"] = pg
    _save(results, lanes)
    text = render()
    for title in ("Embeddings", "Profile", "Memory"):
        assert text.index(f"\n## {title}\n") < text.index(f"\n## {title} on PostgreSQL\n")
    assert "\n## Usage on PostgreSQL\n" not in text  # the usage lane measures both databases in one run
    assert "\n## Failover" not in text  # optional: no result, no section


STAGE_PAGE = """# HELP nx_sidecar_check_duration_seconds Time the sidecar spent on one check, hold included.
nx_sidecar_check_duration_seconds_bucket{endpoint="chat",status="200",le="0.001"} 3.0
nx_sidecar_check_duration_seconds_sum{endpoint="chat",status="200"} %(check)s
nx_sidecar_check_duration_seconds_count{endpoint="chat",status="200"} %(n)s
nx_groupcommit_latency_seconds_sum{name="hold"} %(hold)s
nx_groupcommit_latency_seconds_count{name="hold"} %(n)s
nx_groupcommit_latency_seconds_sum{name="settlement"} 99.0
nx_groupcommit_latency_seconds_count{name="settlement"} 1.0
nx_upstream_duration_seconds_sum{endpoint="chat",model="m",status="200"} %(up)s
nx_upstream_duration_seconds_count{endpoint="chat",model="m",status="200"} %(n)s
nx_settlement_duration_seconds_sum{endpoint="chat"} %(settle)s
nx_settlement_duration_seconds_count{endpoint="chat"} %(n)s
"""


def test_stages_are_means_over_the_run_and_the_rest_is_the_edge() -> None:
    from bench.stages import breakdown, parse

    before = parse(STAGE_PAGE % {"check": 1.0, "hold": 0.5, "up": 10.0, "settle": 2.0, "n": 100})
    # 1,000 more requests: check 1.5 ms each (hold 0.7), upstream 6 ms, settlement 1.2 ms.
    after = parse(STAGE_PAGE % {"check": 2.5, "hold": 1.2, "up": 16.0, "settle": 3.2, "n": 1100})
    st = breakdown(before, after, added_p50_ms=4.0, backend_ms=5.5)
    assert st == {"added_p50_ms": 4.0, "check_ms": 1.5, "hold_ms": 0.7, "adapter_before_settle_ms": 0.5,
                  "settlement_ms": 1.2, "edge_and_hops_ms": 0.8}
    assert breakdown(after, after, 4.0, 5.5)["edge_and_hops_ms"] is None  # no request in between


def test_overhead_section_shows_the_stages(results: Path) -> None:
    lanes = _good()
    lanes["overhead"]["summary"] = {"stages_c1": {"added_p50_ms": 4.0, "check_ms": 1.5, "hold_ms": 0.7,
                                                  "adapter_before_settle_ms": 0.5, "settlement_ms": 1.2,
                                                  "edge_and_hops_ms": 0.8}}
    _save(results, lanes)
    text = render()
    overhead = text.split("\n## Overhead\n", 1)[1].split("\n## ", 1)[0]
    assert "| 4.00 | 1.50 | 0.70 | 0.50 | 1.20 | 0.80 |" in overhead
    assert "Where the added p50 at c=1 goes" not in text.split("\n## Overhead on PostgreSQL\n", 1)[1]
