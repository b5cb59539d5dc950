"""docs/xeps.md stays in step with the modules' metadata."""

from __future__ import annotations

from pathlib import Path

from roost.modules.catalog import render

PAGE = Path(__file__).resolve().parents[3] / "docs" / "xeps.md"


def test_xeps_page_is_up_to_date() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), "docs/xeps.md is stale: run scripts/gen-xeps-docs"


def test_core_xeps_are_listed() -> None:
    text = render()
    for number in (30, 199, 92, 202, 12):
        assert f"XEP-{number:04d}" in text
