#!/usr/bin/env bash
# ./nx test [--fast] [pytest arguments...]
#   (default)  static checks (mypy --strict, ruff), then the whole suite on SQLite, then on PostgreSQL.
#   --fast     static checks, then the tests that start no process and take no seconds each (those
#              marked neither `process` nor `heavy`, see tests/lanes.py) on SQLite: the inner loop.
# PostgreSQL and Redis, for the full run: NX_TEST_PG_ADMIN / NX_TEST_REDIS_URL when set; else the
# servers answering at 127.0.0.1:5432 / 127.0.0.1:6379 (Redis database 15); else throwaway servers
# that tests/throwaway.py starts for this run on free ports and stops at its end, pass or fail.
# The run says which it used. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if [ "${1:-}" = "--lanes" ]; then  # (internal) the two lanes, run by tests.throwaway with the servers set
  shift
  status=0
  for db in sqlite postgresql; do
    echo "== tests on $db =="
    NX_TEST_DATABASE=$db "$PY" -m pytest -q -p no:randomly "$@"
    rc=$?
    [ $rc -eq 0 ] || status=$rc
  done
  exit $status
fi

fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
fi
echo "== static checks: mypy --strict and ruff on the product code =="
.venv/bin/mypy || exit 1
.venv/bin/ruff check core control_plane proxy_plugins local_models nx_client || exit 1

if [ $fast -eq 1 ]; then
  echo "== fast lane: the tests that start no process, on SQLite =="
  exec env NX_TEST_FAST=1 NX_TEST_DATABASE=sqlite "$PY" -m pytest -q -p no:randomly -m "not process and not heavy" "$@"
fi
exec "$PY" -m tests.throwaway -- "$PWD/scripts/test.sh" --lanes "$@"
