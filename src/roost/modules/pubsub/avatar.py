"""XEP-0398: XEP-0084 avatars in PEP and the vCard photo (XEP-0054/0153) kept as one.

* A client publishing ``urn:xmpp:avatar:metadata`` (§3, PEP → vCard, a MUST): the image of its
  first ``<info/>`` without a URL is taken from the ``urn:xmpp:avatar:data`` item of that id (its
  SHA-1 checked, XEP-0084 §4.2) and becomes the vCard PHOTO; the vCard module then puts the new
  hash into presence. Empty metadata (avatar disabled, XEP-0084 §4.5) removes the PHOTO.
* A client setting a vCard with a PHOTO (vCard → PEP, a MAY we do): the data item, then the
  metadata item, are published as the account, so contacts get the notification.

Advertised on the account as ``urn:xmpp:pep-vcard-conversion:0``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Final

from roost.config.schema import ModuleOptions
from roost.core.modules import Module, Xep
from roost.jid import JID
from roost.modules.pubsub.engine import Outcome, PubSubService
from roost.modules.pubsub.pep import Pep
from roost.modules.vcard import VCardTemp
from roost.xml.element import Element
from roost.xml.ns import VCARD

AVATAR_DATA: Final = "urn:xmpp:avatar:data"
AVATAR_METADATA: Final = "urn:xmpp:avatar:metadata"
CONVERSION: Final = "urn:xmpp:pep-vcard-conversion:0"
#: XEP-0084 nodes follow the presence access model of PEP; one item each.
OPTIONS: Final = {"pubsub#max_items": "1"}


class AvatarOptions(ModuleOptions):
    """XEP-0398: PEP avatars (XEP-0084) and the vCard photo kept as one (docs/pubsub.md). Needs the pep
    and vcard modules."""


class AvatarConversion(Module):
    """Avatars: PEP (XEP-0084) ⇄ vCard (XEP-0054/0153)."""

    name = "avatar_conversion"
    xeps = (
        Xep(398, "1.0.0", status="partial", note="the hash in presence follows the vcard module's rules"),
    )
    account_features = (CONVERSION,)
    Options = AvatarOptions

    async def start(self) -> None:
        pep = self.host.modules.loaded.get("pep")
        vcard = self.host.modules.loaded.get("vcard")
        if not isinstance(pep, Pep) or not isinstance(vcard, VCardTemp):
            self.log.warning("avatar conversion needs the pep and vcard modules; it is off")
            self.pep: Pep | None = None
            return
        self.pep, self.vcard = pep, vcard
        pep.runtime.listeners.append(self.pep_changed)
        vcard.listeners.append(self.vcard_changed)

    async def stop(self) -> None:
        if self.pep is not None:
            if self.pep_changed in self.pep.runtime.listeners:
                self.pep.runtime.listeners.remove(self.pep_changed)
            if self.vcard_changed in self.vcard.listeners:
                self.vcard.listeners.remove(self.vcard_changed)

    async def pep_changed(self, account: JID, service: PubSubService, outcome: Outcome) -> None:
        """§3: a metadata publication becomes the vCard photo."""
        if not any(name == AVATAR_METADATA and item is not None for (name, _), item in outcome.items.items()):
            return
        node = service.nodes.get(AVATAR_METADATA)
        last = node.last_item() if node is not None else None
        metadata = last.payload if last is not None else None
        if metadata is None or metadata.name != "metadata":
            return
        info = next((i for i in metadata.elements("info", AVATAR_METADATA) if not i.get("url")), None)
        vcard = await self.vcard.load(account) or Element("vCard", VCARD)
        if info is None:
            if vcard.find("PHOTO", VCARD) is None:
                return
            _set_photo(vcard, None)
        else:
            data_node = service.nodes.get(AVATAR_DATA)
            item = data_node.items.get(info.get("id", "")) if data_node is not None else None
            data = item.payload if item is not None else None
            if data is None:
                self.log.info(
                    "avatar metadata of %s names data %r that is not published", account, info.get("id")
                )
                return
            try:
                image = base64.b64decode("".join(data.text.split()), validate=True)
            except (binascii.Error, ValueError):
                return
            if hashlib.sha1(image).hexdigest() != info.get("id"):
                self.log.info("avatar of %s does not match its id; not converted", account)
                return
            _set_photo(vcard, (info.get("type") or "image/png", base64.b64encode(image).decode("ascii")))
        await self.vcard.replace(account, vcard)

    async def vcard_changed(self, account: JID, vcard: Element, photo: str) -> None:
        """§3: a vCard photo becomes the PEP avatar (data first, then metadata)."""
        assert self.pep is not None
        if not photo:
            service = await self.pep.runtime.service(account.domain, account.local or "")
            if AVATAR_METADATA in service.nodes:
                await self.pep.server_publish(
                    account, AVATAR_METADATA, "current", Element("metadata", AVATAR_METADATA), {}
                )
            return
        el = vcard.find("PHOTO", VCARD)
        assert el is not None
        text = "".join((el.find_text("BINVAL", VCARD) or "").split())
        image = base64.b64decode(text)
        mime = (el.find_text("TYPE", VCARD) or "image/png").strip()
        await self.pep.server_publish(
            account, AVATAR_DATA, photo, Element("data", AVATAR_DATA, None, [text]), OPTIONS
        )
        metadata = Element("metadata", AVATAR_METADATA)
        metadata.add("info", attrs={"bytes": str(len(image)), "id": photo, "type": mime})
        await self.pep.server_publish(account, AVATAR_METADATA, photo, metadata, OPTIONS)


def _set_photo(vcard: Element, photo: tuple[str, str] | None) -> None:
    for old in list(vcard.elements("PHOTO", VCARD)):
        vcard.remove(old)
    if photo is not None:
        el = vcard.add("PHOTO", VCARD)
        el.add("TYPE", VCARD, text=photo[0])
        el.add("BINVAL", VCARD, text=photo[1])
