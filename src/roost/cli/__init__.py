"""The ``roost`` command line (see roost.cli.main)."""
