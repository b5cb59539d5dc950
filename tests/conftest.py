"""Shared test fixtures: an in-process Roost server on free ports, and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import RunningServer, running_server

# The ``peers`` fixture of IM tests with real clients.
pytest_plugins = ("tests.support.im",)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A Roost server for ``localhost`` on ephemeral ports, SQLite storage in tmp_path."""
    async with running_server(tmp_path) as running:
        yield running


@pytest.fixture
def server_options() -> dict[str, Any]:
    return {}
