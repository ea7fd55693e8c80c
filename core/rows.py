"""Rows read by name into typed Structs, on every connection the domain code runs on.

A query's column list is written once, as a Struct's fields (`columns(Hold)`), and each row becomes
that Struct by those names (`row_as(Hold, r)`), type-checked by msgspec. Adding or reordering a
column is one edit to the Struct instead of a dozen index shifts (`r[14]`) that nothing checks.
It works on SQLAlchemy rows and on the driver's own tuples inside a group commit (core/rawsql.py)
alike: both are sequences in the order of the SELECT list that `columns` wrote.

The field `object` is skipped: OpenAI-shaped views carry it as a constant type tag
(`"ledger.hold"`), not as a column.

PostgreSQL answers SUM() of BIGINTs as `Decimal`; a whole Decimal is read as the int it is.
Lax conversion (`strict=False`) reads SQLite's 0/1 as bool.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TypeVar

import msgspec

__all__ = ["columns", "row_as", "rows_as"]

S = TypeVar("S", bound=msgspec.Struct)


@functools.cache
def _fields(of: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(f for f in of.__struct_fields__ if f != "object")


def columns(of: type[msgspec.Struct], alias: str = "", **expressions: str) -> str:
    """The SELECT list for `of`: its field names in order, each prefixed with `alias.` when given;
    a field named in `expressions` is selected as that SQL expression instead (`AS field`)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{expressions[f]} AS "{f}"' if f in expressions else prefix + f for f in _fields(of))


def _plain(value: object) -> object:
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def row_as(into: type[S], row: Sequence[object], seconds: tuple[str, ...] = ()) -> S:
    """One row (selected with `columns(into)`) as `into`. Fields named in `seconds` are stored in
    milliseconds and shown in whole seconds (the API's Unix times)."""
    fields = _fields(into)
    if len(row) != len(fields):
        raise ValueError(f"{into.__name__} has {len(fields)} fields; the row has {len(row)} columns")
    values = {f: _plain(v) for f, v in zip(fields, row, strict=True)}
    for name in seconds:
        ms = values[name]
        values[name] = ms // 1000 if isinstance(ms, int) else ms
    return msgspec.convert(values, into, strict=False)


def rows_as(into: type[S], rows: Iterable[Sequence[object]], seconds: tuple[str, ...] = ()) -> list[S]:
    return [row_as(into, r, seconds) for r in rows]
