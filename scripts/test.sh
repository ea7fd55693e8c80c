#!/usr/bin/env bash
# Runs the whole suite twice: on SQLite, then on PostgreSQL (NX_TEST_DATABASE=postgresql).
# PostgreSQL is found at NX_TEST_PG_ADMIN (default postgresql://postgres@127.0.0.1:5432/postgres);
# Redis at NX_TEST_REDIS_URL (default redis://127.0.0.1:6379/15). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "== static checks: mypy --strict and ruff on the product code =="
.venv/bin/mypy || exit 1
.venv/bin/ruff check control_plane proxy_plugins local_models nx_client || exit 1
status=0
for db in sqlite postgresql; do
  echo "== tests on $db =="
  NX_TEST_DATABASE=$db "$PY" -m pytest -q -p no:randomly "$@"
  rc=$?
  [ $rc -eq 0 ] || status=$rc
done
exit $status
