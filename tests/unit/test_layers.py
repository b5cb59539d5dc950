"""Pure layers import no I/O: they can be tested and reused without sockets (DESIGN.md, convention 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "roost"
PURE = [
    "xml",
    "stanza",
    "stream",
    "jid.py",
    "modules/muc/room.py",
    "modules/muc/service.py",
    "modules/muc/forms.py",
    "modules/muc/model.py",
    "modules/pubsub/engine.py",
    "modules/pubsub/config.py",
    "modules/pubsub/caps.py",
]
FORBIDDEN = {"asyncio", "socket", "ssl", "roost.storage", "roost.transports", "roost.core", "sqlalchemy"}


def pure_files() -> list[Path]:
    files: list[Path] = []
    for entry in PURE:
        path = SRC / entry
        if path.is_dir():
            files.extend(sorted(path.rglob("*.py")))
        elif path.exists():
            files.append(path)
    return files


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            for bad in FORBIDDEN:
                assert name != bad and not name.startswith(bad + "."), f"{path} imports {name}"
