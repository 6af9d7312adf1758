"""Browser requests from other sites: refused unless ``--cors`` allows their origin. Any page can make its visitors'
browsers post a form to this server (a "simple" request, sent without asking first; CORS only hides the answer from
the page), so a request whose ``Origin`` is neither this server nor an allowed origin is a 403 before it is read. A
request without ``Origin`` does not come from a page's script or form (curl, scripts, the page loading): let in."""

from __future__ import annotations

import re
from typing import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

_ORIGIN = re.compile(r"https?://[^/\s?#]+")


def check_origins(origins: Sequence[str]) -> list[str]:
    """``origins`` if each is ``*`` or ``scheme://host[:port]``, as browsers send them in ``Origin``."""
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"--cors: {origin!r} is not an origin: give scheme://host[:port] as a browser sends it (https://app.example.com), or * for any"
            )
    return list(origins)


class OriginCheck:
    """ASGI middleware: a 403 for a request from an ``Origin`` other than the server's own (its ``Host``) and
    ``allowed``."""

    def __init__(self, app, allowed: Sequence[str]):
        self.app, self.allowed = app, set(allowed)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self._allowed(origin, headers.get("host", "")):
                detail = f"a browser request from the origin {origin}, not this server's: start the server with --cors {origin} to allow it"
                await JSONResponse({"detail": detail}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, host: str) -> bool:
        netloc = urlsplit(origin).netloc.lower()  # "null" (a sandboxed page, a file) has none
        return "*" in self.allowed or origin in self.allowed or (netloc != "" and netloc == host.lower())
