"""A test run leaves no process behind: a pytest plugin (loaded by tests/conftest.py).

At the start of the session the pytest process becomes a child subreaper (Linux prctl), so a
process that a test's child forked and then lost (a daemon, a grandchild whose parent was killed)
is re-parented to pytest instead of to init, and stays findable. At the end of the session, after
every fixture is torn down, /proc is walked for pytest's descendants: any that survives a short
grace period is listed, killed, and the run fails, whatever the tests said.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Proc", "descendants", "pytest_sessionfinish", "pytest_sessionstart"]

_PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 10.0
"""How long a process that is on its way out (SIGTERM sent, exit under way) may take."""


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    cmdline: str


def _read(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    rest = stat[stat.rindex(")") + 2:].split()
    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip() or stat[stat.index("("):stat.rindex(")") + 1]
    return Proc(pid, int(rest[1]), rest[0], cmdline)


def descendants(root: int | None = None) -> list[Proc]:
    """Every live (not zombie) process below `root` (default: this one), from /proc."""
    root = os.getpid() if root is None else root
    procs = [p for p in (_read(int(d.name)) for d in Path("/proc").iterdir() if d.name.isdigit()) if p is not None]
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child.pid)
    return [p for p in out if p.state != "Z"]


def _reap() -> None:
    """Collect exited children (a subreaper inherits orphans nobody else waits for)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


def pytest_sessionstart(session: pytest.Session) -> None:
    if Path("/proc/self/stat").exists():
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not Path("/proc/self/stat").exists():
        return
    deadline = time.monotonic() + GRACE_S
    while (left := descendants()) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.1)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"the test run left {len(left)} process(es) running; killed them:"]
    lines += [f"  pid {p.pid} (parent {p.ppid}): {p.cmdline[:300]}" for p in left]
    for p in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)
    _reap()
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line, red=True, bold=True)
    else:
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
