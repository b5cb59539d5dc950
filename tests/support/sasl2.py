"""A raw SASL2 (XEP-0388) client on top of RawClient: SCRAM, PLAIN and FAST (XEP-0484) logins
with inline Bind2 (XEP-0386), written from the specs so the tests see the exact bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field

from roost.stream.sasl.scram import ScramClient, parse_mechanism, salted_password
from roost.xml.element import Element
from roost.xml.ns import BIND2, FAST, SASL, SASL2, SASL_UPGRADE, SCRAM_UPGRADE, STREAM
from tests.support.raw import RawClient

HT_CB = {"NONE": None, "EXPR": "tls-exporter", "ENDP": "tls-server-end-point", "UNIQ": "tls-unique"}


@dataclass
class Result:
    """The server's answer: ``<success/>``/``<failure/>`` and, after success, the new features."""

    element: Element
    features: Element | None = None

    @property
    def ok(self) -> bool:
        return self.element.name == "success"

    @property
    def condition(self) -> str:
        return next((c.name for c in self.element.elements() if c.ns == SASL), "")

    @property
    def authzid(self) -> str:
        return self.element.find_text("authorization-identifier", SASL2) or ""

    @property
    def token(self) -> Element | None:
        return self.element.find("token", FAST)

    @property
    def bound(self) -> Element | None:
        return self.element.find("bound", BIND2)


@dataclass
class Agent:
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    software: str = "TestClient"
    device: str = "Test device"


def offered(raw: RawClient) -> tuple[list[str], list[str], Element | None]:
    """The SASL2 mechanisms, the FAST mechanisms, and the Bind2 feature of the current features."""
    assert raw.features is not None
    auth = raw.features.find("authentication", SASL2)
    if auth is None:
        return [], [], None
    mechs = [m.text for m in auth.elements("mechanism")]
    inline = auth.find("inline", SASL2)
    fast = inline.find("fast", FAST) if inline is not None else None
    bind = inline.find("bind", BIND2) if inline is not None else None
    return mechs, [m.text for m in fast.elements("mechanism")] if fast is not None else [], bind


def authenticate(
    mechanism: str,
    initial: bytes | None,
    agent: Agent | None,
    *,
    bind: bool = True,
    tag: str = "test",
    inline: list[Element] | None = None,
    request_token: str | None = None,
    fast: dict[str, str] | None = None,
    upgrade: list[str] | None = None,
    extra: list[Element] | None = None,
) -> Element:
    el = Element("authenticate", SASL2, {"mechanism": mechanism})
    if initial is not None:
        el.add("initial-response", text=base64.b64encode(initial).decode() or "=")
    if agent is not None:
        ua = el.add("user-agent", attrs={"id": agent.id})
        ua.add("software", text=agent.software)
        ua.add("device", text=agent.device)
    if bind:
        b = el.add("bind", BIND2)
        if tag:
            b.add("tag", text=tag)
        for child in inline or []:
            b.append(child)
    if request_token:
        el.add("request-token", FAST, {"mechanism": request_token})
    if fast is not None:
        el.add("fast", FAST, fast)
    for task in upgrade or []:
        el.add("upgrade", SASL_UPGRADE, text=task)  # XEP-0480 §2.2
    for child in extra or []:
        el.append(child)
    return el


async def finish(raw: RawClient) -> Result:
    result = await raw.element()
    if result.name != "success":
        return Result(result)
    features = await raw.element()
    assert features.ns == STREAM and features.name == "features", features
    raw.features = features
    return Result(result, features)


async def scram(
    raw: RawClient,
    username: str,
    password: str,
    mechanism: str = "SCRAM-SHA-256",
    *,
    cb_type: str | None = None,
    agent: Agent | None = None,
    **kwargs: object,
) -> Result:
    parsed = parse_mechanism(mechanism)
    assert parsed is not None
    hash_name, plus = parsed
    cb_data = raw.channel_binding(cb_type) if cb_type else b""
    client = ScramClient(
        hash_name,
        username,
        password,
        plus=plus,
        cb_type=cb_type,
        cb_data=cb_data,
        tls_version=raw.tls_version(),
    )
    raw.send(authenticate(mechanism, client.first(), agent, **kwargs))  # type: ignore[arg-type]
    challenge = await raw.element()
    if challenge.name != "challenge":
        return Result(challenge)
    response = Element("response", SASL2)
    response.children.append(base64.b64encode(client.respond(base64.b64decode(challenge.text))).decode())
    raw.send(response)
    result = await finish(raw)
    if result.ok or result.element.name == "continue":
        # The server signature comes in <success/>, or in the first <continue/> (XEP-0388 §2.6.3).
        data = result.element.find_text("additional-data", SASL2)
        assert data, "SCRAM success carries the server signature"
        client.verify(base64.b64decode(data))
    return result


def continue_tasks(result: Result) -> list[str]:
    """The tasks a ``<continue/>`` offers (empty for anything else)."""
    tasks = result.element.find("tasks", SASL2) if result.element.name == "continue" else None
    return [t.text for t in tasks.elements("task", SASL2)] if tasks is not None else []


async def scram_upgrade(raw: RawClient, task: str, password: str) -> tuple[Result, Element]:
    """Run the XEP-0480 §3 task ``task`` offered by a ``<continue/>``: ``<next/>``, read the salt,
    send the SaltedPassword. The server's answer (``<continue/>``, ``<success/>``, ``<failure/>``)
    and the ``<salt/>`` it sent."""
    hash_name = task.removeprefix("UPGR-SCRAM-")
    raw.send(Element("next", SASL2, {"task": task}))
    data = await raw.element()
    assert data.name == "task-data" and data.ns == SASL2, data
    salt_el = data.find("salt", SCRAM_UPGRADE)
    assert salt_el is not None
    salt, iterations = base64.b64decode(salt_el.text), int(salt_el.attrs["iterations"])
    answer = Element("task-data", SASL2)
    salted = salted_password(password, hash_name, salt, iterations)
    answer.add("hash", SCRAM_UPGRADE, text=base64.b64encode(salted).decode())
    raw.send(answer)
    return await finish(raw), salt_el


async def plain(
    raw: RawClient, username: str, password: str, agent: Agent | None = None, **kwargs: object
) -> Result:
    raw.send(authenticate("PLAIN", f"\0{username}\0{password}".encode(), agent, **kwargs))  # type: ignore[arg-type]
    return await finish(raw)


async def ht(
    raw: RawClient,
    username: str,
    token: str,
    agent: Agent,
    mechanism: str = "HT-SHA-256-NONE",
    *,
    invalidate: bool = False,
    **kwargs: object,
) -> Result:
    """A FAST login: authcid NUL HMAC(token, "Initiator" || cb-data) (draft-schmaus-kitten-sasl-ht)."""
    cb_type = HT_CB[mechanism.rsplit("-", 1)[1]]
    cb_data = raw.channel_binding(cb_type) if cb_type else b""
    proof = hmac.digest(token.encode(), b"Initiator" + cb_data, "sha256")
    fast = {"invalidate": "true"} if invalidate else {}
    raw.send(authenticate(mechanism, username.encode() + b"\0" + proof, agent, fast=fast, **kwargs))  # type: ignore[arg-type]
    result = await finish(raw)
    if result.ok:
        data = result.element.find_text("additional-data", SASL2)
        assert data is not None
        expected = hmac.digest(token.encode(), b"Responder" + cb_data, "sha256")
        assert hmac.compare_digest(base64.b64decode(data), expected), "the server proved it knows the token"
    return result


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
