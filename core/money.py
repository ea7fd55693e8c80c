"""Money helpers. Integers only: nano-dollars (1 USD = 10^9); prices per million tokens.

Request cost = ceil(sum(tokens x price_per_mtok) / 10^6) nano-dollars: rounding up once per
request, never per token class, so a charge is never below the exact price.
"""

from __future__ import annotations

__all__ = ["NANOS_PER_USD", "format_usd", "parse_usd", "request_cost"]

NANOS_PER_USD = 10**9


def format_usd(nanos: int, min_decimals: int = 2) -> str:
    """Exact decimal USD string: 20_000_000 -> '0.02', 1 -> '0.000000001'."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)
    digits = f"{frac:09d}".rstrip("0")
    digits = digits.ljust(min_decimals, "0")
    return f"{sign}{whole}.{digits}"


def parse_usd(value: str) -> int:
    """'12.5' -> 12_500_000_000 nano-dollars; refuses more than 9 decimals or anything not decimal."""
    text = value.strip()
    negative = text.startswith("-")
    text = text.removeprefix("-")
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(f"not a USD amount with at most 9 decimals: {value!r}")
    nanos = int(whole) * NANOS_PER_USD + int(frac.ljust(9, "0") or "0")
    return -nanos if negative else nanos


def request_cost(input_tokens: int, cached_tokens: int, output_tokens: int, input_price: int,
                 cached_price: int, output_price: int) -> int:
    """Cost in nano-dollars; `input_tokens` includes `cached_tokens` (OpenAI's convention)."""
    if min(input_tokens, cached_tokens, output_tokens) < 0 or cached_tokens > input_tokens:
        raise ValueError("token counts must be non-negative and cached <= input")
    total = ((input_tokens - cached_tokens) * input_price + cached_tokens * cached_price
             + output_tokens * output_price)
    return -(-total // 1_000_000)
