"""The retry schedule (documented in docs/webhooks.md; tests hold the code to it).

Attempt 1 is immediate. After failed attempt n the next waits `SCHEDULE_S[n-1]` plus up to 20%
jitter (never less, so receivers can count on the documented minimum), or the receiver's
`Retry-After` when that is later (capped at `MAX_RETRY_AFTER_S`). Eight attempts span about 27.5 h.
An endpoint whose every attempt has failed for `DISABLE_AFTER_S` (5 days) is disabled.
"""

from __future__ import annotations

import email.utils
import random

__all__ = [
    "ATTEMPT_TIMEOUT_S",
    "DISABLE_AFTER_S",
    "JITTER",
    "MAX_ATTEMPTS",
    "ROTATION_OVERLAP_S",
    "SCHEDULE_S",
    "next_delay_ms",
    "parse_retry_after",
]

SCHEDULE_S: tuple[int, ...] = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
"""Wait after failed attempt 1, 2, ... 7; attempt 8 is the last."""
MAX_ATTEMPTS = len(SCHEDULE_S) + 1
JITTER = 0.2
MAX_RETRY_AFTER_S = 24 * 3600
DISABLE_AFTER_S = 5 * 24 * 3600
ATTEMPT_TIMEOUT_S = 15.0
ROTATION_OVERLAP_S = 24 * 3600
"""After a rotation the replaced secret keeps signing (one more signature) for this long, counted
from its own rotation: later rotations do not shorten it."""


def next_delay_ms(failed_attempts: int, retry_after_s: float | None, rng: random.Random) -> int | None:
    """Milliseconds until the next attempt after `failed_attempts` failures; None when exhausted."""
    if failed_attempts >= MAX_ATTEMPTS:
        return None
    base = SCHEDULE_S[failed_attempts - 1]
    delay = base * (1.0 + rng.uniform(0.0, JITTER))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return int(delay * 1000)


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """`Retry-After` as delta seconds or an HTTP date; None when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)
