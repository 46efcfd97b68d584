"""What every HTTP exchange gets, whatever route answers: security headers and request guards.

* :class:`SecurityHeaders` — every HTML page: a Content-Security-Policy without inline script
  or style (pages are templates that load their CSS and JS from files, :mod:`bot.web`; the
  console sets this same :data:`CSP` itself, the knowledge-base editor without WebSockets),
  ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``, ``Referrer-Policy``; every response
  ``X-Content-Type-Options: nosniff``; staff pages (``/console``, ``/supervisor``, ``/docs``,
  ``/redoc``) ``Cache-Control: no-store``. A header a route set itself is kept.
* :class:`RequestGuard` — request bodies over :data:`MAX_BODY_BYTES` get 413, declared or
  chunked (a chunked body is read up to the limit before the route runs: the route's own
  reading turned the overflow into a 400); JSON nested deeper than :data:`MAX_JSON_DEPTH`
  gets 400 before any parser sees it (40,000 levels gave a 500 in Open311 and Kakao, whose
  ``json.loads`` hit the recursion limit, and dropped the REST connection).
* :func:`install` — both, plus Swagger UI and ReDoc from the installed ``fastapi_offline``
  package (no CDN: the pages work offline and run no third-party script on the console's
  origin), the security limiter (:mod:`bot.throttle`) on Redis when configured, and the
  warning about a missing ``PCRM_SECRET_KEY``.
* :data:`UVICORN_LIMITS` — what the server itself must refuse before the app sees it:
  WebSocket messages over 64 KiB (uvicorn buffered 16 MiB frames before the channel's check).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("pcrm.security")

MAX_BODY_BYTES = 256 * 1024
MAX_JSON_DEPTH = 64
#: Passed to ``uvicorn.run``/``uvicorn.Config`` by ``pcrm serve`` and the test servers.
UVICORN_LIMITS: dict[str, Any] = {"ws_max_size": 64 * 1024 + 1024}

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self' ws: wss:; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
#: Swagger UI and ReDoc build their pages with inline styles (JS-set ``style`` attributes and
#: injected <style> elements); scripts stay 'self'-only.
DOCS_CSP = (CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
            .replace("img-src 'self' data:", "img-src 'self' data: blob:") + "; worker-src blob:")
STAFF_PREFIXES = ("/console", "/supervisor", "/docs", "/redoc")
DOCS_PREFIXES = ("/docs", "/redoc")


def _html_headers(path: str) -> list[tuple[bytes, bytes]]:
    out = [(b"content-security-policy", (DOCS_CSP if path.startswith(DOCS_PREFIXES) else CSP).encode()),
           (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin")]
    if path.startswith(STAFF_PREFIXES):
        out.append((b"cache-control", b"no-store"))
    return out


class SecurityHeaders:
    """Adds the headers above to every response that does not carry them already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers") or [])
                have = {k.lower() for k, _ in headers}
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                extra = [(b"x-content-type-options", b"nosniff")]
                if ctype.startswith(b"text/html"):
                    extra += _html_headers(path)
                elif path.startswith(STAFF_PREFIXES):
                    extra.append((b"cache-control", b"no-store"))
                headers += [(k, v) for k, v in extra if k not in have]
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, with_headers)


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays/objects deeper than ``limit`` (strings skipped; malformed
    JSON is the parser's business). Cheap for ordinary bodies: only one with more than ``limit``
    brackets in all is scanned."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    in_str = escaped = False
    for b in body:
        if in_str:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:  # quote
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """413 for bodies over the limit (declared or chunked), 400 for JSON nested too deep.

    ``large``: paths with a larger limit (photo uploads). JSON and chunked bodies are read whole
    (up to the limit) before the route runs; other bodies with a declared length stream through,
    counted."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES, depth: int = MAX_JSON_DEPTH,
                 large: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.depth = depth
        self.large = large or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.large.get(scope.get("path", ""), self.limit)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reply(send, 413, "request body too large")
            return
        is_json = b"json" in headers.get(b"content-type", b"").lower()
        if declared is not None and not is_json:
            await self._stream(scope, receive, send, limit)
            return
        # Read the whole body first (at most ``limit`` bytes): chunked bodies have no declared
        # size, and JSON must be checked before any parser recurses into it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            part = msg.get("body", b"")
            seen += len(part)
            if seen > limit:
                await _reply(send, 413, "request body too large")
                return
            chunks.append(part)
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        if is_json and json_too_deep(body, self.depth):
            await _reply(send, 400, f"JSON nested deeper than {self.depth} levels")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return msg

        async def watched(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _reply(send, 413, "request body too large")


class _TooLarge(Exception):
    pass


def install(app: Any, settings: Any, redis_url: str | None = None, prefix: str = "pcrm:",
            large_bodies: dict[str, int] | None = None) -> None:
    """Guards, headers, offline API docs and the security limiter on ``app`` (from ``create_app``)."""
    from bot.ratelimit import make_rate_limiter

    app.state.security_limiter = make_rate_limiter(redis_url, {}, prefix)
    if getattr(settings, "secret_generated", False):
        log.warning("PCRM_SECRET_KEY is not set: using this installation's random secret (var/secret_key); "
                    "set PCRM_SECRET_KEY in production (`pcrm doctor`)")
    _docs(app)
    app.add_middleware(RequestGuard, large=large_bodies)
    app.add_middleware(SecurityHeaders)


def _docs(app: Any) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from the installed package's files; init scripts are files too."""
    from importlib.resources import files

    from fastapi.responses import FileResponse, HTMLResponse, Response

    static = files("fastapi_offline").joinpath("static")
    assets = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
              "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
    title = app.title

    @app.get("/docs/static/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        if name == "init.js":
            return Response(_SWAGGER_INIT, media_type="text/javascript; charset=utf-8")
        if name not in assets:
            return Response(status_code=404)
        return FileResponse(str(static.joinpath(name)), media_type=assets[name],
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - API</title>
<link rel="icon" href="/docs/static/favicon.png"><link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script><script src="/docs/static/init.js"></script>
</body></html>""")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - API</title>
<link rel="icon" href="/docs/static/favicon.png"></head>
<body><redoc spec-url="/openapi.json"></redoc><script src="/docs/static/redoc.standalone.js"></script>
</body></html>""")


_SWAGGER_INIT = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset], layout: "BaseLayout"});
"""
