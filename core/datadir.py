"""The data directory is the operator's alone: the SQLite database (and its WAL and shared-memory
files), `secrets.toml`, the rendered Envoy configuration and the model weights live there.

Every process of the platform runs with umask 077 (`owner_only`, called first thing by each entry
point), so whatever it creates is owner-only whatever the shell's umask was; SQLite gives the WAL
and shared-memory files the database file's own mode. `secure` also creates the directory 0700 and
takes group and other access off anything already in it (a database made before this rule, weights
fetched by `./nx up` before the platform starts).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["OWNER_ONLY_UMASK", "owner_only", "secure"]

OWNER_ONLY_UMASK = 0o077


def owner_only() -> None:
    """Files and directories this process (and its children) creates are owner-only."""
    os.umask(OWNER_ONLY_UMASK)


def secure(path: Path) -> None:
    owner_only()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in (path, *path.rglob("*")):
        mode = entry.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue  # chmod would follow it out of the directory
        if stat.S_IMODE(mode) & 0o077:
            entry.chmod(stat.S_IMODE(mode) & 0o700)
