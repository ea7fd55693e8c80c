"""Little-endian float32 base64, written independently of the adapter's so a shared bug cannot hide."""

from __future__ import annotations

import base64
import sys
from array import array

__all__ = ["to_base64"]


def to_base64(vector: list[float]) -> str:
    values = array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode()
