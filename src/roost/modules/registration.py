"""XEP-0077 In-Band Registration: new accounts, password changes and account removal over XMPP.

Off by default: XEP-0479 §2.3 (compliance suites) wants it supported "but not enabled in default server
configurations", and XEP-0077 §11 calls it insecure unless the channel is protected. When enabled:

* an unauthenticated client may create an account (§3.1.1) on the c2s stream before SASL. The stream
  offers ``<register xmlns='http://jabber.org/features/iq-register'/>`` where it offers SASL (so over
  TLS when c2s.require_encryption) and hands the ``jabber:iq:register`` IQ to this module through the
  ``c2s/register`` hook;
* a logged-in user may change their password (§3.3) or remove their account (§3.2): the account and
  all its data go, its sessions end with a <not-authorized/> stream error.

Passwords are never stored: only SCRAM keys for each of storage.scram_hashes, derived off the event
loop (PBKDF2 is slow on purpose).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence

from pydantic import Field, field_validator

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import RegisterEvent, StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, iq_handler
from roost.jid import JIDError, prepare_domain, prepare_localpart
from roost.stanza import error_reply, iq_result
from roost.stanza.errors import StanzaError
from roost.storage.api import AccountExists, NoSuchAccount
from roost.stream.sasl.scram import ScramCredentials, derive_credentials
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS, REGISTER

FORM_REGISTER = "jabber:iq:register"  # XEP-0077 §13.4 FORM_TYPEs
FORM_CANCEL = "jabber:iq:register:cancel"
FORM_CHANGE_PASSWORD = "jabber:iq:register:changepassword"

_DEFAULT_RESERVED = [
    "abuse",
    "admin",
    "administrator",
    "hostmaster",
    "postmaster",
    "root",
    "security",
    "support",
    "webmaster",
]


class RegistrationOptions(ModuleOptions):
    """XEP-0077 in-band registration, password change and account removal (docs/registration.md)."""

    enabled: bool = Field(
        default=False,
        description="Load this module. Off by default: XEP-0479 wants in-band registration supported but "
        "not enabled in default configurations.",
        examples=[True],
    )
    new_accounts: bool = Field(
        True,
        description="Let unauthenticated clients create accounts. false keeps only password change and "
        "account removal for logged-in users.",
        examples=[False],
    )
    domains: list[str] = Field(
        default_factory=list,
        description="Domains that take new accounts; empty means every domain in server.domains.",
        examples=[["example.org"]],
    )
    min_password_length: int = Field(
        8, ge=1, le=1024, description="Shortest password accepted (in characters).", examples=[12]
    )
    reserved_usernames: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_RESERVED),
        description="Usernames nobody may register (the local parts of server.admins are reserved too).",
        examples=[["admin", "root", "support"]],
    )
    max_per_ip: int = Field(
        3,
        ge=0,
        le=1_000_000,
        description="New accounts one IP address may create per ip_window_seconds; 0 means no limit.",
        examples=[1],
    )
    ip_window_seconds: int = Field(
        3600, ge=1, le=31_536_000, description="The window of max_per_ip, in seconds.", examples=[86400]
    )
    allow_password_change: bool = Field(
        True, description="Let logged-in users change their password in-band (§3.3).", examples=[False]
    )
    allow_cancel: bool = Field(
        True,
        description="Let logged-in users remove their own account and all its data (§3.2).",
        examples=[False],
    )
    instructions: str = Field(
        "Choose a username and password for your new account.",
        min_length=1,
        description="Text shown to users by clients that register in-band.",
        examples=["Accounts are for members of the example club only."],
    )

    @field_validator("domains")
    @classmethod
    def _check_domains(cls, value: list[str]) -> list[str]:
        prepared = []
        for text in value:
            try:
                prepared.append(prepare_domain(text))
            except JIDError as e:
                raise ValueError(f"{text!r} is not a valid domain name ({e})") from None
        return prepared


def derive_all(password: str, hash_names: Sequence[str], iterations: int) -> list[ScramCredentials]:
    """SCRAM credentials for every hash; ValueError for a password PRECIS refuses (blocking: PBKDF2)."""
    return [derive_credentials(password, name, iterations) for name in hash_names]


def form_values(form: Element) -> dict[str, str]:
    """The first value of each field of a submitted data form (XEP-0004)."""
    values: dict[str, str] = {}
    for field in form.elements("field", DATA_FORMS):
        var = field.get("var")
        if var and var not in values:
            values[var] = field.find_text("value", DATA_FORMS) or ""
    return values


class Registration(Module):
    """jabber:iq:register for the server's own accounts."""

    name = "registration"
    xeps = (Xep(77, "2.4", note="data forms accepted; no `<key/>` (obsolete), no redirection"),)
    features = (REGISTER,)
    Options = RegistrationOptions
    options: RegistrationOptions

    async def start(self) -> None:
        options = self.options
        self.domain = self.host.domain
        self._reserved: set[str] = set()
        for name in options.reserved_usernames:
            try:
                self._reserved.add(prepare_localpart(name))
            except JIDError:
                self.log.warning("reserved username %r is not a valid username; ignored", name)
        #: Successful registrations per client address (monotonic times), for max_per_ip.
        self._recent: dict[str, deque[float]] = {}
        self._unhook: Callable[[], None] | None = None
        if options.new_accounts and (not options.domains or self.domain in options.domains):
            # Registered by hand: only a host that takes new accounts makes c2s offer registration.
            self._unhook = self.host.bus.on(hooks.C2S_REGISTER, self.unauthenticated)

    async def stop(self) -> None:
        if self._unhook is not None:
            self._unhook()
            self._unhook = None

    # -- before authentication (§3.1.1) ----------------------------------------------------------------
    async def unauthenticated(self, request: RegisterEvent) -> bool:
        iq = request.iq
        try:
            if iq.attrs.get("type") == "get":
                request.reply = iq_result(iq, self._registration_form())
            else:
                await self._create_account(request)
                request.reply = iq_result(iq)
        except StanzaError as e:
            request.reply = error_reply(iq, e)
        except Exception:
            self.log.exception("in-band registration failed")
            request.reply = error_reply(iq, StanzaError("internal-server-error"))
        return True

    def _registration_form(self) -> Element:
        """The fields to fill in: legacy elements and the same as a data form (§3.1, §4)."""
        instructions = self.options.instructions
        query = Element("query", REGISTER)
        query.add("instructions", text=instructions)
        query.add("username")
        query.add("password")
        form = query.add("x", DATA_FORMS, {"type": "form"})
        form.add("title", text="Account registration")
        form.add("instructions", text=instructions)
        form_type = form.add("field", attrs={"type": "hidden", "var": "FORM_TYPE"})
        form_type.add("value", text=FORM_REGISTER)
        fields = (("username", "text-single", "Username"), ("password", "text-private", "Password"))
        for var, type_, label in fields:
            field = form.add("field", attrs={"type": type_, "var": var, "label": label})
            field.add("required")
        return query

    async def _create_account(self, request: RegisterEvent) -> None:
        query = request.iq.first()
        assert query is not None
        if query.find("remove", REGISTER) is not None:
            # §3.2: removal from a connection that is not logged in.
            raise StanzaError("unexpected-request", "log in to remove your account")
        if request.session.data.get(self.name):
            # §3.1.1: one account per connection; now log in with it.
            raise StanzaError("not-acceptable", "an account was already registered on this connection")
        username_text, password, _ = self._submitted(query)
        if not username_text or not password:
            # §3.1: all requested information, and a password with character data.
            raise StanzaError("not-acceptable", "a username and a password are required")
        try:
            username = prepare_localpart(username_text)
        except JIDError:
            raise StanzaError("jid-malformed", "this username is not allowed in an address") from None
        if username in self._reserved or f"{username}@{self.domain}" in self.server.config.server.admins:
            raise StanzaError("not-acceptable", "this username is reserved")
        self._check_password(password)
        self._check_rate(request.peer)
        accounts = self.server.storage.accounts
        if await accounts.exists(self.domain, username):
            raise StanzaError("conflict", "this username is taken")  # §3.1
        credentials = await self._derive(password)
        try:
            await self.server.accounts.create(self.domain, username, credentials)
        except AccountExists:
            raise StanzaError("conflict", "this username is taken") from None
        self._note_registration(request.peer)
        request.session.data[self.name] = True
        self.log.info("registered %s@%s in-band from %s", username, self.domain, request.peer or "?")

    def _submitted(self, query: Element) -> tuple[str | None, str | None, dict[str, str]]:
        """(username, password, all form values) from a data form if there is one (§6), else legacy fields."""
        form = query.find("x", DATA_FORMS)
        if form is not None:
            if form.get("type") != "submit":
                raise StanzaError("bad-request", "submit the data form (type='submit')")
            values = form_values(form)
            return values.get("username"), values.get("password"), values
        return query.find_text("username", REGISTER), query.find_text("password", REGISTER), {}

    def _check_password(self, password: str) -> None:
        minimum = self.options.min_password_length
        if len(password) < minimum:
            raise StanzaError("not-acceptable", f"the password needs at least {minimum} characters")
        if len(password) > 1024:
            raise StanzaError("not-acceptable", "the password is too long")

    async def _derive(self, password: str) -> list[ScramCredentials]:
        storage = self.server.config.storage
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                None, derive_all, password, list(storage.scram_hashes), storage.scram_iterations
            )
        except ValueError:
            # PRECIS OpaqueString refused it (control characters and the like).
            raise StanzaError("not-acceptable", "the password has characters that are not allowed") from None

    def _check_rate(self, peer: str) -> None:
        limit = self.options.max_per_ip
        if not limit or not peer:
            return
        recent = self._recent.get(peer)
        if recent is None:
            return
        horizon = time.monotonic() - self.options.ip_window_seconds
        while recent and recent[0] < horizon:
            recent.popleft()
        if len(recent) >= limit:
            too_many = "too many new accounts from your address; try again later"
            raise StanzaError("policy-violation", too_many, type="wait")

    def _note_registration(self, peer: str) -> None:
        if not self.options.max_per_ip or not peer:
            return
        now = time.monotonic()
        if len(self._recent) > 10_000:  # forget addresses whose window is over
            horizon = now - self.options.ip_window_seconds
            for address in [a for a, times in self._recent.items() if not times or times[-1] < horizon]:
                del self._recent[address]
        self._recent.setdefault(peer, deque()).append(now)

    # -- logged-in users (§3.2, §3.3) --------------------------------------------------------------------
    @iq_handler("get", REGISTER, "query", to=Target.HOST)
    def info_host(self, event: StanzaEvent) -> Element:
        return self._registered_info(event)

    @iq_handler("get", REGISTER, "query", to=Target.SELF)
    def info_self(self, event: StanzaEvent) -> Element:
        return self._registered_info(event)

    @iq_handler("set", REGISTER, "query", to=Target.HOST)
    async def change_host(self, event: StanzaEvent) -> None:
        await self._change(event)

    @iq_handler("set", REGISTER, "query", to=Target.SELF)
    async def change_self(self, event: StanzaEvent) -> None:
        await self._change(event)

    def _own_account(self, event: StanzaEvent) -> str:
        frm = event.frm
        if frm.local is None or frm.domain != self.domain:
            # Only this domain's accounts are registered here; Roost is no registration service.
            raise StanzaError("service-unavailable")
        return frm.local

    def _registered_info(self, event: StanzaEvent) -> Element:
        """§3.1: an entity already registered gets <registered/> and what is on file (no password)."""
        username = self._own_account(event)
        query = Element("query", REGISTER)
        actions = []
        if self.options.allow_password_change:
            actions.append("send a new <password/> to change yours")
        if self.options.allow_cancel:
            actions.append("send <remove/> to delete your account")
        text = "You are registered" + (": " + "; ".join(actions) if actions else "") + "."
        query.add("instructions", text=text)
        query.add("registered")
        query.add("username", text=username)
        query.add("password")
        return query

    async def _change(self, event: StanzaEvent) -> None:
        username = self._own_account(event)
        query = event.stanza.first()
        assert query is not None
        if query.find("remove", REGISTER) is not None:
            if len(list(query.elements())) != 1:
                raise StanzaError("bad-request", "<remove/> must be the only child of <query/>")  # §3.2
            await self._cancel(username, None)
            return
        claimed, password, values = self._submitted(query)
        if values.get("FORM_TYPE") == FORM_CANCEL:
            await self._cancel(username, password or None)
            return
        if not self.options.allow_password_change:
            raise StanzaError("not-allowed", "passwords cannot be changed in-band here")  # §3.3
        if claimed:
            try:
                same = prepare_localpart(claimed) == username
            except JIDError:
                same = False
            if not same and claimed != f"{username}@{self.domain}":
                raise StanzaError("forbidden", "you can only change your own password")
        if not password:
            # §3.3: an empty <password/> MUST NOT change the password.
            raise StanzaError("bad-request", "the new password is empty; your password is unchanged")
        old = values.get("old_password")
        if old is not None and not await self.server.accounts.password_matches(self.domain, username, old):
            raise StanzaError("not-authorized", "the old password is wrong")
        self._check_password(password)
        credentials = await self._derive(password)
        try:
            await self.server.accounts.set_credentials(self.domain, username, credentials)
        except NoSuchAccount:
            raise StanzaError("registration-required") from None
        self.log.info("%s@%s changed their password in-band", username, self.domain)

    async def _cancel(self, username: str, password: str | None) -> None:
        """§3.2: remove the account now; its sessions end and its data goes once the result is sent."""
        if not self.options.allow_cancel:
            raise StanzaError("not-allowed", "accounts cannot be removed in-band here")
        if password is not None and not await self.server.accounts.password_matches(
            self.domain, username, password
        ):
            raise StanzaError("not-authorized", "the password is wrong")
        # Nobody can log in to it from now on.
        if not await self.server.storage.accounts.delete(self.domain, username):
            raise StanzaError("registration-required")
        self.log.info("%s@%s removed their account in-band", username, self.domain)
        # The IQ result is queued as soon as this handler returns, before the spawned task runs.
        self.server.spawn(
            self.server.accounts.wind_up(self.domain, username), f"unregister-{username}@{self.domain}"
        )
