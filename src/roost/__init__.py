"""Roost: an XMPP server in Python (asyncio)."""

__version__ = "0.1.0"
