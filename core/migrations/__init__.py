"""Versioned schema migrations for SQLite and PostgreSQL (docs/operations.md).

schema.sql is the whole current schema, used for a fresh install; `sql/NNNN_slug.sql` take any
released schema to it, recorded with checksums in `schema_migrations`. Entry points: `nx db status`,
`nx db upgrade`, `nx db backup` (control_plane/cli_db.py), run by `nx up` and `nx init` too.
"""

from core.migrations.apply import MigrationError
from core.migrations.files import MIGRATIONS_DIR, SCHEMA_PATH, Migration, MigrationFileError, load_migrations
from core.migrations.runner import (
    Applied,
    SchemaError,
    SchemaStatus,
    UpgradeResult,
    exit_unless_current,
    require_current,
    status,
    upgrade,
)

__all__ = ["MIGRATIONS_DIR", "SCHEMA_PATH", "Applied", "Migration", "MigrationError", "MigrationFileError",
           "SchemaError", "SchemaStatus", "UpgradeResult", "exit_unless_current", "load_migrations",
           "require_current", "status", "upgrade"]
