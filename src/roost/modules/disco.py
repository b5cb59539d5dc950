"""XEP-0030 Service Discovery for the server and its accounts.

Features are not listed here: each loaded module advertises its own (``Module.features`` for the
domain, ``Module.account_features`` for accounts), so disco says exactly what is enabled.
"""

from __future__ import annotations

from collections.abc import Sequence

from roost.core import hooks
from roost.core.hooks import DiscoInfoEvent, DiscoItemsEvent, StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, iq_handler
from roost.modules.pubsub.caps import SERVER_NODE, caps_element, ver_of
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import DISCO_INFO, DISCO_ITEMS


def info_element(
    node: str | None,
    identities: list[tuple[str, str, str | None]],
    features: set[str],
    forms: list[Element],
) -> Element:
    """A disco#info result payload (XEP-0030 §3.1), features sorted for stable output."""
    query = Element("query", DISCO_INFO, {"node": node} if node else None)
    for category, type_, name in identities:
        attrs = {"category": category, "type": type_}
        if name:
            attrs["name"] = name
        query.add("identity", attrs=attrs)
    for feature in sorted(features):
        query.add("feature", attrs={"var": feature})
    for form in forms:
        query.append(form)
    return query


class Disco(Module):
    """disco#info and disco#items of the server domain and of accounts."""

    name = "disco"
    xeps = (Xep(30, "2.5.0"),)
    features = (DISCO_INFO, DISCO_ITEMS)
    account_features = (DISCO_INFO, DISCO_ITEMS)

    def _host_info(self, node: str | None = None) -> Element:
        # Modules that define disco_forms() add XEP-0128 extended forms (e.g. XEP-0157 addresses).
        forms: list[Element] = []
        for module in self.host.modules.loaded.values():
            extra = getattr(module, "disco_forms", None)
            if callable(extra):
                forms.extend(extra())
        return info_element(node, [("server", "im", "Roost")], self.host.features(), forms)

    def stream_features(self) -> Sequence[Element]:
        """The server's own XEP-0115 caps, in the features after authentication (§6.3)."""
        return (caps_element(self._host_info()),)

    @iq_handler("get", DISCO_INFO, "query", to=Target.HOST)
    def host_info(self, event: StanzaEvent) -> Element:
        node = event.stanza.first().get("node")  # type: ignore[union-attr]
        if node:
            # XEP-0115 §6.2: the node#ver of our caps answers like the plain query.
            if node == f"{SERVER_NODE}#{ver_of(self._host_info(), 'sha-1')}":
                return self._host_info(node)
            # Other nodes of the domain belong to modules: one that defines node_info(node, requester)
            # answers for its own (e.g. XEP-0050 command nodes, §2.3), None for others.
            for module in self.host.modules.loaded.values():
                answer = getattr(module, "node_info", None)
                found = answer(node, event.frm) if callable(answer) else None
                if found is not None:
                    identities, features = found
                    return info_element(node, identities, features, [])
            raise StanzaError("item-not-found", "no such node")
        return self._host_info()

    @iq_handler("get", DISCO_ITEMS, "query", to=Target.HOST)
    async def host_items(self, event: StanzaEvent) -> Element:
        node = event.stanza.first().get("node")  # type: ignore[union-attr]
        collected = DiscoItemsEvent(event.to, node, event.frm, [])
        await self.host.bus.fire(hooks.DISCO_ITEMS_HOST, collected)
        if not node:
            # External components (XEP-0114) connected now are services of every served domain.
            collected.items.extend((domain, None, None) for domain in self.server.route_table.components())
        # A node named after an advertised feature (XEP-0050's commands node) exists even when empty.
        if node and not collected.items and node not in self.host.features():
            raise StanzaError("item-not-found", "no such node")
        return _items(node, collected.items)

    @iq_handler("get", DISCO_INFO, "query", to=Target.ACCOUNT)
    async def account_info(self, event: StanzaEvent) -> Element:
        await self._require_account(event)
        node = event.stanza.first().get("node")  # type: ignore[union-attr]
        collected = DiscoInfoEvent(event.to, node, event.frm, [], set(), [])
        if not node:
            collected.identities.append(("account", "registered", None))
            collected.features.update(self.host.account_features())
        await self.host.bus.fire(hooks.DISCO_INFO_ACCOUNT, collected)
        if node and not collected.identities and not collected.features:
            raise StanzaError("item-not-found", "no such node")
        return info_element(node, collected.identities, collected.features, collected.forms)

    @iq_handler("get", DISCO_ITEMS, "query", to=Target.ACCOUNT)
    async def account_items(self, event: StanzaEvent) -> Element:
        await self._require_account(event)
        node = event.stanza.first().get("node")  # type: ignore[union-attr]
        collected = DiscoItemsEvent(event.to, node, event.frm, [])
        await self.host.bus.fire(hooks.DISCO_ITEMS_ACCOUNT, collected)
        return _items(node, collected.items)

    async def _require_account(self, event: StanzaEvent) -> None:
        if not await self.server.account_exists(event.to.domain, event.to.local or ""):
            # RFC 6120 §10.5.3.1: no such user → service-unavailable (does not reveal more).
            raise StanzaError("service-unavailable")


def _items(node: str | None, items: list[tuple[str, str | None, str | None]]) -> Element:
    query = Element("query", DISCO_ITEMS, {"node": node} if node else None)
    for jid, item_node, name in items:
        attrs = {"jid": jid}
        if item_node:
            attrs["node"] = item_node
        if name:
            attrs["name"] = name
        query.add("item", attrs=attrs)
    return query
