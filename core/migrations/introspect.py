"""A database's schema as the database itself reports it, in a form two databases can be compared in.

`shape(db)` maps one key per object (table, column, constraint, index, trigger, function) to its
canonical definition; `differences(a, b)` lists what differs. Used by the tests that prove an
upgraded database equals a fresh install (tests/migrations) and by `nx db status --verify`.

- SQLite keeps each table's, index's and trigger's SQL text (ALTER TABLE edits it in place), so
  definitions come from that text, parsed into one entry per column and per table constraint, with
  comments, case, quoting and spacing normalised. Indexes SQLite makes for a UNIQUE or PRIMARY KEY
  are covered by the constraint they come from.
- PostgreSQL: the catalogs (`information_schema.columns`, `pg_get_constraintdef`, `pg_indexes`,
  `pg_get_triggerdef`, `pg_get_functiondef`). Constraints are compared by definition, not by name:
  a constraint added by a migration gets another generated name than the same one in schema.sql.

Column order is not compared: ALTER TABLE ADD COLUMN appends on both databases, and no statement of
the platform depends on the order (every INSERT and SELECT names its columns).
"""

from __future__ import annotations

import re

from core.migrations.connect import Db

__all__ = ["Shape", "differences", "normalise", "shape"]

Shape = dict[str, str]
_CONSTRAINT_WORDS = ("constraint", "primary", "unique", "check", "foreign")


def _segments(sql: str) -> list[tuple[bool, str]]:
    """(is a string literal, text) pieces, with comments dropped."""
    out: list[tuple[bool, str]] = []
    i, n = 0, len(sql)
    plain: list[str] = []
    while i < n:
        c = sql[i]
        if c == "'":
            j = i + 1
            while j < n and not (sql[j] == "'" and (j + 1 >= n or sql[j + 1] != "'")):
                j += 2 if sql[j] == "'" else 1
            out.append((False, "".join(plain)))
            plain = []
            out.append((True, sql[i:j + 1]))
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            plain.append(" ")
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            plain.append(" ")
        else:
            plain.append(c)
            i += 1
    out.append((False, "".join(plain)))
    return out


def normalise(sql: str) -> str:
    """Comments dropped; outside string literals: lower case, identifier quotes dropped, one space
    between words and none around brackets and commas; `IF NOT EXISTS` and a final `;` dropped."""
    parts = []
    for literal, text in _segments(sql):
        if literal:
            parts.append(text)
            continue
        text = re.sub(r"\s+", " ", text.lower().replace('"', "").replace("`", ""))
        parts.append(re.sub(r" ?([(),;]) ?", r"\1", text))
    out = "".join(parts).strip().rstrip(";").strip()
    return re.sub(r"\bif not exists ", "", out)


def _top_level_items(body: str) -> list[str]:
    items, depth, current = [], 0, []
    for literal, text in _segments(body):
        if literal:
            current.append(text)
            continue
        for c in text:
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            if c == "," and depth == 0:
                items.append("".join(current))
                current = []
            else:
                current.append(c)
    items.append("".join(current))
    return [normalise(item) for item in items if item.strip()]


def _table_parts(sql: str) -> tuple[str, str]:
    """A CREATE TABLE statement's column list and what follows it (`WITHOUT ROWID`)."""
    depth, inside, after = 0, False, False
    body: list[str] = []
    tail: list[str] = []
    for literal, text in _segments(sql):
        if literal:
            (tail if after else body if inside else []).append(text)
            continue
        for c in text:
            if after:
                tail.append(c)
            elif not inside:
                inside, depth = c == "(", 1
            elif c == ")" and depth == 1:
                after = True
            else:
                depth += {"(": 1, ")": -1}.get(c, 0)
                body.append(c)
    return "".join(body), "".join(tail)


def _sqlite_table(shape: Shape, table: str, sql: str) -> None:
    body, tail = _table_parts(sql)
    shape[f"table {table}"] = normalise(tail) or "(rowid)"
    for item in _top_level_items(body):
        if item.split(" ", 1)[0].split("(", 1)[0] in _CONSTRAINT_WORDS:
            key = f"constraint {table}: {item}"
            shape[key] = str(int(shape.get(key, "0")) + 1)
        else:
            name, _, definition = item.partition(" ")
            shape[f"column {table}.{name}"] = definition


async def _sqlite_shape(db: Db) -> Shape:
    shape: Shape = {}
    for kind, name, table, sql in await db.query(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"):
        if kind == "table":
            _sqlite_table(shape, str(name), str(sql))
        elif sql is not None:  # an index SQLite made for a constraint has no SQL of its own
            shape[f"{kind} {name}"] = f"on {table}: {normalise(str(sql))}"
    return shape


async def _pg_shape(db: Db) -> Shape:
    shape: Shape = {}
    schema = str((await db.query("SELECT current_schema()"))[0][0])

    def local(definition: str) -> str:
        return normalise(definition.replace(f"{schema}.", ""))

    for (table,) in await db.query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"):
        shape[f"table {table}"] = "(heap)"
    for table, column, kind, nullable, default in await db.query(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = current_schema()"):
        shape[f"column {table}.{column}"] = normalise(
            f"{kind}{' not null' if nullable == 'NO' else ''}{'' if default is None else f' default {default}'}")
    for table, definition in await db.query(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = current_schema()::regnamespace AND contype IN ('c', 'f', 'p', 'u', 'x')"):
        key = f"constraint {local(str(table))}: {local(str(definition))}"
        shape[key] = str(int(shape.get(key, "0")) + 1)
    for name, table, definition in await db.query(
            "SELECT i.relname, t.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
            " WHERE t.relnamespace = current_schema()::regnamespace"
            " AND x.indexrelid NOT IN (SELECT conindid FROM pg_constraint)"):
        shape[f"index {name}"] = f"on {table}: {local(str(definition))}"
    for name, table, definition in await db.query(
            "SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid) FROM pg_trigger t"
            " JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace"):
        shape[f"trigger {name}"] = f"on {table}: {local(str(definition))}"
    for name, definition in await db.query(
            "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p"
            " WHERE p.pronamespace = current_schema()::regnamespace"):
        shape[f"function {name}"] = local(str(definition))
    return shape


async def shape(db: Db) -> Shape:
    return await (_sqlite_shape(db) if db.dialect == "sqlite" else _pg_shape(db))


def differences(expected: Shape, actual: Shape) -> list[str]:
    """One line per object that is missing, extra or defined otherwise in `actual`."""
    out = []
    for key in sorted(expected.keys() | actual.keys()):
        if key not in actual:
            out.append(f"missing {key} = {expected[key]}")
        elif key not in expected:
            out.append(f"extra {key} = {actual[key]}")
        elif expected[key] != actual[key]:
            out.append(f"differs {key}: expected {expected[key]!r}, found {actual[key]!r}")
    return out
