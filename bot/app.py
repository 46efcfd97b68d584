"""The web app: one FastAPI application that mounts every channel, the console and the APIs.

``create_app()`` wires the parts together (store, engine, live events, inbox,
channel adapters); nothing else in the code base builds them, so tests and
``pcrm serve`` run exactly the same object graph.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.admission import make_gate
from bot.engine import Engine
from bot.inbox import Inbox
from bot.kb.sync import KbSync, engine_target
from bot.live import make_live_events
from bot.logging_setup import install_pii_filter
from bot.metrics import ErrorCounter
from bot.metrics_http import router as metrics_router
from bot.ratelimit import RateLimited, make_rate_limiter
from bot.security_headers import install as install_security
from bot.serve import engine_with, migrate
from bot.settings import Settings, get_settings
from bot.sms import LogOnlySmsSender
from bot.telemetry import RequestId, setup_tracing
from bot.web import install as install_web
from channels.base import ChannelAdapter
from crm_store.db import make_session_factory, resolve_url
from crm_store.requests import SqlRequestStore
from crm_store.state_store import SqlStateStore

log = logging.getLogger("pcrm.app")

#: Routes that take photos (issue 20): a phone photo is megabytes; bot/media.py caps the file at 8 MB.
PHOTO_PATHS = frozenset({"/webchat/photo", "/field/api/sync"})
PHOTO_BODY_BYTES = 12 * 1024 * 1024


class WorkerHeader:
    """``X-PCRM-Worker: <pid>`` on every response and WebSocket handshake (which worker answered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = (b"x-pcrm-worker", str(os.getpid()).encode())

        async def tagged(msg: Any) -> None:
            if msg["type"] in ("http.response.start", "websocket.accept"):
                msg = {**msg, "headers": [*(msg.get("headers") or []), header]}
            await send(msg)

        await self.app(scope, receive, tagged)


#: Path prefixes of residents' messages (every channel's webhook, the web chat and its socket)
#: and of operations: a request for one never waits for the staff routers (:class:`StaffRoutes`).
RESIDENT_PATHS = ("/webhooks/", "/webchat", "/healthz", "/metrics")


def staff_routers() -> list[Any]:
    """The routers of the staff's and the public's pages and APIs, in their matching order: the
    console (agents, supervisors, knowledge-base editors), the supervisor's tools, the field
    crews' app, Open311, the transparency and ticket-status pages, identity linking."""
    from bot.console.kb_routes import router as kb_console_router
    from bot.console.routes import router as console_router
    from bot.console.supervisor_routes import router as console_supervisor_router
    from bot.field import router as field_router  # issue 20: crews' work orders (PWA)
    from bot.identity import router as identity_router
    from bot.open311 import router as open311_router
    from bot.public_status import router as public_status_router  # issue 20: ticket lookup and map
    from bot.supervisor import router as supervisor_router
    from bot.transparency import router as transparency_router

    return [open311_router, transparency_router, public_status_router, field_router, supervisor_router,
            identity_router, kb_console_router, console_router, console_supervisor_router]


class StaffRoutes:
    """Includes :func:`staff_routers` into ``app`` on the first request that is not a resident's
    message (:data:`RESIDENT_PATHS`; :meth:`middleware`), and before the OpenAPI document is built.

    Importing them (their pydantic models, templates, the knowledge-base editor's helpers) cost
    ≈ 0.1-0.2 CPU s of the supervisor's start, before the first resident could be answered; a
    worker now imports them when staff first open a page (≈ 0.2 s and ≈ 9 MB of its own, once, in
    a thread: residents' messages go on meanwhile). Their routes then match as if included at start (they come after
    the channels' in either case; no path overlaps the pages of :func:`bot.web.install`).
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.included = False
        self._lock = threading.Lock()
        build = app.openapi

        def openapi() -> dict[str, Any]:
            self.include()
            return build()

        app.openapi = openapi  # type: ignore[method-assign] - /openapi.json and /docs list every route

    def include(self) -> None:
        with self._lock:
            if self.included:
                return
            for router in staff_routers():
                self.app.include_router(router)
            self.included = True

    def middleware(self, inner: ASGIApp) -> ASGIApp:
        """The ASGI middleware (for ``app.add_middleware``) that includes them before routing."""

        async def call(scope: Scope, receive: Receive, send: Send) -> None:
            if (not self.included and scope["type"] in ("http", "websocket")
                    and not scope["path"].startswith(RESIDENT_PATHS)):
                await run_in_threadpool(self.include)
            await inner(scope, receive, send)

        return call


async def _flush_spool_forever(inbox: Inbox, every_s: float = 30.0) -> None:
    """Retry what a database outage left in the spool, now and then every ``every_s`` seconds."""
    while True:
        try:
            written = await run_in_threadpool(inbox.flush_spool)
            if written:
                log.warning("wrote %d spooled message(s) to the store", written)
        except Exception:  # noqa: BLE001 - still down; try again later
            log.exception("spool flush failed")
        await asyncio.sleep(every_s)


def channel_adapters(inbox: Inbox, settings: Settings) -> list[ChannelAdapter]:
    """Every enabled channel. Each import is local: a channel's dependencies load only if used."""
    from channels.rest import RestChannel

    adapters: list[ChannelAdapter] = [RestChannel(inbox, settings)]
    try:
        from channels.webchat import WebChatChannel

        adapters.append(WebChatChannel(inbox, settings))
    except ImportError:  # pragma: no cover - channel not built yet
        log.debug("web chat channel not available")
    try:
        from channels.twilio_sms import TwilioSmsChannel

        adapters.append(TwilioSmsChannel(inbox, settings))
    except ImportError:  # pragma: no cover - twilio not installed
        log.debug("twilio SMS channel not available")
    try:
        from channels.twilio_voice import TwilioVoiceChannel

        adapters.append(TwilioVoiceChannel(inbox, settings))
    except ImportError:  # pragma: no cover - twilio not installed
        log.debug("twilio voice channel not available")
    try:
        from bot.media_access import may_fetch
        from channels.telegram import TelegramChannel

        adapters.append(TelegramChannel(inbox, settings, file_access=may_fetch))
    except ImportError:  # pragma: no cover - python-telegram-bot not installed
        log.debug("telegram channel not available")
    try:
        from channels.kakao import KakaoChannel

        adapters.append(KakaoChannel(inbox, settings))
    except ImportError:  # pragma: no cover - channel not built yet
        log.debug("kakao channel not available")
    return adapters


def _settle_heap(engine: Engine) -> None:
    """Warm the engine up, then move everything alive to the garbage collector's permanent
    generation (``gc.freeze``).

    The NLU model, spaCy and rasa_sdk leave ~270,000 long-lived objects; every full collection
    walked them all, a 150 ms pause of the whole worker (the GIL is held), which a few residents
    a minute felt as a slow answer. Frozen objects are never scanned again.

    A message allocates thousands of short-lived objects (spaCy docs, SQL parameters, JSON), so
    with the default threshold (700) the young generation was collected several times per
    message; at 20,000 the collector costs ~15 % less CPU per message (``bench/hot_path.py``:
    3.3 → 2.7 ms) for a few MB more of young objects between collections.
    """
    import gc

    try:
        engine.parse("warm-up")
        _ = engine.executor
    except Exception:  # noqa: BLE001 - a broken model shows on the first message, with its apology
        log.warning("engine warm-up failed", exc_info=True)
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _report_worker_start() -> None:
    """A forked worker's own start (fork → ready to serve), logged and in ``PCRM_STARTUP_REPORT``."""
    from bot import serve

    if serve.FORKED_AT is None:
        return
    t0, c0 = serve.FORKED_AT
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    log.info("worker %d ready %.2f s after its fork (%.2f CPU s)", os.getpid(), wall, cpu)
    serve.write_startup_report({"role": "worker", "pid": os.getpid(), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})


def _fill_pool(bind: Any, n: int) -> None:
    """Open ``n`` database connections before the first message, so the first seconds of
    traffic do not wait for connection set-up (a PostgreSQL backend each) on every thread."""
    conns = []
    try:
        for _ in range(min(n, bind.pool.size()) if hasattr(bind.pool, "size") else 0):
            conns.append(bind.raw_connection())
    except Exception:  # noqa: BLE001 - the database is down: the spool takes over, as it would later
        log.warning("database connections not opened at start", exc_info=True)
    finally:
        for c in conns:
            c.close()


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the whole application from settings (environment + ``config.yml``)."""
    install_pii_filter()  # no personal data in logs
    settings = settings or get_settings()
    settings.municipality()  # a bad config.yml stops the start here, each bad key named (ConfigError)
    setup_tracing(settings.otel_exporter_otlp_endpoint, settings.otel_service_name)  # off unless configured
    url = resolve_url(settings.database_url)
    migrate(url)  # idempotent: a fresh SQLite file gets its schema on first start (once, before forking)
    sessions = make_session_factory(url)
    redis_url, prefix = settings.redis_url, settings.pcrm_redis_prefix
    if engine is None:
        states: Any = SqlStateStore(sessions)
        if redis_url:  # a cache in front; SQL stays the source of truth
            from bot.dialogue.redis_state import RedisCachedStateStore

            states = RedisCachedStateStore(states, redis_url, prefix=prefix)
        engine = engine_with(settings, states, SqlRequestStore(sessions))  # the preloaded models, if any
    live = make_live_events(redis_url, prefix)
    inbox = Inbox(engine, sessions, live,
                  spool_path=settings.pcrm_spool_path or settings.pcrm_model_dir.parent / "spool.jsonl",
                  gate=make_gate(redis_url, url, make_rate_limiter(redis_url, settings.municipality(), prefix),
                                 engine.states, prefix),
                  max_threads=settings.pcrm_inbox_threads)
    # The published knowledge base: seeded from nlu_data/knowledge when the store is empty, then
    # reloaded whenever an editor publishes (bot/kb/sync.py).
    kb_sync = KbSync(sessions, engine_target(engine),
                     seed_dir=getattr(settings, "pcrm_kb_dir", None) or settings.pcrm_nlu_dir / "knowledge",
                     config=settings.config(), interval_s=settings.pcrm_kb_poll_s, live=live)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        _ = engine.nlu  # train or load the model before the first resident waits for it
        _ = engine.kb  # index and calibrate the knowledge base before the first question, too
        try:
            await run_in_threadpool(kb_sync.bootstrap)
        except Exception:  # noqa: BLE001 - the store is down: the seed the engine loaded serves until it is back
            log.exception("knowledge base not loaded from the store at start")
        _settle_heap(engine)
        _fill_pool(sessions.kw["bind"], inbox.max_threads + 2)
        _report_worker_start()
        flusher = asyncio.create_task(_flush_spool_forever(inbox, settings.pcrm_spool_flush_s))
        kb_poller = asyncio.create_task(kb_sync.run())
        try:
            yield
        finally:
            flusher.cancel()
            kb_poller.cancel()

    app = FastAPI(title="PCRM contact center", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="One dialogue engine for voice, SMS, Telegram, KakaoTalk and web chat; "
                              "a shared resident profile store; agent console and supervisor tools.")
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.live = live
    app.state.inbox = inbox
    app.state.kb_sync = kb_sync
    app.state.channels = {}

    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": "malformed request", "errors": errors}, status_code=422)

    @app.exception_handler(RateLimited)
    async def rate_limited(_req: Request, exc: RateLimited) -> JSONResponse:
        return JSONResponse({"detail": "too many messages; please try again later", "scope": exc.scope},
                            status_code=429, headers={"Retry-After": str(exc.retry_after)})

    @app.get("/healthz", tags=["ops"], summary="Liveness and store check")
    def healthz() -> dict[str, Any]:
        from sqlalchemy import text

        try:
            with sessions() as s:
                s.execute(text("SELECT 1"))
            db = "ok"
        except Exception:  # noqa: BLE001
            db = "down"
        return {"status": "ok", "database": db}

    # The channels first: routes are matched in order, and every resident's message and every
    # webhook goes to one of them (after ~35 pages' routes, matching cost ≈ 0.4 ms a request).
    for adapter in channel_adapters(inbox, settings):
        app.include_router(adapter.router())
        app.state.channels[adapter.name] = adapter
    app.include_router(metrics_router())
    from channels.webchat_photo import photo_router  # issue 20: photos in the web chat

    app.include_router(photo_router(inbox, settings))

    # The send-SMS interface (one-time codes): Twilio when configured, else a logger.
    sms_adapter = app.state.channels.get("twilio_sms")
    app.state.sms_sender = inbox.sms_sender = getattr(sms_adapter, "sender", None) or LogOnlySmsSender()
    # The console, the supervisor's tools, the field app, Open311, the public pages: included on
    # the first request for one of them (StaffRoutes, innermost: after the security checks).
    app.state.staff_routes = staff = StaffRoutes(app)
    app.add_middleware(staff.middleware)
    install_web(app)  # the shared stylesheet, the login redirect of page dependencies (bot/web)

    install_security(app, settings, redis_url, prefix,  # body/JSON guards, headers, offline /docs (security_headers.py)
                     large_bodies=dict.fromkeys(PHOTO_PATHS, PHOTO_BODY_BYTES))
    app.add_middleware(ErrorCounter)
    app.add_middleware(RequestId)  # outermost: the id (and the request's span) covers everything
    if settings.pcrm_worker_header:
        app.add_middleware(WorkerHeader)
    return app
