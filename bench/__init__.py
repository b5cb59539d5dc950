"""Roost's benchmark: a raw XMPP load generator and the servers it compares (see bench/README.md)."""
