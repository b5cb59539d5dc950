"""Message Archive Management (XEP-0313): user and room archives, search, preferences, retention.

``protocol.py`` (pure: the wire format), ``archiver.py`` (non-blocking writes), ``pages.py`` (one
query's page), ``retention.py`` (batched deletes), ``module.py`` (the user archive module),
``rooms.py`` (room archives on the MUC service).
"""
