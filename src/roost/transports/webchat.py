"""The web chat at ``/chat``: a page that runs Converse.js against this server's own endpoints.

Converse.js is installed from npm at a pinned version by ``scripts/install-webchat`` (never fetched at
run time); its prebuilt ``dist/`` folder is served under ``/chat/dist/``. The page itself is made per
request: it points Converse at the WebSocket endpoint (RFC 7395) and, as the fallback Converse switches
to when WebSocket fails, BOSH (XEP-0206) — the URLs built like host-meta's (``[http] public_url`` or the
request's own host) — and at the server's first domain, so a user types only a name and a password.
See docs/webchat.md.
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

import roost
from roost.transports.host_meta import BOSH_REL, WEBSOCKET_REL, links
from roost.transports.http import BOSH_PATH, WEBSOCKET_PATH, HttpRoutes, client_of

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.webchat")

CHAT_PATH = "/chat"
ASSETS_PATH = "/chat/dist"
#: Converse's entry points; a folder without them is not a Converse dist/.
REQUIRED_ASSETS = ("converse.min.js", "converse.min.css")

#: Where scripts/install-webchat puts Converse, beside the source checkout (src/roost → repo root).
INSTALLED_ASSETS = Path(roost.__file__).resolve().parents[2] / "webchat/node_modules/converse.js/dist"

#: The page is made per request (never cached) and may not be framed by another site.
PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def missing_assets(folder: Path) -> list[str]:
    """The Converse files ``folder`` lacks ([] when it holds a usable dist/)."""
    return [name for name in REQUIRED_ASSETS if not (folder / name).is_file()]


def converse_settings(
    *, domain: str, websocket_url: str | None, bosh_url: str | None, muc_domain: str | None
) -> dict[str, object]:
    """What ``converse.initialize`` gets: this server's endpoints and domain, logins by name only."""
    settings: dict[str, object] = {
        "assets_path": ASSETS_PATH + "/",
        "authentication": "login",
        "auto_login": False,
        "auto_reconnect": True,
        "default_domain": domain,
        "locked_domain": domain,
        "discover_connection_methods": False,
        "view_mode": "fullscreen",
        "allow_non_roster_messaging": True,
        "message_archiving": "always",
        "muc_nickname_from_jid": True,
        "play_sounds": False,
        "show_controlbox_by_default": True,
        "theme": "classic",
    }
    if websocket_url:
        settings["websocket_url"] = websocket_url
    if bosh_url:
        settings["bosh_service_url"] = bosh_url
    if muc_domain:
        settings["muc_domain"] = muc_domain
    return settings


def page(settings: dict[str, object], title: str) -> str:
    """The HTML page: Converse's script and style, then one script that starts it with ``settings``."""
    # json.dumps then escaping '<' keeps a crafted domain or URL from closing the script element.
    config = json.dumps(settings, sort_keys=True).replace("<", "\\u003c")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{ASSETS_PATH}/converse.min.css">
<link rel="icon" href="{ASSETS_PATH}/images/favicon.ico">
<script>
// Converse's page footer shows its sponsors' logos from conversejs.org: defined first as an empty
// element, it stays empty, and the page loads nothing from anywhere but this server.
customElements.define("converse-footer", class extends HTMLElement {{}});
</script>
<script type="module" src="{ASSETS_PATH}/converse.min.js"></script>
</head>
<body class="converse-fullscreen">
<noscript>This chat needs JavaScript.</noscript>
<script type="module">converse.initialize({config});</script>
</body>
</html>
"""


def not_installed_page(folder: Path, missing: list[str]) -> str:
    return (
        "The web chat is not installed: "
        f"{folder} lacks {', '.join(missing)}.\n"
        "Run scripts/install-webchat (Converse.js from npm, pinned), or set [http] webchat_assets to the "
        "dist/ folder of a Converse.js you installed, or set [http] webchat = false.\n"
    )


class WebChat:
    """Serves the chat page and Converse's files from one folder."""

    def __init__(self, server: Server, routes: HttpRoutes) -> None:
        self.server = server
        self.routes = routes
        http = server.config.http
        self.public_url = http.public_url
        self.assets = (http.webchat_assets or INSTALLED_ASSETS).resolve()
        self.domain = server.config.server.domains[0]

    def mount(self) -> None:
        missing = missing_assets(self.assets)
        if missing:
            log.warning("web chat at %s: %s", CHAT_PATH, not_installed_page(self.assets, missing).strip())
        self.routes.mount(CHAT_PATH, self.chat, owner="webchat")
        self.routes.mount(ASSETS_PATH, self.asset, prefix=True, owner="webchat")

    def _muc_domain(self) -> str | None:
        host = self.server.hosts.get(self.domain)
        muc = host.modules.loaded.get("muc") if host is not None else None
        domain = getattr(getattr(muc, "runtime", None), "domain", None)
        return domain if isinstance(domain, str) else None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        missing = missing_assets(self.assets)
        if missing:
            text = not_installed_page(self.assets, missing)
            return web.Response(status=503, text=text, headers=PAGE_HEADERS)
        info = client_of(request)
        pairs = dict(
            links(
                self.public_url or f"{info.scheme}://{info.host}",
                websocket=self.routes.find(WEBSOCKET_PATH) is not None,
                bosh=self.routes.find(BOSH_PATH) is not None,
            )
        )
        settings = converse_settings(
            domain=self.domain,
            websocket_url=pairs.get(WEBSOCKET_REL),
            bosh_url=pairs.get(BOSH_REL),
            muc_domain=self._muc_domain(),
        )
        body = page(settings, f"Chat on {self.domain}")
        return web.Response(text=body, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        """One file of Converse's dist/; nothing outside it (no ``..``, no symlinks out, no dot files)."""
        relative = request.path[len(ASSETS_PATH) :].lstrip("/")
        parts = relative.split("/")
        if not relative or any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts):
            raise web.HTTPNotFound()
        path = (self.assets / relative).resolve()
        if not path.is_relative_to(self.assets) or not path.is_file():
            raise web.HTTPNotFound()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".wasm":
            content_type = "application/wasm"
        # Versioned by the lock file, so a day of caching is safe; FileResponse streams from disk and
        # answers conditional and range requests itself.
        headers = {
            "Content-Type": content_type,
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        }
        return web.FileResponse(path, headers=headers)
