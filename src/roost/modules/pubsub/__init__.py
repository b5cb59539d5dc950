"""XEP-0060 Publish-Subscribe: the pure engine (``engine``, ``config``), PEP and the service (``module``)."""
