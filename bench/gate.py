"""The machine is shared: wait for it to be quiet before a measurement and record how busy it was.

`busy_cores()` is the whole machine's non-idle CPU over an interval (from /proc/stat). Before each
measurement `wait_quiet()` waits (bounded) until the machine is nearly idle; `Meter` then records
the machine's CPU during the measurement next to the CPU of the processes under test, so that a
run disturbed by something else on the box shows it in its own result.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

from bench.tools import cpu_seconds

__all__ = ["Meter", "busy_cores", "wait_quiet"]


def _stat() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def busy_cores(interval: float = 0.5) -> float:
    b0, t0 = _stat()
    time.sleep(interval)
    b1, t1 = _stat()
    return (b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1)


def wait_quiet(threshold: float = 0.3, max_wait: float = 15.0) -> dict[str, Any]:
    """Wait until the machine uses under `threshold` cores for two samples in a row (or give up)."""
    start = time.monotonic()
    calm, last = 0, 0.0
    while time.monotonic() - start < max_wait:
        last = busy_cores(0.5)
        calm = calm + 1 if last < threshold else 0
        if calm >= 2:
            break
    return {"waited_s": round(time.monotonic() - start, 1), "busy_cores_before": round(last, 2),
            "quiet": calm >= 2}


class Meter:
    """Machine CPU, per-process CPU of the system under test, and the load generator's own CPU."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def __enter__(self) -> Meter:
        self.t0 = time.monotonic()
        self.stat0 = _stat()
        self.cpu0 = {n: cpu_seconds(p) for n, p in self.pids.items()}
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children0 = ru.ru_utime + ru.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        b1, t1 = _stat()
        machine = (b1 - self.stat0[0]) / max(1, t1 - self.stat0[1]) * (os.cpu_count() or 1)
        per = {}
        for name, pid in self.pids.items():
            after, before = cpu_seconds(pid), self.cpu0.get(name)
            if after is not None and before is not None:
                per[name] = (after - before) / wall
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        loadgen = (ru.ru_utime + ru.ru_stime - self.children0) / wall
        # Children that are still running (the platform) are not in RUSAGE_CHILDREN; the load
        # generator has exited by now, so this difference is its CPU.
        self.process_cores = per
        self.result: dict[str, Any] = {"machine_cores": round(machine, 2), "loadgen_cores": round(loadgen, 2),
                       "process_cores": {k: round(v, 3) for k, v in per.items()},
                       "other_cores": round(max(0.0, machine - loadgen - sum(per.values())), 2)}

    def per_request_us(self, requests: int, wall: float) -> dict[str, float]:
        cores: dict[str, float] = self.process_cores
        return {k: round(v * wall / max(1, requests) * 1e6, 1) for k, v in cores.items()}
