"""``GET /metrics``: Prometheus text format, summed over every worker of ``pcrm serve``.

Counters and histograms are prometheus-client's, in its *multiprocess mode* whenever
``PROMETHEUS_MULTIPROC_DIR`` is set (``pcrm serve --workers N`` sets it to a directory of its own,
:mod:`bot.serve`): each worker writes its values to memory-mapped files there and whichever
worker answers the scrape adds them all up, so one scrape sees the whole server. Without it
(one process, tests) the default registry serves.

This module holds the instruments (the engine and the inbox time their stages with
:func:`timed`); the route, with the gauges read from the store at scrape time, is
:mod:`bot.metrics_http`, in the web layer, so that timing a stage never imports the store.
"""

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from bot import telemetry

if TYPE_CHECKING:
    from bot.messages import Turn

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

MESSAGES = Counter("pcrm_messages", "Inbound messages answered, by channel and what they were understood as",
                   ["channel", "label"])
TURN_SECONDS = Histogram("pcrm_turn_seconds", "Time from a message's arrival at the inbox to its answer",
                         ["channel"], buckets=_LATENCY_BUCKETS)
STAGE_SECONDS = Histogram("pcrm_stage_seconds", "Time of one stage of a turn: nlu, engine (NLU, policy, actions), "
                          "store (the database), redis (lock, de-dup, state cache)", ["stage"],
                          buckets=_STAGE_BUCKETS)
HANDOFFS = Counter("pcrm_handoffs", "Hand-offs to people, by department", ["department"])
ERRORS = Counter("pcrm_errors", "Faults: turn (the apology turn), spooled (the store was down), "
                 "http_5xx (a request failed)", ["kind"])

for _kind in ("turn", "spooled", "http_5xx"):  # exposed at 0 from the start: alerts need a series
    ERRORS.labels(_kind)

#: Stages bound once (a label lookup per message saved).
STAGES = {name: STAGE_SECONDS.labels(name) for name in ("nlu", "engine", "store", "redis")}


class timed:  # noqa: N801 - used as a function: ``with timed("store"):``
    """Observe the time of the ``with`` block as ``stage`` (and trace it as a span, when tracing is on).

    A class, not a ``@contextmanager`` generator: six of these run a message, and a generator
    is made, started and finished for each."""

    __slots__ = ("stage", "t0", "span")

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.span: Any = None

    def __enter__(self) -> None:
        if telemetry.TRACER is not None:
            self.span = telemetry.span(self.stage)
            self.span.__enter__()
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> bool | None:
        STAGES[self.stage].observe(time.perf_counter() - self.t0)
        return self.span.__exit__(*exc) if self.span is not None else None


def turn_done(channel: str, turn: "Turn", seconds: float) -> None:
    """Count one answered message (called by the inbox once per message)."""
    MESSAGES.labels(channel, turn.label).inc()
    TURN_SECONDS.labels(channel).observe(seconds)
    for ev in turn.events:
        if ev.type == "handoff":
            HANDOFFS.labels(str(ev.data.get("department") or "general")).inc()
    if turn.label == "error":
        ERRORS.labels("turn").inc()


class ErrorCounter:
    """ASGI middleware: counts responses with a 5xx status (and requests that raised)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(msg: Any) -> None:
            if msg["type"] == "http.response.start" and msg.get("status", 200) >= 500:
                ERRORS.labels("http_5xx").inc()
            await send(msg)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            ERRORS.labels("http_5xx").inc()
            raise
