"""The `process` marker and the fast lane: a pytest plugin (loaded by tests/conftest.py).

A test is marked `process` when it, a fixture it uses (directly or through other fixtures) or a
helper of the test package that either calls starts a process or needs a server of the run (Redis):
the platform, the provider simulator, the local model server, `nx up`, node, a Redis URL. Nobody has
to remember the marker: it is read from the code. `./nx test --fast` runs `-m "not process"` on SQLite
with NX_TEST_FAST=1, and there any attempt to start a process fails the test with a message that
says to mark it, so the classification cannot silently go wrong.

A few tests start nothing but take seconds each (tens of thousands of rows, hundreds of hypothesis
examples): HEAVY marks them `heavy`, and the fast lane leaves them out too, to stay within a minute.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import textwrap
import types
from typing import Any

import pytest

__all__ = ["FAST_ENV", "pytest_collection_modifyitems", "pytest_configure", "starts_processes"]

FAST_ENV = "NX_TEST_FAST"
SIGNS = ("Platform(", "start_sim_platform(", "SimulatorProcess(", "subprocess", "Popen(", "start_server(",
         "start_local_models(", "os.fork", "multiprocessing", "RedisStore(", "NX_TEST_REDIS_URL", "from_url(")
"""Text in a function's body that means it starts a process or needs a running server."""
PROCESS_MODULES = frozenset({"subprocess", "multiprocessing", "asyncio.subprocess"})
HEAVY = (
    "tests/usage/test_exports.py::test_large_export_streams_in_bounded_chunks",
    "tests/usage/test_exports.py::test_ledger_statement_export_has_running_balances",
    "tests/usage/test_exports.py::test_usage_export_reconciles_to_the_ledger",
    "tests/usage/test_query.py::test_query_equals_brute_force",
    "tests/usage/test_rollups.py::test_rollup_plus_tail_equals_raw",
    "tests/usage/test_rollups.py::test_two_workers_roll_each_record_once",
    "tests/money/test_thresholds_and_floats.py::test_budget_thresholds_fire_once_each",
    "tests/money/test_properties.py",
)
"""Node ids (or their prefixes) of in-process tests that take seconds each (measured, --durations)."""


def _body(obj: Any) -> str:
    """The source without decorators (a parametrize list may name REDIS_URL as plain data)."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return ""
    for i, line in enumerate(source.splitlines()):
        if line.lstrip().startswith(("def ", "async def ", "class ")):
            return "\n".join(source.splitlines()[i:])
    return source


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _ours(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("tests")


@functools.cache
def _starts(obj: Any, depth: int = 3) -> bool:
    if any(sign in _body(obj) for sign in SIGNS):
        return True
    if depth == 0:
        return False
    functions = [obj] if inspect.isfunction(obj) else [m for m in vars(obj).values() if inspect.isfunction(m)] \
        if inspect.isclass(obj) else []
    for fn in functions:
        for name in _names(fn.__code__):
            ref = fn.__globals__.get(name)
            if isinstance(ref, types.ModuleType) and ref.__name__ in PROCESS_MODULES:
                return True
            if ref is not obj and (inspect.isfunction(ref) or inspect.isclass(ref)) and _ours(ref) \
                    and _starts(ref, depth - 1):
                return True
    return False


def starts_processes(item: pytest.Item) -> bool:
    """Whether the test, or any fixture in its closure, starts a process (see SIGNS)."""
    function = getattr(item, "function", None)
    if function is not None and _starts(function):
        return True
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in (info.name2fixturedefs.get(name, ()) if info is not None else ()):
            func = fixturedef.func
            if _ours(func) and _starts(func):
                return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "process: starts a process or needs a server (set automatically; "
                                       "`./nx test --fast` runs the tests without it)")
    config.addinivalue_line("markers", "heavy: starts nothing but takes seconds (tests/lanes.py HEAVY); "
                                       "not in the fast lane")
    if os.environ.get(FAST_ENV) == "1":
        _forbid_processes()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if starts_processes(item):
            item.add_marker(pytest.mark.process)
        if item.nodeid.startswith(HEAVY):
            item.add_marker(pytest.mark.heavy)


def _forbid_processes() -> None:
    """In the fast lane a test that starts a process anyway fails, naming what it started."""
    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        pytest.fail(f"this test starts a process ({args!r}) but is not marked `process`: the fast lane "
                    f"runs only tests that start none. Mark it with @pytest.mark.process, or let "
                    f"tests/lanes.py recognise it (SIGNS).", pytrace=False)

    subprocess.Popen.__init__ = refuse  # type: ignore[method-assign]
