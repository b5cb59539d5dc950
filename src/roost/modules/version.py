"""XEP-0092 Software Version of the server."""

from __future__ import annotations

import platform

from pydantic import Field

from roost import __version__
from roost.config.schema import ModuleOptions
from roost.core.hooks import StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, iq_handler
from roost.xml.element import Element
from roost.xml.ns import VERSION


class VersionOptions(ModuleOptions):
    """Options of [version]."""

    show_os: bool = Field(
        False, description="Also reveal the operating system (XEP-0092 §4: some operators prefer not to)."
    )


class SoftwareVersion(Module):
    """Answers jabber:iq:version queries to the server."""

    name = "version"
    xeps = (Xep(92, "1.1"),)
    features = (VERSION,)
    Options = VersionOptions
    options: VersionOptions

    @iq_handler("get", VERSION, "query", to=Target.HOST)
    def version(self, event: StanzaEvent) -> Element:
        query = Element("query", VERSION)
        query.add("name", text="Roost")
        query.add("version", text=__version__)
        if self.options.show_os:
            query.add("os", text=f"{platform.system()} {platform.release()}")
        return query
