"""In-process micro-benchmark of the sans-IO c2s stream: no sockets, no TLS, no storage.

Two figures, in µs of CPU: a stream's whole negotiation (header, STARTTLS, header, PLAIN with the
driver's answer given at once, header, bind) and one stanza through an established stream
(``receive_data`` of one message: parse and hand out). Run it before and after a change to the stream
core on an otherwise idle machine; it reports the best of ``--repeat`` rounds.

    .venv/bin/python -m bench.stream_core
    .venv/bin/python -m bench.stream_core --framing websocket
"""

from __future__ import annotations

import argparse
import time

from roost.jid import JID
from roost.stream.c2s import C2SSettings, C2SStream, State
from roost.stream.framing import WebSocketFraming
from roost.stream.sasl.scram import ScramCredentials, derive_credentials

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    b"to='example.org' version='1.0'>"
)
WS_OPEN = b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0'/>"
STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
PLAIN = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABwZW5jaWw=</auth>"
BIND = b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
MESSAGE = b"<message to='romeo@example.org/x' type='chat' id='abc'><body>hello there</body></message>"
JULIET = JID("juliet", "example.org", "r")


def login_xml(settings: C2SSettings, creds: ScramCredentials) -> C2SStream:
    s = C2SStream(settings)
    s.receive_data(HEADER)
    s.data_to_send()
    s.receive_data(STARTTLS)
    s.data_to_send()
    s.tls_established({"tls-exporter": b"x" * 32})
    s.receive_data(HEADER)
    s.data_to_send()
    s.receive_data(PLAIN)
    s.credentials(creds, True)
    s.receive_data(HEADER)
    s.receive_data(BIND)
    s.bound(JULIET)
    s.data_to_send()
    return s


def login_ws(settings: C2SSettings, creds: ScramCredentials) -> C2SStream:
    s = C2SStream(settings, secure=True, framing=WebSocketFraming())
    s.receive_data(WS_OPEN)
    s.items_to_send()
    s.receive_data(PLAIN)
    s.credentials(creds, True)
    s.receive_data(WS_OPEN)
    s.receive_data(BIND.replace(b"<iq ", b"<iq xmlns='jabber:client' "))
    s.bound(JULIET)
    s.items_to_send()
    return s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--framing", choices=("xml", "websocket"), default="xml")
    parser.add_argument("--logins", type=int, default=3000)
    parser.add_argument("--stanzas", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = C2SSettings(domains=frozenset({"example.org"}), tls_available=args.framing == "xml")
    creds = derive_credentials("pencil", "SHA-256", 4096)
    login = login_xml if args.framing == "xml" else login_ws
    message = (
        MESSAGE
        if args.framing == "xml"
        else MESSAGE.replace(b"<message ", b"<message xmlns='jabber:client' ")
    )
    best_login = best_stanza = float("inf")
    for _ in range(args.repeat):
        start = time.process_time()
        for _ in range(args.logins):
            login(settings, creds)
        best_login = min(best_login, (time.process_time() - start) / args.logins)
        stream = login(settings, creds)
        assert stream.state is State.ESTABLISHED, stream.state
        start = time.process_time()
        for _ in range(args.stanzas):
            stream.receive_data(message)
        best_stanza = min(best_stanza, (time.process_time() - start) / args.stanzas)
    figures = f"negotiation {best_login * 1e6:.1f} µs, one stanza {best_stanza * 1e6:.2f} µs"
    print(f"framing {args.framing}: {figures}")


if __name__ == "__main__":
    main()
