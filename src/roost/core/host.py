"""A served domain: its event bus, IQ table and loaded modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roost.core.events import EventBus
from roost.core.iq import IqTable
from roost.core.modules import ModuleManager
from roost.jid import JID

if TYPE_CHECKING:
    from roost.core.server import Server


class Host:
    """One domain the server serves (``example.org``), or a service domain (``conference.…``)."""

    def __init__(self, server: Server, domain: str, *, kind: str = "domain") -> None:
        self.server = server
        self.domain = domain
        #: "domain" for a user domain with accounts; "service" for a component-like service host.
        self.kind = kind
        self.jid = JID(None, domain, prepared=True)
        self.bus = EventBus(domain)
        self.iq = IqTable()
        self.modules = ModuleManager(self)

    @property
    def has_accounts(self) -> bool:
        return self.kind == "domain"

    def features(self) -> set[str]:
        """disco#info features of this domain: those of every loaded module."""
        features: set[str] = set()
        for module in self.modules.loaded.values():
            features.update(module.features)
        return features

    def account_features(self) -> set[str]:
        features: set[str] = set()
        for module in self.modules.loaded.values():
            features.update(module.account_features)
        return features

    def __repr__(self) -> str:
        return f"<Host {self.domain}>"
