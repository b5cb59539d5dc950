"""Federation: server-to-server links (RFC 6120, XEP-0220, XEP-0178) behind the route table."""
