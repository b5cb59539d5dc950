"""Fixtures for module tests: a real server core without sockets (see tests/support/scenario.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.scenario import Harness


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    """A started server for ``localhost`` with every module and memory storage."""
    async with Harness.running(tmp_path) as harness:
        yield harness
