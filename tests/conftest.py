"""Shared fixtures. `platform` is one real platform per test session (Envoy + sidecar + control
plane + worker); tests that need their own configuration start a `Platform` themselves.

Two plugins ride along: tests/lanes.py marks every test that starts a process `process` (the fast
lane, `./nx test --fast`, runs the others), and tests/leakcheck.py fails the run if any process a
test started is still running when the session ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.harness import Platform
from tests.lanes import pytest_collection_modifyitems, pytest_configure
from tests.leakcheck import pytest_sessionfinish, pytest_sessionstart

__all__ = ["platform", "pytest_collection_modifyitems", "pytest_configure", "pytest_sessionfinish",
           "pytest_sessionstart"]


@pytest.fixture(scope="session")
async def platform() -> AsyncIterator[Platform]:
    p = await Platform().start()
    try:
        yield p
    finally:
        await p.stop()
