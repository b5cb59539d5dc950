"""External components (XEP-0114)."""
