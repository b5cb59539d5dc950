"""XEP-0157 contact addresses: abuse, admin, support… addresses in the server's disco#info.

The addresses come from ``[contact_info]``; they are published as the XEP-0128 extended form
``http://jabber.org/network/serverinfo`` of the server domain (and so are part of its caps hash).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from roost.config.schema import ModuleOptions
from roost.core.modules import Module, Xep
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS

SERVERINFO = "http://jabber.org/network/serverinfo"

#: XEP-0157 §3 field names, in the order they are published.
KINDS = ("abuse", "admin", "feedback", "sales", "security", "status", "support")


def _uris(what: str) -> Field:  # type: ignore[valid-type]
    return Field(
        default_factory=list,
        description=f"URIs for {what} (mailto:, xmpp:, https:, tel:).",
        examples=[["mailto:abuse@example.org", "xmpp:abuse@example.org"]]
        if what == "abuse reports"
        else None,
    )


class ContactInfoOptions(ModuleOptions):
    """XEP-0157 contact addresses of the server (docs/xeps.md)."""

    abuse: list[str] = _uris("abuse reports")
    admin: list[str] = _uris("the server's administrators")
    feedback: list[str] = _uris("feedback")
    sales: list[str] = _uris("sales")
    security: list[str] = _uris("security reports")
    status: list[str] = _uris("service status (a status page)")
    support: list[str] = _uris("user support")

    @field_validator(*KINDS)
    @classmethod
    def _check_uris(cls, value: list[str]) -> list[str]:
        for uri in value:
            scheme, colon, rest = uri.partition(":")
            if not colon or not rest or not scheme.isascii() or not scheme.replace("+", "").isalnum():
                raise ValueError(f"{uri!r} is not a URI (mailto:…, xmpp:…, https://…)")
        return value


class ContactInfo(Module):
    """Publishes the configured contact addresses (XEP-0157) in the server's disco#info."""

    name = "contact_info"
    xeps = (Xep(157, "1.1.1"),)
    Options = ContactInfoOptions
    options: ContactInfoOptions

    def disco_forms(self) -> list[Element]:
        """The serverinfo form, or none when no address is configured."""
        if not any(getattr(self.options, kind) for kind in KINDS):
            return []
        form = Element("x", DATA_FORMS, {"type": "result"})
        form.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).add("value", text=SERVERINFO)
        for kind in KINDS:
            uris: list[str] = getattr(self.options, kind)
            if uris:
                field = form.add("field", attrs={"var": f"{kind}-addresses", "type": "list-multi"})
                for uri in uris:
                    field.add("value", text=uri)
        return [form]
