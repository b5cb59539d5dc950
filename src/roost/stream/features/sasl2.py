"""SASL2 (XEP-0388) with inline Bind2 (XEP-0386) and FAST tokens (XEP-0484), receiving role.

Beside RFC 6120 SASL (:mod:`roost.stream.features.sasl`), whose mechanism code it reuses: the same
SCRAM and PLAIN exchanges, framed as ``<authenticate/>``/``<challenge/>``/``<response/>`` in
``urn:xmpp:sasl:2``, without a stream restart (§2.5). What sets SASL2 apart needs the driver:

- after the mechanism succeeded, :class:`Sasl2Login` asks the driver to record the user agent,
  issue a FAST token if asked, bind the inline ``<bind/>`` request and enable its inline features;
  it answers with :meth:`Sasl2Server.complete` (or :meth:`Sasl2Server.refuse`), which writes
  ``<success/>`` (``<authorization-identifier/>``, ``<bound/>``) and the new stream features;
- a FAST ``HT-*`` mechanism (draft-schmaus-kitten-sasl-ht) needs the tokens stored for the client:
  :class:`NeedToken`, answered with :meth:`Sasl2Server.tokens`;
- ``<continue/>`` tasks (XEP-0388 §2.6.3): the SCRAM upgrade tasks of XEP-0480 the client asked
  for. :class:`NeedUpgrades` asks the driver which of them the account needs (it lacks keys for
  that hash), answered with :meth:`Sasl2Server.upgrades`; each task is ``<continue/>``,
  ``<next/>``, ``<task-data/>`` with the salt, ``<task-data/>`` with the client's SaltedPassword,
  then :class:`StoreUpgrade`, answered with :meth:`Sasl2Server.upgraded`. Only after the last
  task does the login go on to :class:`Sasl2Login` and ``<success/>``.

Tokens are stored as SHA-256 of the token only. Tokens are longer than the SHA-256 block (64
bytes), and HMAC (RFC 2104 §2) first hashes such a key, so HMAC(token, m) = HMAC(SHA-256(token), m):
the stored hash verifies the client's HMAC, yet a leaked database gives no usable token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from roost.jid import JID
from roost.stanza.errors import StreamError
from roost.stream.core import Event, Phase, Stream, StreamEvent
from roost.stream.events import Authenticated
from roost.stream.features.sasl import ALL_MECHANISMS, SaslServer
from roost.stream.sasl.scram import HASH_NAMES, SaslFailure, digest_size
from roost.xml.element import Element
from roost.xml.ns import BIND2, FAST, SASL, SASL2, SASL_UPGRADE, SCRAM_UPGRADE, SM

#: FAST mechanism suffix → the channel binding whose data goes into the HMAC (None: no binding).
HT_BINDINGS: dict[str, str | None] = {
    "NONE": None,
    "UNIQ": "tls-unique",
    "EXPR": "tls-exporter",
    "ENDP": "tls-server-end-point",
}
HT_MECHANISMS = tuple(f"HT-SHA-256-{suffix}" for suffix in ("EXPR", "UNIQ", "ENDP", "NONE"))
#: Longer than the SHA-256 block size, so that the stored SHA-256 is HMAC's effective key.
TOKEN_BYTES = 72
#: XEP-0480 §3: task names carry no -PLUS (channel binding has nothing to do with stored keys).
UPGRADE_PREFIX = "UPGR-SCRAM-"


def upgrade_task(hash_name: str) -> str:
    """``"SHA-256"`` → ``"UPGR-SCRAM-SHA-256"`` (XEP-0480 §2.1)."""
    return UPGRADE_PREFIX + hash_name


def upgrade_hash(task: str) -> str | None:
    """The SCRAM hash a task upgrades to, or None for a task Roost does not know."""
    name = task[len(UPGRADE_PREFIX) :] if task.startswith(UPGRADE_PREFIX) else ""
    return name if name in HASH_NAMES else None


@dataclass(frozen=True, slots=True)
class UserAgent:
    """The client's ``<user-agent/>`` (XEP-0388 §2.3): never shown to other entities."""

    id: str
    software: str = ""
    device: str = ""


@dataclass(frozen=True, slots=True)
class StoredToken:
    """One FAST token as the driver keeps it: SHA-256 of the token, its mechanism and expiry."""

    key: bytes
    mechanism: str
    expiry: float


@dataclass(frozen=True, slots=True)
class NeedToken(Event):
    """Look up the FAST tokens of ``username``'s client ``client_id``; answer with ``tokens``."""

    domain: str
    username: str
    client_id: str


@dataclass(frozen=True, slots=True)
class ScramUpgrade:
    """One SCRAM upgrade task to run: the salt and iteration count the new keys will have."""

    task: str
    hash_name: str
    salt: bytes
    iterations: int


@dataclass(frozen=True, slots=True)
class NeedUpgrades(Event):
    """Which of these XEP-0480 tasks does ``username`` need? Answer with ``upgrades``."""

    domain: str
    username: str
    tasks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoreUpgrade(Event):
    """Store keys derived from the client's SaltedPassword for ``upgrade``; answer with ``upgraded``."""

    domain: str
    username: str
    upgrade: ScramUpgrade
    salted_password: bytes


@dataclass(frozen=True, slots=True)
class Sasl2Login(Event):
    """The mechanism succeeded: do what the request asked, then ``complete`` (or ``refuse``).

    ``bind`` is the inline Bind2 request (None: the client binds later, RFC 6120 style); ``resume``
    an inline XEP-0198 ``<resume/>`` (tried first; Bind2 only if it fails, XEP-0386 §3.1);
    ``token_request`` the FAST mechanism of a requested token; ``token_used`` the stored token this
    login was made with (rotate or drop it); ``invalidate`` asks to drop that token (XEP-0484 §4.4).
    """

    domain: str
    username: str
    mechanism: str
    user_agent: UserAgent | None
    bind: Element | None
    resume: Element | None
    token_request: str | None
    token_used: StoredToken | None
    invalidate: bool


def ht_mechanisms(channel_bindings: Sequence[str]) -> list[str]:
    """The FAST mechanisms usable on a connection with these channel-binding types."""
    return [
        m for m in HT_MECHANISMS if (cb := HT_BINDINGS[m.rsplit("-", 1)[1]]) is None or cb in channel_bindings
    ]


def ht_key(token: str) -> bytes:
    """What is stored for a token (see the module docstring)."""
    return hashlib.sha256(token.encode()).digest()


def ht_proof(key_or_token: bytes, label: bytes, cb_data: bytes) -> bytes:
    """HMAC-SHA-256 over ``label`` ("Initiator"/"Responder") and the channel-binding data."""
    return hmac.digest(key_or_token, label + cb_data, "sha256")


def bind2_resource(domain: str, username: str, client_id: str | None, tag: str, random: str) -> str:
    """XEP-0386 §3.2: ``tag/identifier``, stable per client installation, never showing its id."""
    if client_id:
        digest = hashlib.sha256(f"{domain}\0{username}\0{client_id}\0{tag}".encode()).digest()
        ident = base64.b32encode(digest[:10]).decode().lower()
    else:
        ident = random
    return f"{tag}/{ident}" if tag else ident


def _b64(el: Element | None) -> bytes | None:
    if el is None:
        return b""
    text = el.text.strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class Sasl2Server(SaslServer):
    """Receiving role: ``<authentication/>`` before authentication; ``<authenticate/>`` → ``<success/>``."""

    __slots__ = (
        "_additional",
        "_awaiting",
        "_ht_data",
        "_request",
        "_requested",
        "_tasks",
        "_token_used",
        "_user_agent",
        "bind_features",
        "done",
        "fast",
        "upgrades_offered",
    )

    def __init__(
        self,
        *,
        mechanisms: Sequence[str] = ALL_MECHANISMS,
        require_encryption: bool = True,
        max_failures: int = 3,
        bind_features: Callable[[], Sequence[str]] = lambda: (),
        fast: bool = True,
        upgrades: Sequence[str] = (),
    ) -> None:
        super().__init__(
            mechanisms=mechanisms, require_encryption=require_encryption, max_failures=max_failures
        )
        self.bind_features = bind_features
        self.fast = fast
        self.done = False
        self._request: Element | None = None
        self._user_agent: UserAgent | None = None
        self._additional = b""
        self._ht_data = b""
        self._token_used: StoredToken | None = None
        #: XEP-0480 task names offered (one per SCRAM hash the server stores keys for).
        self.upgrades_offered = tuple(upgrade_task(h) for h in upgrades if h in HASH_NAMES)
        #: Tasks the client asked for, until the driver said which the account needs.
        self._requested: tuple[str, ...] = ()
        #: Tasks still to run, once the first <continue/> went out (None: no task under way).
        self._tasks: list[ScramUpgrade] | None = None
        #: What the running task waits for from the client: "next" or "task-data".
        self._awaiting = ""

    def cache_key(self, stream: Stream) -> Hashable:
        # Nothing is advertised before TLS or after authentication (see advertise): the modules'
        # Bind2 features are looked up only for the one offer that shows them. The core's key
        # already holds ``secure`` and the channel bindings.
        if stream.authenticated or not stream.secure:
            return None
        return (stream.jid is not None, tuple(self.bind_features()))

    def advertise(self, stream: Stream) -> list[Element] | None:
        # §5: SASL2 only after TLS.
        if stream.authenticated or not stream.secure:
            return None
        offered = self.offered(stream)
        if not offered:
            return None  # §2.1: never without a mechanism
        auth = Element("authentication", SASL2)
        for mech in offered:
            auth.add("mechanism", text=mech)
        inline = auth.add("inline")
        features = self.bind_features()
        if SM in features:
            inline.add("sm", SM)  # resumption inside <authenticate/> (XEP-0198 with XEP-0388)
        bind = inline.add("bind", BIND2)
        if features:
            bind_inline = bind.add("inline")
            for var in features:
                bind_inline.add("feature", attrs={"var": var})
        if self.fast:
            fast = inline.add("fast", FAST)
            for mech in ht_mechanisms(list(stream.channel_bindings)):
                fast.add("mechanism", text=mech)
        for task in self.upgrades_offered:
            auth.add("upgrade", SASL_UPGRADE, text=task)  # XEP-0480 §2.1
        return [auth]

    # -- input -----------------------------------------------------------------------------------
    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns != SASL2:
            return None
        if stream.authenticated or self.done:
            # §6.3: once <success/> was sent, another <authenticate/> is a stream error.
            return stream.close(StreamError("policy-violation", "already authenticated"))
        if not stream.secure:
            return stream.close(StreamError("policy-violation", "encryption is required"))
        if self._tasks is not None:
            return self._task_input(stream, el)
        if el.name == "authenticate" and not self.challenging:
            return self._authenticate(stream, el)
        if el.name == "response" and self._scram is not None and self.challenging:
            data = _b64(el)
            if data is None:
                return self._failure(stream, SaslFailure("incorrect-encoding"))
            try:
                if not self._scram_started:
                    return self._scram_start(stream, data)
                final = self._scram.finish(data)
            except SaslFailure as e:
                return self._failure(stream, e)
            return self._success(stream, final)
        if el.name == "abort":
            return self._failure(stream, SaslFailure("aborted"))
        return self._failure(stream, SaslFailure("malformed-request", f"unexpected <{el.name}/>"))

    def _authenticate(self, stream: Stream, el: Element) -> list[StreamEvent]:
        self._request = el
        ua = el.find("user-agent", SASL2)
        self._user_agent = None
        if ua is not None:
            self._user_agent = UserAgent(
                ua.attrs.get("id", "")[:64],
                (ua.find_text("software", SASL2) or "")[:256],
                (ua.find_text("device", SASL2) or "")[:256],
            )
        # XEP-0480 §2.2: tasks the client can run; unknown ones are not an error, just not run.
        asked = (u.text.strip() for u in el.elements("upgrade", SASL_UPGRADE))
        self._requested = tuple(dict.fromkeys(t for t in asked if t in self.upgrades_offered))
        mech = el.attrs.get("mechanism", "")
        data = _b64(el.find("initial-response", SASL2))
        if mech in HT_MECHANISMS:
            return self._ht_start(stream, mech, data)
        return self._start(stream, mech, data)

    # -- FAST ------------------------------------------------------------------------------------
    def _ht_start(self, stream: Stream, mech: str, data: bytes | None) -> list[StreamEvent]:
        self._mechanism = mech
        self._scram = None
        if not self.fast or mech not in ht_mechanisms(list(stream.channel_bindings)):
            return self._failure(stream, SaslFailure("invalid-mechanism"))
        if data is None:
            return self._failure(stream, SaslFailure("incorrect-encoding"))
        authcid, sep, proof = data.partition(b"\0")
        if not sep or not authcid or len(proof) != 32:
            return self._failure(stream, SaslFailure("malformed-request", "expected authcid NUL HMAC"))
        if self._user_agent is None or not self._user_agent.id:
            # XEP-0484 §4.2: tokens belong to one client, named by its user-agent id.
            return self._failure(stream, SaslFailure("not-authorized", "FAST needs a user-agent id"))
        try:
            username = authcid.decode()
            jid = JID.parse(username) if "@" in username else None
        except (UnicodeDecodeError, ValueError):
            return self._failure(stream, SaslFailure("not-authorized"))
        if jid is not None:
            if jid.domain != stream.domain or jid.local is None:
                return self._failure(stream, SaslFailure("not-authorized"))
            username = jid.local
        assert stream.domain is not None
        self._pending_user = username
        self._ht_data = proof
        self._wait(stream)
        return [NeedToken(stream.domain, username, self._user_agent.id)]

    def tokens(
        self, stream: Stream, stored: Sequence[StoredToken], disabled: str | None = None
    ) -> list[StreamEvent]:
        """The driver's answer to :class:`NeedToken`: the client's live tokens (maybe none);
        ``disabled``: the account is locked (refused after a correct proof, as with a password)."""
        if not self.pending:
            return []
        self.pending = False
        self._disabled = disabled
        stream.pending_on = None
        cb_type = HT_BINDINGS[self._mechanism.rsplit("-", 1)[1]]
        cb_data = stream.channel_bindings.get(cb_type, b"") if cb_type else b""
        now = time.time()
        used: StoredToken | None = None
        for token in stored:
            expected = ht_proof(token.key, b"Initiator", cb_data)
            # Constant-time comparison (XEP-0484 §7); every candidate is checked.
            if hmac.compare_digest(expected, self._ht_data) and token.mechanism == self._mechanism:
                used = token
        if used is None or used.expiry <= now:
            # §6: a token the server no longer trusts fails with credentials-expired; so does an
            # unknown one (the client falls back to its password either way).
            condition = "credentials-expired" if used is not None else "not-authorized"
            return self._failure(stream, SaslFailure(condition)) + stream.resume()
        self._token_used = used
        return self._success(stream, ht_proof(used.key, b"Responder", cb_data))

    # -- outcome ---------------------------------------------------------------------------------
    def _send_challenge(self, stream: Stream, data: bytes) -> None:
        el = Element("challenge", SASL2)
        if data:
            el.children.append(base64.b64encode(data).decode())
        stream.send(el)

    def _failure(self, stream: Stream, failure: SaslFailure) -> list[StreamEvent]:
        self._tasks = None
        self._requested = ()
        self._awaiting = ""
        return super()._failure(stream, failure)

    def _failure_element(self, failure: SaslFailure) -> Element:
        el = Element("failure", SASL2)
        el.add(failure.condition, SASL)
        if failure.text:
            el.add("text", attrs={"xml:lang": "en"}, text=failure.text)
        return el

    def _success(self, stream: Stream, additional: bytes) -> list[StreamEvent]:
        """The mechanism succeeded: tasks first if the client asked for any, then the login."""
        assert stream.domain is not None and self._pending_user is not None
        if self._disabled is not None:
            # RFC 6120 §6.5.1, after the proof: a locked account is refused, whatever the mechanism.
            return self._failure(stream, SaslFailure("account-disabled", self._disabled))
        self._scram = None
        self.challenging = False
        self._additional = additional
        if self._requested:
            self._wait(stream)
            return [NeedUpgrades(stream.domain, self._pending_user, self._requested)]
        return self._login(stream)

    # -- <continue/> tasks (XEP-0388 §2.6.3, XEP-0480) -------------------------------------------
    def upgrades(self, stream: Stream, needed: Sequence[ScramUpgrade]) -> list[StreamEvent]:
        """The driver's answer to :class:`NeedUpgrades`: the tasks to run (maybe none)."""
        if not self.pending or self._tasks is not None or not self._requested:
            return []
        self.pending = False
        stream.pending_on = None
        self._requested = ()
        if not needed:
            return self._login(stream)
        self._tasks = list(needed)
        self._continue(stream)
        return stream.resume()

    def _continue(self, stream: Stream) -> None:
        """``<continue/>`` offering the next task; the mechanism's additional data goes in the first."""
        assert self._tasks
        el = Element("continue", SASL2)
        if self._additional:
            el.add("additional-data", text=base64.b64encode(self._additional).decode())
            self._additional = b""
        el.add("tasks").add("task", text=self._tasks[0].task)
        stream.send(el)
        self._awaiting = "next"
        stream.active = self

    def _task_input(self, stream: Stream, el: Element) -> list[StreamEvent]:
        assert self._tasks is not None and stream.domain is not None and self._pending_user is not None
        if el.name == "authenticate":
            # XEP-0388 §7: after <continue/>, another <authenticate/> is a stream error.
            return stream.close(StreamError("policy-violation", "authentication is already under way"))
        if el.name == "abort":
            return self._failure(stream, SaslFailure("aborted"))
        task = self._tasks[0]
        if el.name == "next" and self._awaiting == "next":
            if el.attrs.get("task") != task.task:
                return self._failure(
                    stream, SaslFailure("malformed-request", f"the task offered is {task.task}")
                )
            # XEP-0480 §3: the salt and iteration count the client derives the SaltedPassword with.
            data = Element("task-data", SASL2)
            data.add(
                "salt",
                SCRAM_UPGRADE,
                {"iterations": str(task.iterations)},
                base64.b64encode(task.salt).decode(),
            )
            stream.send(data)
            self._awaiting = "task-data"
            return []
        if el.name == "task-data" and self._awaiting == "task-data":
            hash_el = el.find("hash", SCRAM_UPGRADE)
            salted = _b64(hash_el) if hash_el is not None else None
            if not salted:  # §3: <hash/> MUST NOT be empty
                return self._failure(stream, SaslFailure("incorrect-encoding", "expected <hash/> in base64"))
            if len(salted) != digest_size(task.hash_name):
                return self._failure(
                    stream,
                    SaslFailure("malformed-request", f"a {task.hash_name} SaltedPassword has another length"),
                )
            self._awaiting = ""
            self._wait(stream)
            return [StoreUpgrade(stream.domain, self._pending_user, task, salted)]
        return self._failure(
            stream, SaslFailure("malformed-request", f"unexpected <{el.name}/> in task {task.task}")
        )

    def upgraded(self, stream: Stream, ok: bool = True) -> list[StreamEvent]:
        """The driver's answer to :class:`StoreUpgrade`: the next task, or the login."""
        if not self.pending or not self._tasks:
            return []
        self.pending = False
        stream.pending_on = None
        if not ok:
            return self._failure(
                stream, SaslFailure("temporary-auth-failure", "could not store the keys")
            ) + (stream.resume())
        self._tasks.pop(0)
        if self._tasks:
            self._continue(stream)  # §2.6.3: one <continue/> per task
            return stream.resume()
        self._tasks = None
        return self._login(stream)

    def _login(self, stream: Stream) -> list[StreamEvent]:
        """Authenticated, every task done: hold the stream while the driver sets the session up."""
        assert stream.domain is not None and self._pending_user is not None
        username = self._pending_user
        self._pending_user = None
        stream.authenticated = True
        stream.username = username
        request = self._request
        assert request is not None
        fast = request.find("fast", FAST)
        token_request = request.find("request-token", FAST)
        token_mech = token_request.attrs.get("mechanism") if token_request is not None else None
        if token_mech not in ht_mechanisms(list(stream.channel_bindings)):
            token_mech = None
        self._wait(stream)
        used = self._token_used
        return [
            Authenticated(stream.domain, username, self._mechanism),
            Sasl2Login(
                stream.domain,
                username,
                self._mechanism,
                self._user_agent,
                request.find("bind", BIND2),
                request.find("resume", SM),
                token_mech,
                used,
                fast is not None and used is not None and fast.attrs.get("invalidate") in ("1", "true"),
            ),
        ]

    def complete(
        self,
        stream: Stream,
        jid: JID | None,
        extra: Sequence[Element] = (),
        bound: Sequence[Element] = (),
        *,
        resumed: bool = False,
    ) -> list[StreamEvent]:
        """The driver set the session up: ``<success/>`` (with the full JID if it bound ``jid``, or
        resumed a session with that JID: then ``extra`` carries ``<resumed/>``, no ``<bound/>``)."""
        if not self.pending or stream.pending_on is not self:
            return []
        self.pending = False
        self.done = True
        self._request = None
        assert stream.username is not None and stream.domain is not None
        success = Element("success", SASL2)
        if self._additional:
            success.add("additional-data", text=base64.b64encode(self._additional).decode())
        success.add(
            "authorization-identifier", text=str(jid) if jid else f"{stream.username}@{stream.domain}"
        )
        success.children.extend(extra)
        if jid is not None:
            stream.jid = jid
            if not resumed:
                result = success.add("bound", BIND2)
                result.children.extend(bound)
        stream.send(success)
        # §2.5: features of the authenticated stream follow at once, with no restart.
        events = stream.send_features()
        established = jid is not None or stream.phase is Phase.ESTABLISHED
        if established:
            events += stream.establish()
        return events + stream.resume(Phase.ESTABLISHED if established else Phase.NEGOTIATING)

    def refuse(self, stream: Stream, condition: str, text: str | None = None) -> list[StreamEvent]:
        """The driver could not set the session up (e.g. too many resources): fail the login."""
        if not self.pending or stream.pending_on is not self:
            return []
        self.pending = False
        stream.authenticated = False
        self._pending_user = stream.username
        stream.username = None
        return self._failure(stream, SaslFailure(condition, text)) + stream.resume()
