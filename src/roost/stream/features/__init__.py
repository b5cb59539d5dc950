"""Negotiation features of the stream core (:class:`roost.stream.core.Feature`), one file each."""
