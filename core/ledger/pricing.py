"""Price cards as the ledger uses them: the version in force, and the charge for actual tokens.

A charge is `money.request_cost` on the card the hold was placed with (the version in force when
the request arrived), so one request never straddles two prices. A model without a price card in
force is refused, never charged 0.
"""

from __future__ import annotations

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ledger.errors import NotPriced
from core.money import request_cost
from core.rawsql import facts_of, memo_of, sql
from core.rows import columns, row_as

__all__ = ["PriceCard", "card_in_force", "card_version", "charge_for", "max_cost"]


class PriceCard(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    model_id: str
    version: int
    input_nanos_per_mtok: int
    cached_input_nanos_per_mtok: int
    output_nanos_per_mtok: int
    effective_at: int


_COLUMNS = columns(PriceCard)


async def card_in_force(conn: AsyncConnection, model_id: str, at_ms: int) -> PriceCard:
    """The latest card already effective at `at_ms` (same rule as the sidecar's snapshot)."""
    memo = memo_of(conn)
    found = memo.get(("card_in_force", model_id)) if memo is not None else None
    if isinstance(found, PriceCard) and found.effective_at <= at_ms:
        return found
    r = (await conn.execute(sql(
        f"SELECT {_COLUMNS} FROM price_cards WHERE model_id = :m AND effective_at <= :at"
        " ORDER BY effective_at DESC, version DESC LIMIT 1"), {"m": model_id, "at": at_ms})).first()
    if r is None:
        raise NotPriced(f"The model '{model_id}' has no price card in force; "
                        "it cannot be served or charged.", param="model")
    card = row_as(PriceCard, r)
    if memo is not None:
        memo[("card_in_force", model_id)] = card
    return card


async def card_version(conn: AsyncConnection, model_id: str, version: int) -> PriceCard:
    # A card's version never changes once written (append-only): a group commit keeps it.
    memo = facts_of(conn)
    if memo is not None and len(memo) > 10_000:
        memo.clear()
    memo = memo if memo is not None else memo_of(conn)
    found = memo.get(("card_version", model_id, version)) if memo is not None else None
    if isinstance(found, PriceCard):
        return found
    r = (await conn.execute(sql(f"SELECT {_COLUMNS} FROM price_cards WHERE model_id = :m AND version = :v"),
                            {"m": model_id, "v": version})).first()
    if r is None:
        raise NotPriced(f"Price card version {version} of '{model_id}' does not exist.")
    card = row_as(PriceCard, r)
    if memo is not None:
        memo[("card_version", model_id, version)] = card
    return card


def charge_for(card: PriceCard, input_tokens: int, cached_tokens: int, output_tokens: int) -> int:
    return request_cost(input_tokens, cached_tokens, output_tokens, card.input_nanos_per_mtok,
                        card.cached_input_nanos_per_mtok, card.output_nanos_per_mtok)


def max_cost(card: PriceCard, max_input_tokens: int, max_output_tokens: int) -> int:
    """The most a request can cost: every allowed output token produced, and the input all uncached
    or all cached, whichever is dearer (cost is linear in the cached count, so an extreme is the
    maximum; a card may price cached input above fresh input)."""
    return max(charge_for(card, max_input_tokens, 0, max_output_tokens),
               charge_for(card, max_input_tokens, max_input_tokens, max_output_tokens))
