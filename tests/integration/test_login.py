"""Real clients log in over STARTTLS and direct TLS with each SASL mechanism, then use core services."""

from __future__ import annotations

import pytest

from tests.support.clients import connect
from tests.support.server import RunningServer


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"])
async def test_starttls_login_with_mechanism(server: RunningServer, mech: str) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    client = await connect("romeo@localhost/balcony", "s3cret", server.c2s_port, mech=mech)
    assert str(client.boundjid) == "romeo@localhost/balcony"
    rtt = await client.plugin["xep_0199"].ping("localhost", timeout=5)
    assert rtt >= 0
    client.disconnect()
