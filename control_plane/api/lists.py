"""OpenAI's list shape as typed generics, so the OpenAPI document describes each list's items.

`ListOf[T]` is a whole collection (`object`, `data`); `Page[T]` is one page of a paginated one
(plus `first_id`, `last_id`, `has_more`, continued with `after=<last_id>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Literal, Protocol, TypeVar

import msgspec

__all__ = ["ListOf", "Page", "page"]

T = TypeVar("T")


class ListOf(msgspec.Struct, Generic[T], kw_only=True):
    object: Literal["list"] = "list"
    data: list[T]


class Page(msgspec.Struct, Generic[T], kw_only=True):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None
    last_id: str | None
    has_more: bool


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=_Identified)


def page(items: Sequence[Item], has_more: bool) -> Page[Item]:
    return Page(data=list(items), first_id=items[0].id if items else None,
                last_id=items[-1].id if items else None, has_more=has_more)
