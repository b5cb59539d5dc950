"""The driver's half of SASL2 (XEP-0388), Bind2 (XEP-0386) and FAST (XEP-0484) on a c2s stream.

The stream feature (:mod:`roost.stream.features.sasl2`) runs the mechanisms; what needs storage or
the session table happens here: looking up a client's FAST tokens, recording the user agent,
issuing and rotating tokens, binding the stable per-device resource and letting modules enable
their inline features (``BIND2_INLINE``), before ``<success/>`` is written; and, before all that,
the XEP-0480 SCRAM upgrade tasks: which hashes the account lacks keys for, storing the new keys.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from roost.admin.locks import lock_reason
from roost.core import hooks, sm
from roost.core.fast import expiry_text
from roost.core.session import SessionState
from roost.jid import JIDError, prepare_resource
from roost.stanza.errors import StreamError
from roost.stream import sm as sm_protocol
from roost.stream.features.sasl2 import (
    NeedToken,
    NeedUpgrades,
    Sasl2Login,
    ScramUpgrade,
    StoredToken,
    StoreUpgrade,
    bind2_resource,
    upgrade_hash,
)
from roost.stream.sasl.scram import HASH_NAMES, credentials_from_salted
from roost.util.ids import random_token
from roost.util.logging import bind_conn_id
from roost.xml.element import Element
from roost.xml.ns import BIND2, FAST, SM

if TYPE_CHECKING:
    from roost.core.c2s import C2SDriver
    from roost.stream.c2s import StreamEvent
    from roost.stream.sm import SmFailure

T = TypeVar("T")

#: Longest client tag kept in a resource (XEP-0386 §3.2; the rest of the resource is ours).
MAX_TAG = 32


async def _answer(
    driver: C2SDriver, what: str, lookup: Awaitable[T], reply: Callable[[T], list[StreamEvent]]
) -> None:
    """Await a storage step of the login, then hand its result to the stream (``reply``), unless the
    connection went meanwhile; a failed step ends the stream with internal-server-error."""
    session = driver.session
    with bind_conn_id(session.id):
        try:
            found = await lookup
        except Exception:
            session.log.exception("%s failed", what)
            driver.close(StreamError("internal-server-error"), reason="error")
            return
        if driver.closed:
            return
        driver.handle_events(reply(found))


async def lookup_tokens(driver: C2SDriver, event: NeedToken) -> None:
    """Answer :class:`NeedToken` with the client's live tokens."""

    async def lookup() -> tuple[list[StoredToken], str | None]:
        tokens = await driver.server.fast.lookup(event.domain, event.username, event.client_id)
        disabled = await lock_reason(driver.server.storage, event.domain, event.username) if tokens else None
        return tokens, disabled

    await _answer(driver, "FAST token lookup", lookup(), lambda found: driver.stream.tokens(*found))


async def upgrades_needed(driver: C2SDriver, event: NeedUpgrades) -> None:
    """Answer :class:`NeedUpgrades`: the asked-for tasks whose hash the account has no keys for
    (XEP-0480 is for adding keys; keys the account has are never replaced this way)."""
    accounts = driver.server.storage.accounts
    iterations = driver.server.config.storage.scram_iterations

    async def lookup() -> list[ScramUpgrade]:
        needed: list[ScramUpgrade] = []
        for task in event.tasks:
            hash_name = upgrade_hash(task)
            if (
                hash_name is not None
                and await accounts.get_credentials(event.domain, event.username, hash_name) is None
            ):
                needed.append(ScramUpgrade(task, hash_name, secrets.token_bytes(16), iterations))
        return needed

    await _answer(driver, "credential lookup for an upgrade task", lookup(), driver.stream.sasl2_upgrades)


async def store_upgrade(driver: C2SDriver, event: StoreUpgrade) -> None:
    """Answer :class:`StoreUpgrade`: add the keys derived from the client's SaltedPassword to the
    account's, keeping every key it has (XEP-0480 §4: the mechanisms offered before stay usable)."""
    session = driver.session
    accounts = driver.server.storage.accounts
    upgrade = event.upgrade
    with bind_conn_id(session.id):
        new = credentials_from_salted(
            upgrade.hash_name, event.salted_password, upgrade.salt, upgrade.iterations
        )
        ok = True
        try:
            # The store replaces the set as a whole; the account's other keys are read first. A
            # password change between the two would be undone for these hashes only by an
            # authenticated client of that account, at worst restoring keys of its old password.
            kept = [
                creds
                for name in HASH_NAMES
                if name != upgrade.hash_name
                and (creds := await accounts.get_credentials(event.domain, event.username, name)) is not None
            ]
            await accounts.set_credentials(event.domain, event.username, [*kept, new])
            session.log.info("SCRAM keys for %s added by %s", upgrade.hash_name, upgrade.task)
        except Exception:
            session.log.exception("storing the keys of an upgrade task failed")
            ok = False
        if driver.closed:
            return
        driver.handle_events(driver.stream.sasl2_upgraded(ok))


def _tag(request: Element) -> str:
    text = (request.find_text("tag", BIND2) or "").strip()[:MAX_TAG].replace("/", "")
    if not text:
        return ""
    try:
        return prepare_resource(text)
    except JIDError:
        return ""


async def complete_login(driver: C2SDriver, event: Sasl2Login) -> None:
    """Answer :class:`Sasl2Login`: tokens, then the inline bind, then ``<success/>``."""
    server = driver.server
    session = driver.session
    stream = driver.stream
    agent = event.user_agent
    with bind_conn_id(session.id):
        session.user_agent = agent
        extra: list[Element] = []
        fast = server.fast
        try:
            used = event.token_used
            if used is not None and agent is not None:
                if event.invalidate:
                    await fast.invalidate(event.domain, event.username, agent.id, used)
                else:
                    # Off the login's path: dropping older tokens and noting the use may land a
                    # moment after <success/>.
                    server.spawn(
                        fast.used(event.domain, event.username, agent.id, used), f"{session.id}-fast"
                    )
            mechanism = event.token_request
            if mechanism is None and used is not None and not event.invalidate and fast.due(used):
                mechanism = used.mechanism  # §4.3: rotation, asked for or not
            if mechanism is not None and agent is not None and agent.id:
                keep = used if not event.invalidate else None
                token, expiry = await fast.issue(event.domain, event.username, agent, mechanism, keep)
                extra.append(Element("token", FAST, {"token": token, "expiry": expiry_text(expiry)}))
        except Exception:
            session.log.exception("FAST token update failed")
            driver.close(StreamError("internal-server-error"), reason="error")
            return
        if driver.closed:
            return
        if event.resume is not None:
            failure = _resume(driver, event, extra)
            if failure is None:
                return  # resumed (or the stream is closing)
            extra.append(failure.to_element())  # XEP-0386 §3.1: report it, then bind
        if event.bind is None:
            driver.handle_events(stream.sasl2_complete(None, extra))
            return
        # §3.2: stable per client installation, so a new login replaces that client's old session.
        resource = bind2_resource(
            event.domain, event.username, agent.id if agent else None, _tag(event.bind), random_token(10)
        )
        manager = server.sessions
        try:
            jid = manager.bind(session, event.domain, event.username, resource)
        except ValueError:
            driver.handle_events(stream.sasl2_refuse("temporary-auth-failure", "too many resources"))
            return
        session.log.info(
            "bound %s with Bind2 (%s from %s)", jid, driver.connection.kind, driver.connection.peer or "?"
        )
        ready = manager.announce(session)
        if ready is not None:
            session.hold(ready)
        bound: list[Element] = []
        enable = event.bind.find("enable", SM)
        if enable is not None:
            answer = _enable(driver, event.domain, enable)
            if answer is None:
                return  # the stream is closing
            bound.append(answer)
        host = server.hosts.get(event.domain)
        if host is not None:
            enabled = host.bus.fire_sync(hooks.BIND2_INLINE, hooks.Bind2Event(session, event.bind, bound))
            if not isinstance(enabled, bool):
                session.hold(enabled)
        driver.handle_events(stream.sasl2_complete(jid, extra, bound))


def _enable(driver: C2SDriver, domain: str, el: Element) -> Element | None:
    """Inline XEP-0198 ``<enable/>`` (XEP-0386 §3.3): the ``<enabled/>`` or ``<failed/>`` for ``<bound/>``."""
    service = sm.service_for(driver.server, domain)
    if service is None:
        return sm_protocol.failed("feature-not-implemented", "stream management is not offered here")
    try:
        request = sm_protocol.parse_enable(el)
    except sm_protocol.SmFailure as e:
        return e.to_element()
    return service.enable_session(driver, request)


def _resume(driver: C2SDriver, event: Sasl2Login, extra: list[Element]) -> SmFailure | None:
    """Inline XEP-0198 ``<resume/>``: the failure to report, or None once resumed (``<success/>``
    with ``<resumed/>`` written, what the client missed sent again)."""
    assert event.resume is not None
    service = sm.service_for(driver.server, event.domain)
    if service is None:
        return sm_protocol.SmFailure("feature-not-implemented", "no stream management here")
    try:
        request = sm_protocol.parse_resume(event.resume)
    except sm_protocol.SmFailure as e:
        return e
    answer = service.resume(driver, request)
    if isinstance(answer, sm_protocol.SmFailure):
        return answer
    session = driver.session
    if driver.closed or session.state is not SessionState.BOUND:
        return None  # a bad 'h': the stream is closing
    session.user_agent = event.user_agent
    managed = session.sm
    assert isinstance(managed, sm.SmSession)
    resumed = sm_protocol.resumed(request.previd, managed.state.inbound)
    stream = driver.stream
    events = stream.sasl2_complete(session.jid, [*extra, resumed], resumed=True)
    for stanza in answer:
        stream.send(stanza)
    driver.handle_events(events)
    if answer:
        managed.request()
    sm.announce_resumed(driver.server, session)
    return None
