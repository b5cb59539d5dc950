"""The subscription state machine against RFC 6121 Appendix A, table by table, states named as there."""

from __future__ import annotations

import pytest

from roost.jid import JID
from roost.modules.presence import inbound, outbound
from roost.modules.roster import RosterItem

# Appendix A.1: the nine states as (subscription, ask, pending_in).
STATES = {
    "None": ("none", False, False),
    "None + Pending Out": ("none", True, False),
    "None + Pending In": ("none", False, True),
    "None + Pending Out+In": ("none", True, True),
    "To": ("to", False, False),
    "To + Pending In": ("to", False, True),
    "From": ("from", False, False),
    "From + Pending Out": ("from", True, False),
    "Both": ("both", False, False),
}


def item(state: str, approved: bool = False) -> RosterItem:
    subscription, ask, pending_in = STATES[state]
    return RosterItem(
        JID.parse("juliet@example.com"),
        subscription=subscription,
        ask=ask,
        pending_in=pending_in,
        approved=approved,
    )


def name(it: RosterItem) -> str:
    for state, value in STATES.items():
        if value == (it.subscription, it.ask, it.pending_in):
            return state
    raise AssertionError(f"not a defined state: {it}")


# (existing state, route?, new state); "no state change" is written as the same state.
TABLE_2_OUTBOUND_SUBSCRIBE = [
    ("None", True, "None + Pending Out"),
    ("None + Pending Out", True, "None + Pending Out"),
    ("None + Pending In", True, "None + Pending Out+In"),
    ("None + Pending Out+In", True, "None + Pending Out+In"),
    ("To", True, "To"),
    ("To + Pending In", True, "To + Pending In"),
    ("From", True, "From + Pending Out"),
    ("From + Pending Out", True, "From + Pending Out"),
    ("Both", True, "Both"),
]
TABLE_3_OUTBOUND_UNSUBSCRIBE = [
    ("None", True, "None"),
    ("None + Pending Out", True, "None"),
    ("None + Pending In", True, "None + Pending In"),
    ("None + Pending Out+In", True, "None + Pending In"),
    ("To", True, "None"),
    ("To + Pending In", True, "None + Pending In"),
    ("From", True, "From"),
    ("From + Pending Out", True, "From"),
    ("Both", True, "From"),
]
TABLE_4_OUTBOUND_SUBSCRIBED = [  # M.N. rows leading to a pre-approval keep the state, set 'approved'
    ("None", False, "None"),
    ("None + Pending Out", False, "None + Pending Out"),
    ("None + Pending In", True, "From"),
    ("None + Pending Out+In", True, "From + Pending Out"),
    ("To", False, "To"),
    ("To + Pending In", True, "Both"),
    ("From", False, "From"),
    ("From + Pending Out", False, "From + Pending Out"),
    ("Both", False, "Both"),
]
TABLE_5_OUTBOUND_UNSUBSCRIBED = [
    ("None", False, "None"),
    ("None + Pending Out", False, "None + Pending Out"),
    ("None + Pending In", True, "None"),
    ("None + Pending Out+In", True, "None + Pending Out"),
    ("To", False, "To"),
    ("To + Pending In", True, "To"),
    ("From", True, "None"),
    ("From + Pending Out", True, "None + Pending Out"),
    ("Both", True, "To"),
]
TABLE_6_INBOUND_SUBSCRIBE = [  # (state, deliver?, new state, auto-reply)
    ("None", True, "None + Pending In", None),
    ("None + Pending Out", True, "None + Pending Out+In", None),
    ("None + Pending In", False, "None + Pending In", None),
    ("None + Pending Out+In", False, "None + Pending Out+In", None),
    ("To", True, "To + Pending In", None),
    ("To + Pending In", False, "To + Pending In", None),
    ("From", False, "From", "subscribed"),
    ("From + Pending Out", False, "From + Pending Out", "subscribed"),
    ("Both", False, "Both", "subscribed"),
]
TABLE_7_INBOUND_UNSUBSCRIBE = [
    ("None", False, "None", None),
    ("None + Pending Out", False, "None + Pending Out", None),
    ("None + Pending In", True, "None", "unsubscribed"),
    ("None + Pending Out+In", True, "None + Pending Out", "unsubscribed"),
    ("To", False, "To", None),
    ("To + Pending In", True, "To", "unsubscribed"),
    ("From", True, "None", "unsubscribed"),
    ("From + Pending Out", True, "None + Pending Out", "unsubscribed"),
    ("Both", True, "To", "unsubscribed"),
]
TABLE_8_INBOUND_SUBSCRIBED = [
    ("None", False, "None", None),
    ("None + Pending Out", True, "To", None),
    ("None + Pending In", False, "None + Pending In", None),
    ("None + Pending Out+In", True, "To + Pending In", None),
    ("To", False, "To", None),
    ("To + Pending In", False, "To + Pending In", None),
    ("From", False, "From", None),
    ("From + Pending Out", True, "Both", None),
    ("Both", False, "Both", None),
]
TABLE_9_INBOUND_UNSUBSCRIBED = [
    ("None", False, "None", None),
    ("None + Pending Out", True, "None", None),
    ("None + Pending In", False, "None + Pending In", None),
    ("None + Pending Out+In", True, "None + Pending In", None),
    ("To", True, "None", None),
    ("To + Pending In", True, "None + Pending In", None),
    ("From", False, "From", None),
    ("From + Pending Out", True, "From", None),
    ("Both", True, "From", None),
]


@pytest.mark.parametrize(
    ("type_", "before", "route", "after"),
    [("subscribe", *row) for row in TABLE_2_OUTBOUND_SUBSCRIBE]
    + [("unsubscribe", *row) for row in TABLE_3_OUTBOUND_UNSUBSCRIBE]
    + [("subscribed", *row) for row in TABLE_4_OUTBOUND_SUBSCRIBED]
    + [("unsubscribed", *row) for row in TABLE_5_OUTBOUND_UNSUBSCRIBED],
)
def test_outbound_tables_a2(type_: str, before: str, route: bool, after: str) -> None:
    state = item(before)
    outcome = outbound(type_, state)
    assert outcome.forward is route
    assert name(state) == after
    assert outcome.changed is (after != before or state.approved)  # a pre-approval is a change too


@pytest.mark.parametrize(
    ("type_", "before", "deliver", "after", "reply"),
    [("subscribe", *row) for row in TABLE_6_INBOUND_SUBSCRIBE]
    + [("unsubscribe", *row) for row in TABLE_7_INBOUND_UNSUBSCRIBE]
    + [("subscribed", *row) for row in TABLE_8_INBOUND_SUBSCRIBED]
    + [("unsubscribed", *row) for row in TABLE_9_INBOUND_UNSUBSCRIBED],
)
def test_inbound_tables_a3(type_: str, before: str, deliver: bool, after: str, reply: str | None) -> None:
    state = item(before)
    outcome = inbound(type_, state)
    assert outcome.forward is deliver
    assert name(state) == after
    assert outcome.reply == reply
    assert outcome.changed is (after != before)


@pytest.mark.parametrize("before", ["None", "None + Pending Out", "To"])
def test_outbound_subscribed_without_request_is_a_pre_approval(before: str) -> None:
    # RFC 6121 §3.4.2 rules 3 and 4: noted, not routed.
    state = item(before)
    outcome = outbound("subscribed", state)
    assert (outcome.forward, outcome.changed, state.approved) == (False, True, True)
    assert name(state) == before
    assert outbound("subscribed", state).changed is False  # already noted


@pytest.mark.parametrize("before", ["From", "From + Pending Out", "Both"])
def test_outbound_subscribed_when_already_subscribed_is_ignored(before: str) -> None:
    state = item(before)
    outcome = outbound("subscribed", state)  # §3.4.2 rule 1
    assert (outcome.forward, outcome.changed, state.approved) == (False, False, False)


@pytest.mark.parametrize(
    ("before", "after"), [("None", "From"), ("None + Pending Out", "From + Pending Out"), ("To", "Both")]
)
def test_inbound_subscribe_with_pre_approval_is_approved_on_the_users_behalf(before: str, after: str) -> None:
    # RFC 6121 §3.4.2 and Table 6 note [1]: auto-reply "subscribed", state gains "From".
    state = item(before, approved=True)
    outcome = inbound("subscribe", state)
    assert (outcome.forward, outcome.changed, outcome.reply) == (False, True, "subscribed")
    assert name(state) == after
    assert state.approved is False


@pytest.mark.parametrize("before", ["None", "None + Pending Out", "To"])
def test_outbound_unsubscribed_cancels_a_pre_approval_without_routing(before: str) -> None:
    # RFC 6121 §3.2.2 rule 2.
    state = item(before, approved=True)
    outcome = outbound("unsubscribed", state)
    assert (outcome.forward, outcome.changed, state.approved) == (False, True, False)
    assert name(state) == before


def test_approval_of_a_request_clears_pending_stanza_and_pre_approval() -> None:
    state = item("None + Pending In")
    state.pending_stanza = None
    outcome = outbound("subscribed", state)
    assert outcome.forward and state.pending_stanza is None and not state.pending_in


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError):
        outbound("probe", item("None"))
    with pytest.raises(ValueError):
        inbound("available", item("None"))
