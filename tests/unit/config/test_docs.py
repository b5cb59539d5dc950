"""docs/config.md stays in step with the schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from roost.config import load_config
from roost.config.docs import BEGIN_MARKER, END_MARKER, render_reference, splice
from roost.config.schema import CORE_SECTIONS

ROOT = Path(__file__).resolve().parents[3]
CONFIG_PAGE = ROOT / "docs" / "config.md"


def test_config_reference_is_up_to_date() -> None:
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    assert splice(page, render_reference()) == page, (
        "docs/config.md is out of date: run .venv/bin/python scripts/gen-config-docs"
    )


def test_reference_documents_every_core_key() -> None:
    reference = render_reference()
    for section, model in CORE_SECTIONS.items():
        assert f"### `[{section}]`" in reference
        for key in model.model_fields:
            assert f"| `{key}` |" in reference, f"{section}.{key} missing"


def test_full_example_in_docs_is_a_valid_config(tmp_path: Path) -> None:
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    section = page.split("## Full example", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match is not None
    path = tmp_path / "roost.toml"
    path.write_text(match.group(1), encoding="utf-8")
    config = load_config(path)
    assert config.server.domains == ["example.org"]


def test_splice_keeps_hand_written_text() -> None:
    page = f"intro\n{BEGIN_MARKER}\nold\n{END_MARKER}\noutro\n"
    assert splice(page, "new\n") == f"intro\n{BEGIN_MARKER}\n\nnew\n\n{END_MARKER}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        splice("no markers", "x")
