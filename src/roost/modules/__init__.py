"""Feature modules, one file each. :func:`all_modules` lists them in load order."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roost.core.modules import Module

#: Import paths of the built-in modules, in load order ("file:Class").
BUILTIN: tuple[str, ...] = (
    "roost.modules.disco:Disco",
    "roost.modules.ping:Ping",
    "roost.modules.version:SoftwareVersion",
    "roost.modules.entity_time:EntityTime",
    "roost.modules.last_activity:LastActivity",
    "roost.modules.session_legacy:LegacySession",
    "roost.modules.message:MessageDelivery",
    "roost.modules.muc.module:MultiUserChat",
    "roost.modules.roster:Roster",
    "roost.modules.presence:Presence",
    "roost.modules.offline:OfflineStorage",
    "roost.modules.carbons:Carbons",
    "roost.modules.blocking:Blocking",
    "roost.modules.vcard:VCardTemp",
    "roost.modules.private:PrivateStorage",
    "roost.modules.pubsub.pep:Pep",
    "roost.modules.pubsub.service:PubSub",
    "roost.modules.pubsub.bookmarks:Bookmarks",
    "roost.modules.pubsub.avatar:AvatarConversion",
    "roost.modules.registration:Registration",
    "roost.modules.privacy:Privacy",
    "roost.modules.mam.module:MessageArchive",  # after muc: attaches the room archives
    "roost.modules.adhoc:AdhocCommands",
    "roost.modules.admin:AdminCommands",
    "roost.modules.metrics:Metrics",
    "roost.modules.upload.module:HttpUpload",
    "roost.modules.extdisco:ExternalServices",
    "roost.modules.contact_info:ContactInfo",
    "roost.modules.http_auth:HttpAuth",
    "roost.modules.trace:StanzaTrace",
    "roost.modules.stream_management:StreamManagement",
    "roost.modules.csi:ClientStateIndication",
    "roost.modules.push:Push",
)


def all_modules() -> list[type[Module]]:
    """The module classes (importing them registers their config sections)."""
    classes = []
    for path in BUILTIN:
        module_name, _, class_name = path.partition(":")
        classes.append(getattr(importlib.import_module(module_name), class_name))
    return classes
