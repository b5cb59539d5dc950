"""Operators' tools that act on a running server: admin commands, account locks, metrics, backups."""
