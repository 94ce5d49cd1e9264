"""A reverse proxy that serves a backend under a path prefix and strips the prefix on the
way in, as nginx (``location /p/ { proxy_pass http://backend/; }``) or Traefik's
``StripPrefix`` do: plain HTTP (streamed, so Server-Sent Events pass) and WebSockets.
Adds no forwarding header. For tests of a gateway behind ``PUBLIC_URL=…/prefix``."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import aiohttp
from aiohttp import web

REQUEST_HEADERS = ("Accept", "Authorization", "Content-Type", "Cookie", "Origin", "X-Twilio-Signature")
RESPONSE_HEADERS = (
    "Cache-Control",
    "Content-Type",
    "Location",
    "Retry-After",
    "Set-Cookie",
    "WWW-Authenticate",
)


class StripProxy:
    """``url = await StripProxy(prefix).start()``; then ``proxy.backend = gateway_url``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.backend = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._http = aiohttp.ClientSession(auto_decompress=False)
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not request.path.startswith(self.prefix + "/"):
            raise web.HTTPNotFound(text="not under the prefix\n")
        target = self.backend + request.raw_path[len(self.prefix) :]
        headers = {h: request.headers[h] for h in REQUEST_HEADERS if h in request.headers}
        assert self._http is not None
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, target, headers)
        async with self._http.request(
            request.method, target, headers=headers, data=await request.read(), allow_redirects=False
        ) as upstream:
            out = web.StreamResponse(status=upstream.status)
            for h in RESPONSE_HEADERS:
                for value in upstream.headers.getall(h, []):
                    out.headers.add(h, value)
            await out.prepare(request)
            with suppress(ConnectionError, RuntimeError):
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
            return out

    async def _websocket(
        self, request: web.Request, target: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        assert self._http is not None
        outside = web.WebSocketResponse()
        await outside.prepare(request)
        async with self._http.ws_connect(target.replace("http", "ws", 1), headers=headers) as inside:

            async def pump(src, dst) -> None:
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                await dst.close()

            await asyncio.gather(pump(outside, inside), pump(inside, outside), return_exceptions=True)
        return outside
