"""The dashboard's range and log filters, read from the query string once (a dependency).

Range: ``from`` and ``to`` are dates (``YYYY-MM-DD``) in municipality time, both inclusive;
default the last 7 days, at most 366 days. ``period`` (``day``/``week``) and ``group``
(``channel``/``department``) choose how the analytics are split. Log filters: ``channel``,
``label``, ``department`` (labels of that catalog department), ``direction`` (in/out),
``handled`` (``bot``/``agent``), ``lang``, ``resident`` (id), ``q`` (text contains),
``before_id`` (keyset pagination). Junk → 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Request

from bot import analytics
from bot.supervisor.access import Denied
from crm_store.timeutil import as_utc

MAX_RANGE_DAYS = 366
DEFAULT_DAYS = 7


def _tz(request: Request) -> ZoneInfo:
    return request.app.state.engine.knowledge.municipality.municipality.tz


@dataclass(frozen=True)
class Filters:
    start_day: date
    end_day: date
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    channel: str | None = None
    label: str | None = None
    direction: str | None = None
    q: str | None = None
    before_id: int | None = None
    period: str = "day"
    group: str = "channel"
    lang: str | None = None
    handled: str | None = None
    resident: int | None = None
    department_labels: tuple[str, ...] | None = None
    department: str | None = None

    def query(self, **override: Any) -> str:
        params: dict[str, Any] = {"from": self.start_day.isoformat(), "to": self.end_day.isoformat(),
                                  "channel": self.channel, "label": self.label, "direction": self.direction,
                                  "q": self.q, "period": None if self.period == "day" else self.period,
                                  "group": None if self.group == "channel" else self.group, "lang": self.lang,
                                  "handled": self.handled, "resident": self.resident,
                                  "department": self.department}
        params.update(override)
        return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def parse_filters(request: Request) -> Filters:
    """Range and log filters from the query string; :class:`Denied` 400 on junk."""
    q = request.query_params
    tz = _tz(request)
    today = datetime.now(tz).date()
    try:
        end_day = date.fromisoformat(q["to"]) if q.get("to") else today
        start_day = date.fromisoformat(q["from"]) if q.get("from") else end_day - timedelta(days=DEFAULT_DAYS - 1)
        start = as_utc(datetime.combine(start_day, time.min, tz))
        end = as_utc(datetime.combine(end_day + timedelta(days=1), time.min, tz))
    except (ValueError, OverflowError) as exc:
        raise Denied(400, "from and to must be dates like 2026-05-01") from exc
    if start_day > end_day:
        raise Denied(400, "from is after to")
    if (end_day - start_day).days >= MAX_RANGE_DAYS:
        raise Denied(400, f"the range may not exceed {MAX_RANGE_DAYS} days")
    direction = q.get("direction") or None
    if direction not in (None, "in", "out"):
        raise Denied(400, "direction must be in or out")
    before = q.get("before_id") or None
    if before is not None and (not before.isdigit() or len(before) > 18):
        raise Denied(400, "before_id must be a number")
    period = q.get("period") or "day"
    group = q.get("group") or "channel"
    handled = q.get("handled") or None
    resident = q.get("resident") or None
    if period not in analytics.PERIODS:
        raise Denied(400, "period must be day or week")
    if group not in analytics.GROUPS:
        raise Denied(400, "group must be channel or department")
    if handled not in (None, "bot", "agent"):
        raise Denied(400, "handled must be bot or agent")
    if resident is not None and (not resident.isdigit() or len(resident) > 18):
        raise Denied(400, "resident must be a number")
    department = (q.get("department") or "").strip()[:32] or None
    dept_labels = None
    if department:
        knowledge = request.app.state.engine.knowledge
        dept_labels = tuple(label for label in knowledge.labels if knowledge.department_of(label) == department)

    def short(name: str, limit: int = 200) -> str | None:
        value = (q.get(name) or "").strip()
        return value[:limit] or None

    return Filters(start_day, end_day, start, end, channel=short("channel", 32), label=short("label", 64),
                   direction=direction, q=short("q"), before_id=int(before) if before else None,
                   period=period, group=group, lang=short("lang", 8), handled=handled,
                   resident=int(resident) if resident else None, department_labels=dept_labels,
                   department=department)


def window(request: Request, f: Filters) -> analytics.Window:
    return analytics.Window(f.start_day, f.end_day, f.start, f.end, _tz(request))




def filters(request: Request) -> Filters:
    """Dependency: the request's :class:`Filters`, or 400 with the reason."""
    try:
        return parse_filters(request)
    except Denied as err:
        raise err.http() from None
