"""The supervisor's figures and the interaction log: SQL over the store, no HTTP, no HTML.

KPIs (everything in the range):

* volume by channel: inbound messages per channel;
* conversations: conversations with at least one inbound message; hand-off rate: share of them
  with a hand-off queued in the range; bot containment: the rest (1 - hand-off rate);
* wait before claim: ``claimed_at - queued_at`` of hand-offs queued in the range and claimed
  (mean and nearest-rank p90, minutes), plus how many are still waiting;
* CSAT: mean of the 1–5 feedback ratings given in the range, and their number;
* top labels: the 10 most frequent NLU labels of inbound messages;
* low-confidence messages: the 20 latest inbound messages with confidence under
  :data:`bot.municipality.LOW_CONFIDENCE` (0.45, the default of ``nlu.clarify_below``).

Interaction log: the filters of :class:`~bot.supervisor.filters.Filters`, ``q`` as a
case-insensitive ``ILIKE`` (a pg_trgm GIN index serves it on PostgreSQL), newest first
(``created_at``, then id), 50 a page; ``before_id`` continues after the last row shown (keyset
pagination: stable while new messages arrive). Message text is shown and exported with phone and
resident registration numbers masked (``bot.masking.mask_pii``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from sqlalchemy import func, literal_column, or_, select
from sqlalchemy.orm import Session, sessionmaker

from bot.masking import mask_pii
from bot.municipality import LOW_CONFIDENCE
from bot.supervisor.filters import Filters
from crm_store.models import Feedback, Handoff, Interaction, RequestUpdate
from crm_store.timeutil import as_utc

__all__ = ["LOW_CONFIDENCE", "csv_lines", "kpis", "log_row", "search"]

PAGE_SIZE = 50
CSV_MAX_ROWS = 100_000
#: First characters a spreadsheet may take for a formula (a tab or CR is skipped before one).
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def kpis(sessions: sessionmaker[Session], f: Filters) -> dict[str, Any]:
    """The dashboard's figures for the range of ``f`` (see the module doc)."""
    in_range = (Interaction.created_at >= f.start, Interaction.created_at < f.end)
    with sessions() as s:
        volume = dict(s.execute(
            select(Interaction.channel, func.count())
            .where(Interaction.direction == "in", *in_range)
            .group_by(Interaction.channel).order_by(func.count().desc(), Interaction.channel)
        ).all())
        conversations = set(s.scalars(
            select(Interaction.conversation_id).where(Interaction.direction == "in", *in_range).distinct()))
        handoffs = s.execute(
            select(Handoff.conversation_id, Handoff.queued_at, Handoff.claimed_at, Handoff.status)
            .where(Handoff.queued_at >= f.start, Handoff.queued_at < f.end)
        ).all()
        ratings = [int(r) for r in s.scalars(
            select(Feedback.rating).where(Feedback.created_at >= f.start, Feedback.created_at < f.end))]
        labels = s.execute(
            select(Interaction.label, func.count())
            .where(Interaction.direction == "in", Interaction.label.is_not(None), *in_range)
            .group_by(Interaction.label).order_by(func.count().desc(), Interaction.label).limit(10)
        ).all()
        low = s.scalars(
            select(Interaction)
            .where(Interaction.direction == "in", Interaction.confidence < LOW_CONFIDENCE, *in_range)
            .order_by(Interaction.id.desc()).limit(20)
        ).all()
        # Closing the loop (issue 20): requests marked done in the range, and residents' "not fixed" reopenings.
        upd_range = (RequestUpdate.created_at >= f.start, RequestUpdate.created_at < f.end)
        resolved_n = s.scalar(select(func.count()).select_from(RequestUpdate).where(
            RequestUpdate.sub_status == "resolved", RequestUpdate.kind.in_(("status", "crew")), *upd_range)) or 0
        reopened_n = s.scalar(select(func.count()).select_from(RequestUpdate).where(
            RequestUpdate.kind == "reopened", *upd_range)) or 0
    handed = {h.conversation_id for h in handoffs} & conversations
    n = len(conversations)
    waits = [(as_utc(h.claimed_at) - as_utc(h.queued_at)).total_seconds() / 60 for h in handoffs if h.claimed_at]
    return {
        "from": f.start_day.isoformat(), "to": f.end_day.isoformat(),
        "volume_by_channel": volume,
        "messages_in": sum(volume.values()),
        "conversations": n,
        "handed_off_conversations": len(handed),
        "handoff_rate": round(len(handed) / n, 4) if n else None,
        "bot_containment": round((n - len(handed)) / n, 4) if n else None,
        "handoffs": len(handoffs),
        "handoffs_waiting": sum(1 for h in handoffs if h.status == "queued"),
        "wait_before_claim_minutes": {
            "n": len(waits),
            "mean": round(sum(waits) / len(waits), 2) if waits else None,
            "p90": round(_p90(waits), 2) if waits else None,  # type: ignore[arg-type]
        },
        "csat": {"mean": round(sum(ratings) / len(ratings), 2) if ratings else None, "n": len(ratings)},
        "top_labels": [{"label": label, "count": c} for label, c in labels],
        "low_confidence": [log_row(i) for i in low],
        "requests_resolved": resolved_n,
        "requests_reopened": reopened_n,
        "reopen_rate": round(reopened_n / resolved_n, 4) if resolved_n else None,
    }


def _search_stmt(f: Filters) -> Any:
    stmt = select(Interaction).where(Interaction.created_at >= f.start, Interaction.created_at < f.end)
    if f.channel:
        stmt = stmt.where(Interaction.channel == f.channel)
    if f.label:
        stmt = stmt.where(Interaction.label == f.label)
    if f.direction:
        stmt = stmt.where(Interaction.direction == f.direction)
    if f.lang:
        stmt = stmt.where(Interaction.lang == f.lang)
    if f.handled == "bot":
        stmt = stmt.where(Interaction.handled_by == "bot")
    elif f.handled == "agent":  # "<> 'bot'" inline: lets PostgreSQL pick the partial index of migration 0002
        stmt = stmt.where(Interaction.handled_by != literal_column("'bot'"), Interaction.handled_by.like("agent:%"))
    if f.resident is not None:
        stmt = stmt.where(Interaction.resident_id == f.resident)
    if f.department_labels is not None:
        stmt = stmt.where(Interaction.label.in_(f.department_labels or ("-",)))
    if f.q:
        # ILIKE (lower() LIKE lower() on SQLite): on PostgreSQL the pg_trgm GIN index of migration 0002 applies.
        escaped = f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Interaction.text.ilike(f"%{escaped}%", escape="\\"))
    # Newest first by time, ties by id: a date range far in the past is then an index range scan
    # (created_at, or channel + created_at) instead of a walk back along the primary key.
    return stmt.order_by(Interaction.created_at.desc(), Interaction.id.desc())


def search(
    sessions: sessionmaker[Session], f: Filters, limit: int = PAGE_SIZE
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the log (newest first) and the ``before_id`` of the next page (``None`` at the end)."""
    stmt = _search_stmt(f)
    with sessions() as s:
        if f.before_id is not None:  # keyset: strictly after (created_at, id) of the last row shown
            last = s.scalar(select(Interaction.created_at).where(Interaction.id == f.before_id))
            if last is None:
                stmt = stmt.where(Interaction.id < f.before_id)
            else:
                stmt = stmt.where(Interaction.created_at <= last, or_(
                    Interaction.created_at < last, Interaction.id < f.before_id))
        rows = s.scalars(stmt.limit(limit + 1)).all()
    page = [log_row(r) for r in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


def log_row(i: Interaction) -> dict[str, Any]:
    return {
        "id": i.id,
        "created_at": as_utc(i.created_at).isoformat(timespec="seconds"),
        "conversation_id": i.conversation_id,
        "channel": i.channel,
        "direction": i.direction,
        "label": i.label,
        "confidence": None if i.confidence is None else round(i.confidence, 3),
        "handled_by": i.handled_by,
        "text": mask_pii(i.text or ""),
    }


CSV_FIELDS = ("id", "created_at", "conversation_id", "channel", "direction", "label", "confidence",
              "handled_by", "text")


def csv_lines(sessions: sessionmaker[Session], f: Filters) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_FIELDS)
    yield "\ufeff" + buf.getvalue()  # BOM: Excel opens UTF-8 Korean text correctly
    before, sent = f.before_id, 0
    while sent < CSV_MAX_ROWS:
        page, before = search(sessions, replace(f, before_id=before), limit=1000)
        buf.seek(0)
        buf.truncate()
        for row in page:
            text = row["text"]
            if text[:1] in CSV_FORMULA_STARTS:
                text = "'" + text  # no formula injection in spreadsheets (OWASP: = + - @ tab CR)
            writer.writerow([*(row[k] for k in CSV_FIELDS[:-1]), text])
        sent += len(page)
        yield buf.getvalue()
        if before is None:
            break

