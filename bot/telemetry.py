"""Request and conversation ids, JSON logs, and optional OpenTelemetry traces of a turn.

* Every HTTP request gets an id (the caller's ``X-Request-ID`` if it is a plain token, else a
  new one), answered in ``X-Request-ID`` and kept in a context variable, as is a *conversation
  ref* set by the inbox: a short hash of the conversation key, never the key itself (it holds
  phone numbers), so a conversation's log lines can be followed without personal data.
* ``PCRM_LOG_FORMAT=json``: one JSON object per line (time, level, logger, message, request id,
  conversation ref, worker pid; uvicorn's access lines with method, path and status), for log
  shippers. The PII filter (:mod:`bot.logging_setup`) masks records before any formatter runs.
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (and the ``otel`` extra installed): each HTTP request is a
  span, with the turn's stages under it (``inbox`` → ``engine`` → ``nlu``, ``store``, ``redis``),
  exported over OTLP/HTTP by a batch processor. Unset: OpenTelemetry is never imported, and a
  stage costs one global read (:func:`span` returns a shared no-op context).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
import secrets
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("pcrm_request_id", default=None)
CONVERSATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("pcrm_conversation", default=None)
_CALLER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_NOOP = contextlib.nullcontext()
#: The OpenTelemetry tracer when tracing is on (set by :func:`setup_tracing`), else None.
TRACER: Any = None


def conversation_ref(key: str) -> str:
    """A stable, non-reversible short id for a conversation key (which may contain a phone number)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def span(name: str, **attributes: Any) -> Any:
    """A tracing span around a block, or a shared no-op when tracing is off."""
    if TRACER is None:
        return _NOOP
    return TRACER.start_as_current_span(name, attributes=attributes or None)


class RequestId:
    """ASGI middleware: the request id (and, with tracing, the request's span)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers") or [] if k == b"x-request-id"), b"").decode("latin-1")
        rid = given if _CALLER_ID.match(given) else secrets.token_hex(8)
        token = REQUEST_ID.set(rid)
        header = (b"x-request-id", rid.encode())

        async def tagged(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*(msg.get("headers") or []), header]}
            await send(msg)

        try:
            with span(f"{scope.get('method', 'WS')} {scope.get('path', '')}", **{"pcrm.request_id": rid}):
                await self.app(scope, receive, tagged)
        finally:
            REQUEST_ID.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            out.update(msg=f"{method} {path} {status}", method=method, path=path, status=status, client=client)
        else:
            out["msg"] = record.getMessage()
        rid, conv = REQUEST_ID.get(), CONVERSATION.get()
        if rid:
            out["request_id"] = rid
        if conv:
            out["conversation"] = conv
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's ``log_config`` for JSON lines: uvicorn's loggers and ours (the root) on stderr."""
    lvl = level.upper()
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "bot.telemetry.JsonFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": lvl, "propagate": False},
            "uvicorn.error": {"level": lvl},
            "uvicorn.access": {"handlers": ["default"], "level": lvl, "propagate": False},
        },
        "root": {"handlers": ["default"], "level": lvl},
    }


def setup_tracing(endpoint: str | None, service_name: str = "pcrm") -> bool:
    """Turn tracing on when an OTLP endpoint is configured (in each worker: the exporter's thread
    must start after the fork). Returns whether tracing is on."""
    global TRACER
    if not endpoint:
        return False
    if TRACER is not None:
        return True
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logging.getLogger("pcrm.telemetry").warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed (pip install 'pcrm[otel]')")
        return False
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": service_name,
                                                        "service.instance.id": str(os.getpid())}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    TRACER = trace.get_tracer("pcrm")
    return True


def flush_tracing(timeout_s: float = 5.0) -> None:
    """Export the spans still queued (shutdown, tests)."""
    if TRACER is None:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if flush is not None:
        flush(int(timeout_s * 1000))
