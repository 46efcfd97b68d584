"""Supervisor analytics as SQL aggregates: the database does the counting, Python only shapes rows.

The older dashboard (:mod:`bot.analytics`) loads interactions into Python, which takes seconds
on a million rows.  Every function here is one or a few ``GROUP BY`` statements over indexed
columns, on PostgreSQL and SQLite alike (the few expressions that differ — local day, seconds
between two timestamps — come from :func:`_day` and :func:`_seconds`).  ``bench/dashboard.py``
times them on 1M interactions in PostgreSQL.

Periods are half-open ``[start, end)`` in UTC; days are counted in the office's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, literal_column, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crm_store.models import PRIORITY_EMERGENCY, Agent, AuditLog, Conversation, Feedback, Handoff, Interaction
from crm_store.timeutil import as_utc, utcnow


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC and the office time zone (for days)."""

    start: datetime
    end: datetime
    tz: ZoneInfo

    @classmethod
    def preset(cls, name: str, tz: ZoneInfo, now: datetime | None = None) -> Period:
        """``today``, ``yesterday``, ``7d`` or ``30d`` (default), counted in local days."""
        now = as_utc(now or utcnow())
        midnight = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
        days = {"today": 0, "yesterday": 1, "7d": 6, "30d": 29}.get(name, 29)
        start = midnight - timedelta(days=days)
        end = midnight if name == "yesterday" else now + timedelta(seconds=1)
        return cls(as_utc(start), as_utc(end), tz)


def _pg(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def _day(s: Session, col: Any, tz: ZoneInfo) -> ColumnElement[Any]:
    """The local calendar day of a UTC timestamp, as ``YYYY-MM-DD`` text."""
    if _pg(s):
        return func.to_char(func.timezone(str(tz), col), "YYYY-MM-DD")
    offset = int((datetime.now(tz).utcoffset() or timedelta()).total_seconds() // 60)
    return func.strftime("%Y-%m-%d", col, f"{offset:+d} minutes")


def _seconds(s: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    if _pg(s):
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _round(v: Any, nd: int = 1) -> float | None:
    return None if v is None else round(float(v), nd)


def overview(s: Session, p: Period, department: str | None = None, channel: str | None = None) -> dict[str, Any]:
    """Totals for the period: messages in, conversations, hand-offs, mean wait, CSAT."""
    iw = [Interaction.created_at >= p.start, Interaction.created_at < p.end, Interaction.direction == "in"]
    if channel:
        iw.append(Interaction.channel == channel)
    msgs, convs = s.execute(select(func.count(), func.count(func.distinct(Interaction.conversation_id)))
                            .where(*iw)).one()
    hw = [Handoff.queued_at >= p.start, Handoff.queued_at < p.end]
    if department:
        hw.append(Handoff.department == department)
    wait = _seconds(s, Handoff.claimed_at, Handoff.queued_at)
    handoffs, avg_wait, emergencies = s.execute(
        select(func.count(), func.avg(wait), func.sum(case((Handoff.priority >= PRIORITY_EMERGENCY, 1), else_=0)))
        .where(*hw)).one()
    fw = [Feedback.created_at >= p.start, Feedback.created_at < p.end]
    csat, ratings = s.execute(select(func.avg(Feedback.rating), func.count()).where(*fw)).one()
    return {"messages": msgs, "conversations": convs, "handoffs": handoffs, "emergencies": int(emergencies or 0),
            "handoff_rate": _round(100.0 * handoffs / convs if convs else 0.0),
            "avg_wait_s": _round(avg_wait), "csat": _round(csat, 2), "ratings": ratings}


def by_day(s: Session, p: Period, channel: str | None = None) -> list[dict[str, Any]]:
    """Messages in per local day and channel (the volume chart)."""
    day = _day(s, Interaction.created_at, p.tz).label("day")
    w = [Interaction.created_at >= p.start, Interaction.created_at < p.end, Interaction.direction == "in"]
    if channel:
        w.append(Interaction.channel == channel)
    rows = s.execute(select(day, Interaction.channel, func.count()).where(*w)
                     .group_by(day, Interaction.channel).order_by(day, Interaction.channel))
    return [{"day": d, "channel": c, "messages": n} for d, c, n in rows]


def by_department(s: Session, p: Period, sla: dict[str, int]) -> list[dict[str, Any]]:
    """Hand-offs per department: count, mean wait, share claimed within the SLA target."""
    wait = _seconds(s, Handoff.claimed_at, Handoff.queued_at)
    target = case((Handoff.priority >= PRIORITY_EMERGENCY, sla["emergency"]), else_=sla["default"])
    met = func.sum(case((and_(Handoff.claimed_at.is_not(None), wait <= target), 1), else_=0))
    rows = s.execute(select(Handoff.department, func.count(), func.avg(wait), met)
                     .where(Handoff.queued_at >= p.start, Handoff.queued_at < p.end)
                     .group_by(Handoff.department).order_by(func.count().desc()))
    return [{"department": d, "handoffs": n, "avg_wait_s": _round(w), "sla_met_pct": _round(100.0 * (m or 0) / n)}
            for d, n, w, m in rows]


def by_agent(s: Session, p: Period) -> list[dict[str, Any]]:
    """Per agent: hand-offs closed, mean handling time (claimed → closed), CSAT, transfers made."""
    aht = _seconds(s, Handoff.closed_at, Handoff.claimed_at)
    handled = (select(Handoff.agent_id.label("agent_id"), func.count().label("handled"), func.avg(aht).label("aht"))
               .where(Handoff.closed_at >= p.start, Handoff.closed_at < p.end, Handoff.agent_id.is_not(None),
                      Handoff.claimed_at.is_not(None))
               .group_by(Handoff.agent_id).subquery())
    csat = (select(Handoff.agent_id.label("agent_id"), func.avg(Feedback.rating).label("csat"),
                   func.count().label("ratings"))
            .join(Handoff, Handoff.id == Feedback.handoff_id)
            .where(Feedback.created_at >= p.start, Feedback.created_at < p.end)
            .group_by(Handoff.agent_id).subquery())
    transfers = (select(AuditLog.who.label("who"), func.count().label("transfers"))
                 .where(AuditLog.action == "console.transfer", AuditLog.created_at >= p.start,
                        AuditLog.created_at < p.end)
                 .group_by(AuditLog.who).subquery())
    rows = s.execute(
        select(Agent.id, Agent.username, Agent.display_name, Agent.departments,
               func.coalesce(handled.c.handled, 0), handled.c.aht, csat.c.csat, func.coalesce(csat.c.ratings, 0),
               func.coalesce(transfers.c.transfers, 0))
        .outerjoin(handled, handled.c.agent_id == Agent.id)
        .outerjoin(csat, csat.c.agent_id == Agent.id)
        .outerjoin(transfers, transfers.c.who == Agent.username)
        .where(Agent.active.is_(True))
        .order_by(func.coalesce(handled.c.handled, 0).desc(), Agent.id))
    return [{"agent_id": i, "name": dn or u, "departments": list(deps or []), "handled": h, "aht_s": _round(a),
             "csat": _round(c, 2), "ratings": r, "transfers": t} for i, u, dn, deps, h, a, c, r, t in rows]


def wallboard(s: Session, sla: dict[str, int], departments: list[str] | None = None) -> dict[str, Any]:
    """Now: queue depth and longest wait per department, items past or near their SLA, agents' load."""
    now = utcnow()
    wait = _seconds(s, literal_column("CURRENT_TIMESTAMP"), Handoff.queued_at) if _pg(s) else \
        (func.julianday("now") - func.julianday(Handoff.queued_at)) * 86400.0
    target = case((Handoff.priority >= PRIORITY_EMERGENCY, sla["emergency"]), else_=sla["default"])
    queued = Handoff.status == "queued"
    w = [Handoff.status != "closed"]
    if departments is not None:
        w.append(Handoff.department.in_(departments))
    rows = s.execute(
        select(Handoff.department,
               func.sum(case((queued, 1), else_=0)), func.sum(case((queued, 0), else_=1)),
               func.max(case((queued, wait), else_=None)),
               func.sum(case((and_(queued, wait > target), 1), else_=0)),
               func.sum(case((and_(queued, wait > target * 2 / 3, wait <= target), 1), else_=0)),
               func.sum(case((and_(queued, Handoff.priority >= PRIORITY_EMERGENCY), 1), else_=0)))
        .where(*w).group_by(Handoff.department).order_by(Handoff.department))
    depts = [{"department": d, "queued": int(q or 0), "in_progress": int(ip or 0), "longest_wait_s": _round(lw, 0),
              "sla_breached": int(b or 0), "sla_at_risk": int(r or 0), "emergencies": int(e or 0)}
             for d, q, ip, lw, b, r, e in rows]
    load = dict(s.execute(select(Handoff.agent_id, func.count()).where(Handoff.status == "claimed")
                          .group_by(Handoff.agent_id)).tuples().all())
    agents = [{"agent_id": a.id, "name": a.display_name or a.username, "departments": list(a.departments or []),
               "load": int(load.get(a.id, 0))}
              for a in s.scalars(select(Agent).where(Agent.active.is_(True)).order_by(Agent.id))]
    return {"at": now.isoformat(), "departments": depts, "agents": agents,
            "totals": {k: sum(d[k] for d in depts) for k in ("queued", "in_progress", "sla_breached", "sla_at_risk",
                                                             "emergencies")}}


def drill(s: Session, p: Period, department: str | None = None, channel: str | None = None,
          agent_id: int | None = None, day: str | None = None, limit: int = 200,
          handoffs: bool = False) -> list[dict[str, Any]]:
    """The conversations behind a number: hand-offs (``handoffs``, a department or an agent) or
    conversations with messages (channel, day) in the period, newest first."""
    if handoffs or department or agent_id:
        w = [Handoff.queued_at >= p.start, Handoff.queued_at < p.end]
        if department:
            w.append(Handoff.department == department)
        if agent_id:
            w.append(Handoff.agent_id == agent_id)
        rows = s.execute(select(Handoff.id, Handoff.conversation_id, Handoff.department, Handoff.status,
                                Handoff.queued_at, Handoff.resolution_code, Conversation.channel)
                         .join(Conversation, Conversation.id == Handoff.conversation_id)
                         .where(*w).order_by(Handoff.queued_at.desc()).limit(limit))
        return [{"handoff_id": h, "conversation_id": c, "department": d, "status": st, "at": as_utc(q).isoformat(),
                 "resolution_code": rc, "channel": ch} for h, c, d, st, q, rc, ch in rows]
    w = [Interaction.created_at >= p.start, Interaction.created_at < p.end, Interaction.direction == "in"]
    if channel:
        w.append(Interaction.channel == channel)
    if day:
        w.append(_day(s, Interaction.created_at, p.tz) == day)
    sub = (select(Interaction.conversation_id.label("cid"), func.count().label("n"),
                  func.max(Interaction.created_at).label("last"))
           .where(*w).group_by(Interaction.conversation_id).order_by(func.max(Interaction.created_at).desc())
           .limit(limit).subquery())
    rows = s.execute(select(sub.c.cid, sub.c.n, sub.c.last, Conversation.channel)
                     .join(Conversation, Conversation.id == sub.c.cid).order_by(sub.c.last.desc()))
    return [{"conversation_id": c, "messages": int(n), "at": as_utc(last).isoformat() if isinstance(last, datetime)
             else str(last), "channel": ch} for c, n, last, ch in rows]


__all__ = ["Period", "by_agent", "by_day", "by_department", "drill", "overview", "wallboard"]
