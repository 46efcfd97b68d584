"""``GET /metrics``: Prometheus text format, summed over every worker of ``pcrm serve``.

Counters and histograms are prometheus-client's (:mod:`bot.metrics`), in its *multiprocess mode*
whenever ``PROMETHEUS_MULTIPROC_DIR`` is set (``pcrm serve --workers N`` sets it to a directory of
its own, :mod:`bot.serve`): each worker writes its values to memory-mapped files there and
whichever worker answers the scrape adds them all up, so one scrape sees the whole server.
Without it (one process, tests) the default registry serves.

What the store knows (hand-offs waiting per department, SLA breaches, the spool) is read at
scrape time from the database and the spool file, not kept per worker: it is the same whichever
worker answers, and it stays right across restarts.

Access: with ``PCRM_METRICS_TOKEN`` set, only ``Authorization: Bearer <token>``; without it,
only clients on the loopback address (a Prometheus on the same host or a sidecar). The reverse
proxy in ``deploy/`` never forwards ``/metrics`` (to the app every proxied client is local).
"""

import hmac
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from fastapi import APIRouter, Request


class StoreCollector:
    """Gauges read from the database and the spool when scraped."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from sqlalchemy import func, select

        from crm_store.models import Handoff, ServiceRequest
        from crm_store.timeutil import utcnow

        state = self.app.state
        depth = GaugeMetricFamily("pcrm_handoff_queue_depth", "Hand-offs waiting for an agent, by department",
                                  labels=["department"])
        breaches = GaugeMetricFamily("pcrm_sla_breaches", "Items past their SLA now: handoff (waiting longer than "
                                     "sla.handoff_claim_minutes), request (open past its expected time)",
                                     labels=["kind", "department"])
        up = GaugeMetricFamily("pcrm_store_up", "1 when the database answered this scrape")
        claim = state.settings.municipality().sla.handoff_claim_minutes
        emergency_min, default_min = claim.emergency, claim.default
        now = utcnow()
        try:
            with state.sessions() as s:
                waiting: dict[str, int] = {}
                late: dict[str, int] = {}
                for dept, priority, queued_at in s.execute(
                        select(Handoff.department, Handoff.priority, Handoff.queued_at)
                        .where(Handoff.status == "queued")):
                    waiting[dept] = waiting.get(dept, 0) + 1
                    limit = emergency_min if priority >= 100 else default_min
                    if queued_at is not None and _naive(queued_at) < _naive(now) - timedelta(minutes=limit):
                        late[dept] = late.get(dept, 0) + 1
                overdue = s.execute(select(ServiceRequest.agency_responsible, func.count())
                                    .where(ServiceRequest.status == "open", ServiceRequest.expected_datetime < now)
                                    .group_by(ServiceRequest.agency_responsible)).all()
            for dept, n in sorted(waiting.items()):
                depth.add_metric([dept], n)
            for dept, n in sorted(late.items()):
                breaches.add_metric(["handoff", dept], n)
            for dept, n in overdue:
                breaches.add_metric(["request", str(dept)], n)
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - the database is down: say so, keep serving the rest
            up.add_metric([], 0)
        yield depth
        yield breaches
        yield up
        lines = size = 0
        path = state.inbox.spool_path
        try:
            size = path.stat().st_size
            if size:
                with open(path, "rb") as fh:
                    lines = sum(1 for line in fh if line.strip())
        except OSError:
            pass
        spool = GaugeMetricFamily("pcrm_spool_messages", "Records waiting in the spool for the database")
        spool.add_metric([], lines)
        yield spool
        spool_bytes = GaugeMetricFamily("pcrm_spool_bytes", "Size of the spool file")
        spool_bytes.add_metric([], size)
        yield spool_bytes


def _naive(dt: Any) -> Any:
    return dt.replace(tzinfo=None) if getattr(dt, "tzinfo", None) is not None else dt


def exposition(app: Any) -> bytes:
    """The metrics text: the workers' counters (summed) and the store's gauges."""
    # prometheus_client's own variable, which bot/serve.py sets before the library is imported (not
    # configuration, so not a Settings field): read where the library reads it.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        counters = generate_latest(registry)
    else:
        counters = generate_latest(REGISTRY)
    store = CollectorRegistry()
    store.register(StoreCollector(app))
    return counters + generate_latest(store)


def allowed(request: "Request", token: str | None) -> bool:
    """A bearer token when one is configured, else a loopback client."""
    if token:
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    host = request.client.host if request.client else ""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def router() -> "APIRouter":
    """The ``/metrics`` route (FastAPI imported here, on first use)."""
    from fastapi import APIRouter, Request
    from fastapi.responses import PlainTextResponse, Response

    r = APIRouter(tags=["ops"])

    # (no ``from __future__ import annotations`` in this module: FastAPI must see the real Request class)
    @r.get("/metrics", summary="Prometheus metrics (token or loopback only)", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not allowed(request, request.app.state.settings.pcrm_metrics_token):
            return PlainTextResponse("forbidden\n", status_code=403)
        return Response(exposition(request.app), media_type=CONTENT_TYPE_LATEST)

    return r
