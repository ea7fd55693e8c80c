"""The numbered migration files: `core/migrations/sql/NNNN_slug.sql`.

One file per migration, for both databases: statements run on both unless a line `-- dialect:
sqlite` or `-- dialect: postgresql` precedes them (the convention of schema.sql, split by the same
code). One number names one schema state on both databases, so `nx db status` means the same
thing on SQLite and PostgreSQL. Statements below a line `-- nx: batches` move data in batches
(core/migrations/apply.py). A file's checksum (SHA-256 of its bytes) is recorded when it is
applied; an applied file must never change (a later fix is a new migration).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIGRATIONS_DIR", "SCHEMA_PATH", "Migration", "MigrationFileError", "load_migrations", "split_schema"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "sql"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema.sql"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
BATCHES_MARKER = "-- nx: batches"


class MigrationFileError(ValueError):
    """The migrations directory is malformed (a bad name, a duplicate number, a gap)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    """The file name without `.sql`, e.g. `0002_request_nonces`."""
    checksum: str
    text: str

    def _parts(self) -> tuple[str, str]:
        lines = self.text.splitlines(keepends=True)
        at = next((i for i, line in enumerate(lines) if line.strip() == BATCHES_MARKER), len(lines))
        return "".join(lines[:at]), "".join(lines[at + 1:])

    def statements(self, dialect: str) -> list[str]:
        """The schema part: one transaction (core/migrations/apply.py)."""
        return split_schema(self._parts()[0], dialect)

    def batches(self, dialect: str) -> list[str]:
        """Statements below `-- nx: batches`, each run until it changes no row, a transaction a run."""
        return split_schema(self._parts()[1], dialect)


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in `directory`, in order; numbered 1, 2, 3 ... without gaps or duplicates
    (two branches that both added migration 0005 fail here, and in CI, until one renumbers)."""
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationFileError(f"{path.name}: a migration is named NNNN_lowercase_slug.sql")
        data = path.read_bytes()
        found.append(Migration(int(match.group(1)), path.stem, hashlib.sha256(data).hexdigest(),
                               data.decode()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            clash = [m.name for m in found if m.version == migration.version]
            detail = f"duplicate number: {', '.join(clash)}" if len(clash) > 1 else f"expected {expected:04d}"
            raise MigrationFileError(f"{migration.name}: migrations are numbered without gaps ({detail})")
    if not found:
        raise MigrationFileError(f"no migrations in {directory}")
    return found


def split_schema(sql: str, dialect: str) -> list[str]:
    """Split schema.sql into statements for one dialect (see the header of schema.sql)."""
    statements: list[str] = []
    current: list[str] = []
    only: str | None = None
    in_dollar = False
    for line in sql.splitlines():
        stripped = line.strip()
        if not current and stripped.startswith("-- dialect:"):
            only = stripped.split(":", 1)[1].strip()
            continue
        if not current and (not stripped or stripped.startswith("--")):
            continue
        current.append(line)
        if line.count("$$") % 2 == 1:
            in_dollar = not in_dollar
        head = current[0].lstrip().upper()
        # Only a trigger SQLite will run ends at `END;`; a PostgreSQL-only one ends at its `;`.
        is_sqlite_trigger = head.startswith("CREATE TRIGGER") and dialect == "sqlite" and only != "postgresql"
        done = stripped.endswith(";") and not in_dollar
        if done and is_sqlite_trigger:
            done = stripped.upper().endswith("END;")
        if done:
            if only in (None, dialect):
                statements.append("\n".join(current))
            current, only = [], None
    if current:
        raise ValueError(f"schema.sql ends inside a statement: {current[0]!r}")
    return statements
