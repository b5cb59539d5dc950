"""Namespace names used across Roost (one place, so typos fail at import)."""

from typing import Final

STREAM: Final = "http://etherx.jabber.org/streams"
CLIENT: Final = "jabber:client"
SERVER: Final = "jabber:server"
COMPONENT: Final = "jabber:component:accept"
XML: Final = "http://www.w3.org/XML/1998/namespace"
XMLNS: Final = "http://www.w3.org/2000/xmlns/"

STREAMS_ERRORS: Final = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"
TLS: Final = "urn:ietf:params:xml:ns:xmpp-tls"
SASL: Final = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND: Final = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION: Final = "urn:ietf:params:xml:ns:xmpp-session"
SASL_CB: Final = "urn:xmpp:sasl-cb:0"  # XEP-0440
LIMITS: Final = "urn:xmpp:stream-limits:0"  # XEP-0478
SASL2: Final = "urn:xmpp:sasl:2"  # XEP-0388
BIND2: Final = "urn:xmpp:bind:0"  # XEP-0386
FAST: Final = "urn:xmpp:fast:0"  # XEP-0484
SASL_UPGRADE: Final = "urn:xmpp:sasl:upgrade:0"  # XEP-0480
SCRAM_UPGRADE: Final = "urn:xmpp:scram-upgrade:0"  # XEP-0480 §3
SM: Final = "urn:xmpp:sm:3"  # XEP-0198 stream management
CSI: Final = "urn:xmpp:csi:0"  # XEP-0352 client state indication

DISCO_INFO: Final = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS: Final = "http://jabber.org/protocol/disco#items"
PING: Final = "urn:xmpp:ping"
VERSION: Final = "jabber:iq:version"
TIME: Final = "urn:xmpp:time"
LAST: Final = "jabber:iq:last"
DATA_FORMS: Final = "jabber:x:data"
DELAY: Final = "urn:xmpp:delay"
FORWARD: Final = "urn:xmpp:forward:0"
STANZA_ID: Final = "urn:xmpp:sid:0"
VCARD: Final = "vcard-temp"  # XEP-0054
VCARD_UPDATE: Final = "vcard-temp:x:update"  # XEP-0153
PRIVATE: Final = "jabber:iq:private"  # XEP-0049
REGISTER: Final = "jabber:iq:register"  # XEP-0077
REGISTER_FEATURE: Final = "http://jabber.org/features/iq-register"  # XEP-0077 §8 stream feature

#: Stanza namespaces: top-level elements in these are stanzas, whatever the stream's content namespace.
STANZA_NAMESPACES: Final = frozenset((CLIENT, SERVER, COMPONENT))
