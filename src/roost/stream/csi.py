"""Client state indication (XEP-0352 v1.0.0) on a receiving stream: ``<active/>``/``<inactive/>``.

The stream only passes the nonzas on (once established, §4.2: there is no reply); what an inactive
client gets is the ``csi`` module's business (:mod:`roost.modules.csi`). The ``<csi/>`` stream
feature comes with the module's stream features.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.stream.core import Event, Feature, Stream, StreamEvent
from roost.xml.element import Element
from roost.xml.ns import CSI


@dataclass(frozen=True, slots=True)
class ClientState(Event):
    """The client said it is ``active`` (True) or ``inactive`` (False)."""

    active: bool


class CsiFeature(Feature):
    """Takes ``<active/>`` and ``<inactive/>`` in ``urn:xmpp:csi:0`` once established."""

    nonza_namespaces = frozenset((CSI,))

    def nonza(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.name == "active":
            return [ClientState(True)]
        if el.name == "inactive":
            return [ClientState(False)]
        return None
