"""Federation with real Prosody and ejabberd (scripts/install-peers installs them)."""
