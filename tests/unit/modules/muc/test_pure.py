"""The MUC engine, service, forms and model stay pure: no asyncio, sockets, TLS, storage or core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[4] / "src" / "roost" / "modules" / "muc"
PURE = ("model.py", "forms.py", "room.py", "service.py")
FORBIDDEN = (
    "asyncio",
    "socket",
    "ssl",
    "roost.storage",
    "roost.transports",
    "roost.core",
    "sqlalchemy",
    "roost.modules.muc.module",
)


@pytest.mark.parametrize("name", PURE)
def test_muc_engine_files_import_no_io(name: str) -> None:
    tree = ast.parse((PACKAGE / name).read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for imported in names:
            for bad in FORBIDDEN:
                assert imported != bad and not imported.startswith(bad + "."), f"{name} imports {imported}"
