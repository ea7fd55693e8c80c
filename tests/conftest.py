"""Shared fixtures. `platform` is one real platform per test session (Envoy + sidecar + control
plane + worker); tests that need their own configuration start a `Platform` themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.harness import Platform


@pytest.fixture(scope="session")
async def platform() -> AsyncIterator[Platform]:
    p = await Platform().start()
    try:
        yield p
    finally:
        await p.stop()
