"""tests/leakcheck.py: a session that leaves a process running fails, and the process is ended;
also one that a test's child forked and abandoned (re-parented to pytest, the subreaper)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.harness import ROOT
from tests.leakcheck import descendants

LEAKY = textwrap.dedent('''
    import subprocess

    def test_leaves_a_child() -> None:
        subprocess.Popen(["sleep", "301"])

    def test_leaves_an_orphan() -> None:
        # the shell exits at once; its background sleep loses its parent
        subprocess.run(["sh", "-c", "sleep 302 >/dev/null 2>&1 &"], check=True)
''')
TIDY = textwrap.dedent('''
    import subprocess

    def test_waits_for_its_child() -> None:
        subprocess.run(["sleep", "0.1"], check=True)
''')


def _session(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(source)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "-p", "tests.leakcheck", "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
                          cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120, check=False)


def _running(cmdline: str) -> bool:
    return any(p.cmdline == cmdline for p in descendants(1))


def test_a_session_that_leaves_processes_fails_and_ends_them(tmp_path: Path) -> None:
    run = _session(tmp_path, LEAKY)
    assert "2 passed" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 1, run.stdout
    assert "the test run left 2 process(es) running; killed them:" in run.stdout, run.stdout
    assert "sleep 301" in run.stdout and "sleep 302" in run.stdout
    time.sleep(0.2)
    assert not _running("sleep 301") and not _running("sleep 302")


def test_a_tidy_session_passes(tmp_path: Path) -> None:
    run = _session(tmp_path, TIDY)
    assert run.returncode == 0 and "left" not in run.stdout, run.stdout + run.stderr
