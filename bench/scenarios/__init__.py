"""Benchmark scenarios, by name."""

from __future__ import annotations

from .base import Scenario
from .idle import IdleScenario
from .login import LoginScenario
from .oneone import OneOneScenario

SCENARIOS: dict[str, type[Scenario]] = {s.name: s for s in (LoginScenario, OneOneScenario, IdleScenario)}
