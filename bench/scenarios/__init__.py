"""Benchmark scenarios, by name."""

from __future__ import annotations

from .base import Scenario
from .idle import IdleScenario
from .login import LoginScenario
from .mucfanout import MucFanoutScenario
from .oneone import OneOneScenario
from .pep import PepScenario
from .presence import PresenceScenario
from .reconnect import ReconnectScenario
from .s2s import S2SScenario
from .soak import SoakScenario
from .websocket import WebSocketScenario

SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s
    for s in (
        LoginScenario,
        OneOneScenario,
        IdleScenario,
        PresenceScenario,
        ReconnectScenario,
        MucFanoutScenario,
        PepScenario,
        SoakScenario,
        WebSocketScenario,
        S2SScenario,
    )
}
