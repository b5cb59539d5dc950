"""XEP-0004 data forms of MUC: room configuration, room info (XEP-0128), voice requests, registration.

Pure: builds and reads ``jabber:x:data`` elements. A submitted form that cannot be used raises
:class:`StanzaError` with the condition XEP-0045 names for it (bad-request for malformed values,
not-acceptable for values that break service policy, §10.1.3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from roost.jid import JID, JIDError
from roost.modules.muc.model import (
    ALLOW_PM_VALUES,
    MUC_REGISTER,
    MUC_REQUEST,
    MUC_ROOMCONFIG,
    MUC_ROOMINFO,
    WHOIS_VALUES,
    Role,
    RoomConfig,
    ServicePolicy,
)
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS

_ROLE_OPTIONS: Final = (
    ("Moderator", Role.MODERATOR),
    ("Participant", Role.PARTICIPANT),
    ("Visitor", Role.VISITOR),
)
_PM_LABELS: Final = {
    "anyone": "Anyone",
    "participants": "Anyone with voice",
    "moderators": "Moderators only",
    "none": "Nobody",
}
_MAXUSERS_CHOICES: Final = (10, 20, 30, 50, 100, 200, 500, 1000, 2000, 5000)
PREFIX: Final = "muc#roomconfig_"
#: The room's message archive on or off (XEP-0313), as ejabberd names it.
MAM_FIELD: Final = "mam"


# -- generic form building and reading ----------------------------------------------------------------
def new_form(
    type_: str, form_type: str | None, *, title: str | None = None, instructions: str | None = None
) -> Element:
    """An ``<x xmlns='jabber:x:data'/>`` with its hidden FORM_TYPE field (XEP-0068)."""
    x = Element("x", DATA_FORMS, {"type": type_})
    if title:
        x.add("title", text=title)
    if instructions:
        x.add("instructions", text=instructions)
    if form_type is not None:
        add_field(x, "FORM_TYPE", "hidden", values=[form_type])
    return x


def add_field(
    form: Element,
    var: str | None,
    type_: str | None = None,
    label: str | None = None,
    *,
    values: Iterable[str] = (),
    options: Iterable[tuple[str, str]] = (),
    required: bool = False,
) -> Element:
    """Append a ``<field/>``; ``options`` are (label, value) pairs."""
    attrs: dict[str, str] = {}
    if var is not None:
        attrs["var"] = var
    if type_ is not None:
        attrs["type"] = type_
    if label is not None:
        attrs["label"] = label
    fld = form.add("field", attrs=attrs)
    if required:
        fld.add("required")
    for value in values:
        fld.add("value", text=value)
    for opt_label, opt_value in options:
        fld.add("option", attrs={"label": opt_label}).add("value", text=opt_value)
    return fld


@dataclass(frozen=True, slots=True)
class SubmittedForm:
    """A form as received: its type and the values of each field by var."""

    type: str
    values: dict[str, list[str]]

    @property
    def form_type(self) -> str | None:
        values = self.values.get("FORM_TYPE")
        return values[0] if values else None

    def first(self, var: str) -> str | None:
        values = self.values.get(var)
        return values[0] if values else None


def read_form(x: Element) -> SubmittedForm:
    """Values of every field of a ``jabber:x:data`` element."""
    values: dict[str, list[str]] = {}
    for fld in x.elements("field", DATA_FORMS):
        var = fld.attrs.get("var")
        if not var:
            continue
        values[var] = [v.text for v in fld.elements("value", DATA_FORMS)]
    return SubmittedForm(x.attrs.get("type", "form"), values)


def parse_bool(text: str, var: str) -> bool:
    """XEP-0004 §3.3 boolean: "1"/"true" or "0"/"false"."""
    value = text.strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise StanzaError("bad-request", f"{var} must be a boolean")


# -- room configuration (XEP-0045 §10.1.3, §10.2, §15.5.3) -------------------------------------------
def config_form(
    room_local: str, config: RoomConfig, owners: Sequence[str], admins: Sequence[str], policy: ServicePolicy
) -> Element:
    """The muc#roomconfig form with ``config`` filled in."""
    x = new_form(
        "form",
        MUC_ROOMCONFIG,
        title=f'Configuration for "{room_local}" Room',
        instructions="Complete this form to configure the room.",
    )
    add_field(x, PREFIX + "roomname", "text-single", "Natural-Language Room Name", values=_opt(config.name))
    add_field(
        x, PREFIX + "roomdesc", "text-single", "Short Description of Room", values=_opt(config.description)
    )
    add_field(
        x, PREFIX + "lang", "text-single", "Natural Language for Room Discussions", values=_opt(config.lang)
    )
    add_field(
        x, PREFIX + "persistentroom", "boolean", "Make Room Persistent?", values=[_b(config.persistent)]
    )
    add_field(
        x, PREFIX + "publicroom", "boolean", "Make Room Publicly Searchable?", values=[_b(config.public)]
    )
    add_field(
        x, PREFIX + "membersonly", "boolean", "Make Room Members-Only?", values=[_b(config.members_only)]
    )
    add_field(
        x,
        PREFIX + "allowinvites",
        "boolean",
        "Allow Members to Invite Others?",
        values=[_b(config.allow_invites)],
    )
    add_field(x, PREFIX + "moderatedroom", "boolean", "Make Room Moderated?", values=[_b(config.moderated)])
    add_field(
        x,
        PREFIX + "changesubject",
        "boolean",
        "Allow Occupants to Change Subject?",
        values=[_b(config.change_subject)],
    )
    add_field(
        x,
        PREFIX + "allowpm",
        "list-single",
        "Who Can Send Private Messages?",
        values=[config.allow_pm],
        options=[(_PM_LABELS[v], v) for v in ALLOW_PM_VALUES],
    )
    add_field(
        x,
        PREFIX + "passwordprotectedroom",
        "boolean",
        "Password Required to Enter?",
        values=[_b(config.password_protected)],
    )
    add_field(
        x,
        None,
        "fixed",
        values=["If a password is required to enter this room, you must specify the password below."],
    )
    add_field(x, PREFIX + "roomsecret", "text-private", "Password", values=_opt(config.password))
    add_field(
        x,
        PREFIX + "whois",
        "list-single",
        "Who May Discover Real JIDs?",
        values=[config.whois],
        options=[("Moderators Only", "moderators"), ("Anyone", "anyone")],
    )
    choices = sorted({c for c in _MAXUSERS_CHOICES if c <= policy.max_occupants} | {config.max_users})
    add_field(
        x,
        PREFIX + "maxusers",
        "list-single",
        "Maximum Number of Occupants",
        values=[str(config.max_users)],
        options=[(str(c), str(c)) for c in choices],
    )
    add_field(
        x,
        PREFIX + "presencebroadcast",
        "list-multi",
        "Roles for which Presence is Broadcasted",
        values=[r.label for _, r in _ROLE_OPTIONS if r in config.presence_broadcast],
        options=[(label, r.label) for label, r in _ROLE_OPTIONS],
    )
    add_field(
        x,
        PREFIX + "getmemberlist",
        "list-multi",
        "Roles and Affiliations that May Retrieve Member List",
        values=[r.label for _, r in _ROLE_OPTIONS if r in config.get_member_list],
        options=[(label, r.label) for label, r in _ROLE_OPTIONS],
    )
    add_field(
        x, PREFIX + "enablelogging", "boolean", "Enable Public Logging?", values=[_b(config.enable_logging)]
    )
    add_field(
        x, MAM_FIELD, "boolean", "Archive messages (persistent rooms, XEP-0313)?", values=[_b(config.mam)]
    )
    add_field(
        x,
        PREFIX + "historylength",
        "text-single",
        f"Maximum Number of History Messages Returned by Room (0-{policy.max_history})",
        values=[str(config.history_length)],
    )
    add_field(
        x,
        None,
        "fixed",
        values=[
            "You may specify additional people who have admin status in the room. "
            "Please provide one Jabber ID per line."
        ],
    )
    add_field(x, PREFIX + "roomadmins", "jid-multi", "Room Admins", values=admins)
    add_field(
        x,
        None,
        "fixed",
        values=["You may specify additional owners for this room. Please provide one Jabber ID per line."],
    )
    add_field(x, PREFIX + "roomowners", "jid-multi", "Room Owners", values=owners)
    return x


@dataclass(frozen=True, slots=True)
class ConfigSubmission:
    """A validated configuration form: the new configuration and, if given, the full owner/admin lists."""

    config: RoomConfig
    owners: list[str] | None
    admins: list[str] | None


def read_config(form: SubmittedForm, current: RoomConfig, policy: ServicePolicy) -> ConfigSubmission:
    """Apply a submitted muc#roomconfig form to ``current``; fields left out keep their values."""
    if form.form_type not in (None, MUC_ROOMCONFIG):
        raise StanzaError("bad-request", "not a muc#roomconfig form")
    v = form.values
    changes: dict[str, object] = {}

    def text(var: str, attr: str) -> None:
        if var in v:
            value = "\n".join(v[var]) if v[var] else ""
            if len(value) > policy.max_text_chars:
                raise StanzaError("not-acceptable", f"{var} is too long")
            changes[attr] = value

    def boolean(var: str, attr: str) -> None:
        if var in v:
            changes[attr] = parse_bool(v[var][0] if v[var] else "", var)

    text(PREFIX + "roomname", "name")
    text(PREFIX + "roomdesc", "description")
    text(PREFIX + "lang", "lang")
    boolean(PREFIX + "persistentroom", "persistent")
    boolean(PREFIX + "publicroom", "public")
    boolean(PREFIX + "membersonly", "members_only")
    boolean(PREFIX + "allowinvites", "allow_invites")
    boolean(PREFIX + "moderatedroom", "moderated")
    boolean(PREFIX + "changesubject", "change_subject")
    boolean(PREFIX + "passwordprotectedroom", "password_protected")
    boolean(PREFIX + "enablelogging", "enable_logging")
    boolean(MAM_FIELD, "mam")
    boolean(PREFIX + "enablearchiving", "mam")  # Prosody's name for it, accepted too
    if PREFIX + "roomsecret" in v:
        changes["password"] = "".join(v[PREFIX + "roomsecret"])
    for var, attr, allowed in (
        (PREFIX + "allowpm", "allow_pm", ALLOW_PM_VALUES),
        (PREFIX + "whois", "whois", WHOIS_VALUES),
    ):
        if var in v:
            value = (v[var] or [""])[0]
            if value not in allowed:
                raise StanzaError("not-acceptable", f"{var} must be one of {', '.join(allowed)}")
            changes[attr] = value
    if PREFIX + "maxusers" in v:
        changes["max_users"] = _max_users((v[PREFIX + "maxusers"] or [""])[0], policy)
    for var in (PREFIX + "historylength", "muc#maxhistoryfetch"):
        if var in v:
            changes["history_length"] = _bounded_int((v[var] or [""])[0], var, 0, policy.max_history)
    for var, attr in (
        (PREFIX + "presencebroadcast", "presence_broadcast"),
        (PREFIX + "getmemberlist", "get_member_list"),
    ):
        if var in v:
            changes[attr] = _roles(v[var], var)
    config = replace(current, **changes)  # type: ignore[arg-type]
    if config.password_protected and not config.password:
        # §10.1.3: a password-protected room with a blank password violates service policy.
        raise StanzaError("not-acceptable", "a password-protected room needs a password")
    if not config.password_protected and config.password and PREFIX + "passwordprotectedroom" not in v:
        config = replace(config, password_protected=True)
    owners = _jids(v[PREFIX + "roomowners"], PREFIX + "roomowners") if PREFIX + "roomowners" in v else None
    admins = _jids(v[PREFIX + "roomadmins"], PREFIX + "roomadmins") if PREFIX + "roomadmins" in v else None
    return ConfigSubmission(config, owners, admins)


def _max_users(text: str, policy: ServicePolicy) -> int:
    if text.strip().lower() in ("none", ""):
        return policy.max_occupants
    return _bounded_int(text, PREFIX + "maxusers", 1, policy.max_occupants)


def _bounded_int(text: str, var: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise StanzaError("bad-request", f"{var} must be a number") from None
    if not low <= value <= high:
        raise StanzaError("not-acceptable", f"{var} must be between {low} and {high}")
    return value


def _roles(values: list[str], var: str) -> frozenset[Role]:
    roles: set[Role] = set()
    for value in values:
        try:
            role = Role.parse(value)
        except ValueError:
            raise StanzaError("not-acceptable", f"{var}: unknown role {value!r}") from None
        if role is Role.NONE:
            raise StanzaError("not-acceptable", f"{var}: unknown role {value!r}")
        roles.add(role)
    return frozenset(roles)


def _jids(values: list[str], var: str) -> list[str]:
    out: list[str] = []
    for value in values:
        for line in value.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                jid = JID.parse(line)
            except JIDError:
                raise StanzaError("jid-malformed", f"{var}: {line!r} is not a valid JID") from None
            bare = str(jid.bare)
            if bare not in out:
                out.append(bare)
    return out


def _b(value: bool) -> str:
    return "1" if value else "0"


def _opt(value: str) -> list[str]:
    return [value] if value else []


# -- room information (XEP-0045 §6.4, XEP-0128) -------------------------------------------------------
def info_form(
    *,
    config: RoomConfig,
    occupants: int,
    subject: str | None,
    contacts: Sequence[str],
) -> Element:
    """The muc#roominfo extension of a room's disco#info result."""
    x = new_form("result", MUC_ROOMINFO)
    add_field(x, "muc#roominfo_description", label="Description", values=[config.description])
    add_field(x, "muc#roomconfig_roomname", label="Natural-Language Room Name", values=[config.name])
    add_field(x, "muc#roominfo_occupants", label="Number of occupants", values=[str(occupants)])
    if subject is not None:
        add_field(x, "muc#roominfo_subject", label="Current Discussion Topic", values=[subject])
    add_field(
        x,
        "muc#roominfo_subjectmod",
        "boolean",
        "Occupants may change the subject",
        values=[_b(config.change_subject)],
    )
    add_field(
        x,
        "muc#roomconfig_changesubject",
        "boolean",
        "Subject can be modified",
        values=[_b(config.change_subject)],
    )
    if config.lang:
        add_field(x, "muc#roominfo_lang", label="Language of discussion", values=[config.lang])
    add_field(
        x,
        "muc#maxhistoryfetch",
        label="Maximum Number of History Messages Returned by Room",
        values=[str(config.history_length)],
    )
    add_field(
        x,
        "muc#roomconfig_allowinvites",
        "boolean",
        "Members may invite others",
        values=[_b(config.allow_invites)],
    )
    add_field(
        x, "muc#roomconfig_allowpm", "list-single", "Who may send private messages", values=[config.allow_pm]
    )
    add_field(x, "muc#roomconfig_whois", "list-single", "Who may discover real JIDs", values=[config.whois])
    if contacts:
        add_field(x, "muc#roominfo_contactjid", "jid-multi", "Contact Addresses", values=contacts)
    return x


# -- voice requests (§7.13, §8.6) -----------------------------------------------------------------------
def voice_request(form: SubmittedForm) -> bool:
    """Whether ``form`` is a muc#request asking for the participant role."""
    return form.form_type == MUC_REQUEST and form.first("muc#role") == "participant"


def voice_approval_form(nick: str, jid: str) -> Element:
    """The approval form the room sends to its moderators (§8.6)."""
    x = new_form(
        "form",
        MUC_REQUEST,
        title="Voice request",
        instructions='To approve this request for voice, select the "Grant voice to this person?" '
        "checkbox and click OK. To skip this request, click the cancel button.",
    )
    add_field(
        x,
        "muc#role",
        "list-single",
        "Requested role",
        values=["participant"],
        options=[("Participant", "participant")],
    )
    add_field(x, "muc#jid", "jid-single", "User ID", values=[jid])
    add_field(x, "muc#roomnick", "text-single", "Room Nickname", values=[nick])
    add_field(x, "muc#request_allow", "boolean", "Grant voice to this person?", values=["false"])
    return x


# -- registration (§7.10) -------------------------------------------------------------------------------
def register_form(room_local: str) -> Element:
    x = new_form(
        "form",
        MUC_REGISTER,
        title=f"Register with {room_local}",
        instructions="Choose the nickname to reserve in this room.",
    )
    add_field(x, "muc#register_roomnick", "text-single", "Desired Nickname", required=True)
    return x
