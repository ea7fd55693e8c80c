"""The served-output journal's format, shared by its writer and its readers.

The adapter (proxy_plugins/adapter/journal.py) writes what each billed stream has sent to a file
per process under `<data_dir>/journal/`, before the bytes go out; its settler
(proxy_plugins/adapter/settler.py) charges what was served and not settled; reconcile
(core/ledger/reconcile.py) reports it until then. Lines, one `os.write` each:

    O <request> <backend timeout ms> <input estimate> <input known>   first content event relayed
    S <request> <output produced> <input known>                       each content event, before it goes out
    F <request> <status> <input> <cached> <output>                    ended, its settlement failed
    D <request>                                                       settled (or nothing to settle)

A writer holds an exclusive `flock` on its file for its whole life: a file whose lock can be
taken has no living writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

__all__ = ["CRASHED", "GLOB", "Final", "Unsettled", "read_unsettled", "unsettled_in"]

GLOB = "adapter-*.log"
CRASHED = 502
"""The usage record's status for a stream its adapter did not live to end."""


class Final(msgspec.Struct, frozen=True):
    """An ended stream's usage (an `F` line), as the ledger's `Usage` takes it."""

    status: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int


class Unsettled(msgspec.Struct, kw_only=True):
    """A request served and not settled, as the journal knows it."""

    request_id: str
    timeout_ms: int = 0
    estimate: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    final: Final | None = None
    """Set by an `F` line: the stream ended and its usage is known; its settlement failed."""

    def usage(self) -> Final:
        """What to charge: the `F` line's usage, else what the last `S` line says was sent (status
        502: the adapter died mid-stream), its input as reported or, failing that, estimated."""
        if self.final is not None:
            return self.final
        return Final(CRASHED, self.input_tokens or self.estimate, 0, self.output_tokens)

    def lines(self) -> bytes:
        out = (f"O {self.request_id} {self.timeout_ms} {self.estimate} {self.input_tokens}\n"
               f"S {self.request_id} {self.output_tokens} {self.input_tokens}\n")
        if self.final is not None:
            u = self.final
            out += f"F {self.request_id} {u.status} {u.input_tokens} {u.cached_tokens} {u.output_tokens}\n"
        return out.encode()


def read_unsettled(data: bytes) -> dict[str, Unsettled]:
    """The requests of a journal with no `D` line. A torn or unknown line is skipped."""
    open_: dict[str, Unsettled] = {}
    for raw in data.split(b"\n"):
        parts = raw.decode("ascii", "replace").split()
        try:
            if parts[0] == "O" and len(parts) == 5:
                open_[parts[1]] = Unsettled(request_id=parts[1], timeout_ms=int(parts[2]), estimate=int(parts[3]),
                                            input_tokens=int(parts[4]))
            elif parts[0] == "S" and len(parts) == 4 and parts[1] in open_:
                u = open_[parts[1]]
                u.output_tokens, u.input_tokens = max(u.output_tokens, int(parts[2])), int(parts[3]) or u.input_tokens
            elif parts[0] == "F" and len(parts) == 6 and parts[1] in open_:
                status, i, c, o = (int(p) for p in parts[2:])
                open_[parts[1]].final = Final(status, i, min(c, i), o)
            elif parts[0] == "D" and len(parts) == 2:
                open_.pop(parts[1], None)
        except (IndexError, ValueError):
            continue
    return open_


def unsettled_in(directory: Path) -> Iterator[tuple[bool, Unsettled]]:
    """For reconcile: each unsettled request of every journal under `directory`, with whether its
    writer is alive (a live writer's requests without an `F` line are streams still going)."""
    for path in sorted(directory.glob(GLOB)):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # settled and removed meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                alive = False
            except BlockingIOError:
                alive = True
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        for u in read_unsettled(data).values():
            yield alive, u
