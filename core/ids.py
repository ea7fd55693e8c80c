"""Prefixed, sortable identifiers (`req_`, `key_`, `org_`, `proj_`, `evt_`, `whep_`, `inv_`, `txn_`, ...).

Shape: prefix + 26 Crockford base32 characters (48-bit millisecond time + 80 random bits), so ids
sort by creation time in both databases and reveal nothing guessable across tenants.
"""

from __future__ import annotations

import os
import time
from typing import Literal

__all__ = ["Prefix", "is_well_formed", "new_id"]

Prefix = Literal[
    "req", "key", "org", "proj", "user", "evt", "whep", "inv", "txn", "be", "mdl", "price", "route",
    "aud", "acct", "hold", "resp", "msg", "fc", "dlv", "mem", "idem", "akey", "sess", "ident", "mail",
]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: Prefix) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def is_well_formed(value: str, prefix: Prefix) -> bool:
    """Whether `value` has the shape `new_id(prefix)` produces: a lookup of anything else can be
    answered "not found" without a query (and a NUL, which PostgreSQL text refuses, never reaches one)."""
    body = value[len(prefix) + 1:]
    return len(body) == 26 and value.startswith(f"{prefix}_") and all(c in _ALPHABET for c in body)
