"""XEP-0215 external service discovery: STUN/TURN servers for calls, with time-limited TURN credentials.

Services come from ``[extdisco] services``; a TURN server with a ``secret`` gets credentials made by
the TURN REST API scheme coturn implements (``use-auth-secret``/``static-auth-secret``): the user
name is ``<expiry unix time>:<bare JID>``, the password base64(HMAC-SHA1(secret, user name)), so
coturn checks them without asking Roost. Answered to this server's own users only. See docs/turn.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from roost.config.schema import ModuleOptions
from roost.core.hooks import StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, iq_handler
from roost.stanza.errors import StanzaError
from roost.util.datetime import format_datetime
from roost.xml.element import Element

NS_EXTDISCO = "urn:xmpp:extdisco:2"


class ExternalService(BaseModel):
    """One ``[[extdisco.services]]`` entry."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        description="Service type as registered for XEP-0215: 'stun', 'turn', 'stuns', 'turns'."
    )
    host: str = Field(description="Host name or IP address clients connect to.")
    port: int | None = Field(None, ge=1, le=65535, description="Port (3478 for STUN/TURN, 5349 over TLS).")
    transport: Literal["udp", "tcp"] | None = Field(None, description="'udp' or 'tcp'.")
    name: str = Field("", description="Human-readable name.")
    secret: str = Field(
        "",
        description="TURN REST API shared secret (coturn's static-auth-secret): clients get "
        "time-limited credentials. Empty: none are given.",
    )
    ttl_seconds: int = Field(86_400, ge=60, le=30 * 86_400, description="How long the credentials are valid.")


class ExtDiscoOptions(ModuleOptions):
    """XEP-0215 external services (docs/turn.md)."""

    enabled: bool = Field(False, description="Tell local users about the STUN/TURN servers in services.")
    services: list[ExternalService] = Field(
        default_factory=list,
        description="The external services, as [[extdisco.services]] tables.",
        examples=[
            [{"type": "turn", "host": "turn.example.org", "port": 3478, "transport": "udp", "secret": "…"}]
        ],
    )


def turn_credentials(secret: str, user: str, expires: int) -> tuple[str, str]:
    """(username, password) per the TURN REST API (draft-uberti-behave-turn-rest §2.2), as coturn checks."""
    username = f"{expires}:{user}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


class ExternalServices(Module):
    """Answers <services/> and <credentials/> (XEP-0215 §3-4) for the server's own accounts."""

    name = "extdisco"
    xeps = (Xep(215, "1.0.0"),)
    features = (NS_EXTDISCO,)
    Options = ExtDiscoOptions
    options: ExtDiscoOptions

    def _element(self, service: ExternalService, user: str, now: float, *, listing: bool = True) -> Element:
        attrs = {"type": service.type, "host": service.host}
        if service.port is not None:
            attrs["port"] = str(service.port)
        if service.transport is not None:
            attrs["transport"] = service.transport
        if service.name:
            attrs["name"] = service.name
        if service.secret:
            expires = int(now) + service.ttl_seconds
            attrs["username"], attrs["password"] = turn_credentials(service.secret, user, expires)
            attrs["expires"] = format_datetime(expires)
            if listing:
                attrs["restricted"] = "1"  # credentials needed; these expire, ask <credentials/> again
        return Element("service", NS_EXTDISCO, attrs)

    def _check(self, event: StanzaEvent) -> str:
        frm = event.frm
        if frm.domain != self.host.domain or not frm.local:
            raise StanzaError("forbidden", "External services are for accounts of this server only")
        return str(frm.bare)

    @iq_handler("get", NS_EXTDISCO, "services", to=Target.HOST)
    def services(self, event: StanzaEvent) -> Element:
        user = self._check(event)
        wanted = event.stanza.first().get("type")  # type: ignore[union-attr]
        now = time.time()
        result = Element("services", NS_EXTDISCO, {"type": wanted} if wanted else None)
        for service in self.options.services:
            if not wanted or service.type == wanted:
                result.append(self._element(service, user, now))
        return result

    @iq_handler("get", NS_EXTDISCO, "credentials", to=Target.HOST)
    def credentials(self, event: StanzaEvent) -> Element:
        """§4: credentials for one service named by host and type (and port)."""
        user = self._check(event)
        asked = event.stanza.first().find("service", NS_EXTDISCO)  # type: ignore[union-attr]
        if asked is None or not asked.get("host") or not asked.get("type"):
            raise StanzaError("bad-request", "<service/> with host and type is required")
        port = asked.get("port")
        now = time.time()
        result = Element("credentials", NS_EXTDISCO)
        for service in self.options.services:
            if (
                service.host == asked.get("host")
                and service.type == asked.get("type")
                and (not port or str(service.port) == port)
                and service.secret
            ):
                result.append(self._element(service, user, now, listing=False))
        if not result.children:
            raise StanzaError("item-not-found", "No service with credentials matches")
        return result
