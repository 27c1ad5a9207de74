"""Fixtures shared by the frontend integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from fe_helpers import TIMEOUT


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP client session per test."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        yield s
