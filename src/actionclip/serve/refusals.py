"""A client that keeps sending requests the server refuses is slowed down, not the others.

Refusing costs CPU too (the HTTP request, the multipart body, the JSON), so a client sending oversized requests back
to back took CPU from every other client (docs/serve.md measures it). Each client has a budget of refused requests, a
token bucket of ``REFUSAL_BURST`` refilled at ``REFUSALS_PER_S``; once a client has spent it, its next requests wait
before they are read, which costs nothing, until the bucket is back at zero. A client that is never refused never
waits. A 4xx answer counts as a refusal. The client is its address as uvicorn reports it: behind a reverse proxy, the
``X-Forwarded-For`` that uvicorn trusts from the addresses in ``FORWARDED_ALLOW_IPS`` (by default 127.0.0.1, ::1).
"""

from __future__ import annotations

import asyncio
import time

REFUSALS_PER_S = 10.0
REFUSAL_BURST = 20
MAX_WAIT_S = 5.0  # however deep a client's debt, one request waits at most this long
MAX_CLIENTS = 10_000  # buckets kept; full ones are dropped first


class RefusalBrake:
    """ASGI middleware: requests from a client over its budget of refused requests wait before they are read."""

    def __init__(self, app, per_s: float = REFUSALS_PER_S, burst: int = REFUSAL_BURST, clock=time.monotonic):
        self.app, self.per_s, self.burst, self.clock = app, per_s, burst, clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else ""
        debt = -self._tokens(client)
        if debt > 0:
            await asyncio.sleep(min(debt / self.per_s, MAX_WAIT_S))
        status = []

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if status and 400 <= status[0] < 500:
                self._refused(client)

    def _tokens(self, client: str) -> float:
        now = self.clock()
        tokens, then = self.buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.per_s)

    def _refused(self, client: str) -> None:
        self.buckets[client] = (self._tokens(client) - 1, self.clock())
        if len(self.buckets) > MAX_CLIENTS:
            full = [name for name in self.buckets if self._tokens(name) >= self.burst]
            for name in full or list(self.buckets)[: len(self.buckets) - MAX_CLIENTS]:
                del self.buckets[name]
