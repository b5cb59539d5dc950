"""The /chat page's settings and HTML, and what counts as a Converse dist/ folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from roost.transports.webchat import converse_settings, missing_assets, page


def test_settings_point_at_this_server() -> None:
    settings = converse_settings(
        domain="example.org",
        websocket_url="wss://xmpp.example.org/xmpp-websocket",
        bosh_url=None,
        muc_domain="conference.example.org",
    )
    assert settings["websocket_url"] == "wss://xmpp.example.org/xmpp-websocket"
    assert "bosh_service_url" not in settings
    assert settings["locked_domain"] == settings["default_domain"] == "example.org"
    assert settings["muc_domain"] == "conference.example.org"
    assert settings["assets_path"] == "/chat/dist/"


def test_settings_cannot_close_the_script_element() -> None:
    hostile = "</script><script>alert(1)</script>"
    settings = converse_settings(domain=hostile, websocket_url=None, bosh_url=None, muc_domain=None)
    html = page(settings, hostile)
    assert "<script>alert(1)" not in html
    match = re.search(r'<script type="module">converse\.initialize\((.*)\);</script>', html)
    assert match is not None
    assert json.loads(match.group(1))["locked_domain"] == hostile  # the value survives, escaped
    assert "<title>&lt;/script&gt;" in html


def test_missing_assets(tmp_path: Path) -> None:
    assert missing_assets(tmp_path) == ["converse.min.js", "converse.min.css"]
    (tmp_path / "converse.min.js").write_text("")
    (tmp_path / "converse.min.css").write_text("")
    assert missing_assets(tmp_path) == []
