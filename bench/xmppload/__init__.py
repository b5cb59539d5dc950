"""The load generator proper: raw asyncio XMPP client connections, timings, /proc sampling."""
