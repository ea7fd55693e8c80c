"""tests/lanes.py: a test is marked `process` from what its code and its fixtures do, and in the fast
lane a test that starts a process without the marker fails instead of passing unnoticed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.harness import ROOT
from tests.lanes import _starts


def _pure() -> int:
    return sum(range(3))


def _helper_that_spawns() -> None:
    subprocess.run(["true"], check=True)


def _calls_a_helper() -> None:
    _pure()
    _helper_that_spawns()


def _tag(*words: str) -> Callable[[Callable[[], int]], Callable[[], int]]:
    return lambda f: f


@_tag("NX_TEST_REDIS_URL", "subprocess")  # like parametrize data: a decorator's text is not the code
def _decorated_with_names_only() -> int:
    return 1


def test_classification_follows_the_code() -> None:
    assert not _starts(_pure)
    assert _starts(_helper_that_spawns)
    assert _starts(_calls_a_helper)  # through a helper of the test package
    assert not _starts(_decorated_with_names_only)


def test_the_suite_marks_what_it_must() -> None:
    starts = {  # per kind of process, a module that starts one (or not), and how
        # nx up (the `nx_up` fixture), kill -9 in the body
        "tests/faults/test_supervision.py::test_a_child_killed_under_nx_up_is_restarted_and_the_platform_serves_again":
            True,
        "tests/faults/test_supervision.py::test_restarts_back_off_exponentially_up_to_a_cap": False,
        "tests/foundation/test_orgs_api.py": True,  # the session `platform` fixture
        "tests/compat/test_python_sdk.py": True,  # `sp` -> start_sim_platform
        "tests/local_models/test_local_models_ops.py": True,  # `launch` -> start_server
        "tests/money/test_holds.py": False,  # a database, in-process
        "tests/foundation/test_settings_and_catalog.py": False,
    }
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly",
                          "-m", "not process", *starts], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=False)
    fast = {line for line in run.stdout.splitlines() if "::" in line}
    assert fast, run.stdout + run.stderr
    for prefix, process in starts.items():
        assert any(n.startswith(prefix) for n in fast) != process, (prefix, run.stdout)


HIDDEN = textwrap.dedent('''
    import importlib

    def test_spawns_where_no_sign_shows() -> None:
        importlib.import_module("sub" + "process").run(["true"], check=True)

    def test_pure() -> None:
        assert 1 + 1 == 2
''')


def test_the_fast_lane_fails_a_test_that_starts_a_process_unmarked(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(HIDDEN)
    (tmp_path / "conftest.py").write_text("from tests.lanes import pytest_collection_modifyitems, pytest_configure\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          "-m", "not process", "--rootdir", str(tmp_path), str(tmp_path)],
                         cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "NX_TEST_FAST": "1"},
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout, run.stdout
    assert "starts a process (['true']) but is not marked `process`" in run.stdout, run.stdout
