"""Module base class: a module gets its own Options model, typed, or refuses to start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core.modules import Module


class LimitOptions(ModuleOptions):
    limit: int = Field(default=1, description="A limit.")


class Limited(Module):
    # No name: the test module registers no [section] in the global config schema.
    Options = LimitOptions
    options: LimitOptions


def fake_host() -> Any:
    return SimpleNamespace(server=SimpleNamespace())


def test_module_keeps_options_of_its_own_model() -> None:
    options = LimitOptions(limit=3)
    module = Limited(fake_host(), options)
    assert module.options is options
    assert module.options.limit == 3


def test_module_refuses_options_of_another_model() -> None:
    with pytest.raises(TypeError, match="takes LimitOptions options, not ModuleOptions"):
        Limited(fake_host(), ModuleOptions())
