"""Supervisor analytics: KPIs by day or week and by department or channel, SLA, abandonment,
PCRM needs (what residents need, and which needs are rising) and equity between groups.

Everything is computed for a window ``[start, end)`` (UTC, from whole days in municipality time)
from the store's rows; nothing here writes. Definitions (the dashboard shows exactly these):

Attribution of a conversation (one per channel identity; see ``crm_store.models``)
    *channel*: its channel. *department*: the department of its first hand-off queued in the
    window, else of its first service request in the window, else the catalog department of the
    first label of its inbound messages that has one, else ``general``. *language*: the most
    frequent ``lang`` of its inbound messages in the window, else the resident's preferred
    language. *age band*: its resident's ``age_band`` (unknown → left out of the age split).
    A conversation counts in the day/week of its first inbound message in the window.

Volume, hand-off rate, bot containment
    *messages in*: inbound messages. *conversations*: conversations with an inbound message in the
    window; *hand-off rate*: share of them with a hand-off queued in the window; *bot
    containment*: the rest.

First-contact resolution (FCR)
    A *contact* is a resident's inbound messages about one need (a service or FAQ label) less
    than ``FCR_GRACE`` (1 h) apart. A contact starting in the window is *resolved at first
    contact* unless the same resident (the conversation when the resident is unknown) starts
    another contact about the same need within ``FCR_WINDOW`` (7 days) after its last message.
    FCR = resolved contacts / contacts. Recent contacts have had less time to come back.

Wait before claim, hand-off SLA
    For hand-offs queued in the window: ``claimed_at - queued_at`` (minutes; mean and nearest-rank
    p90). A hand-off *breaches* its SLA when it was claimed later than
    ``sla.handoff_claim_minutes`` (``emergency`` for priority ≥ 100, else ``default``) after it was
    queued, or is unclaimed and has been (was, until closed) waiting longer than that.

Abandonment
    A hand-off queued in the window is *abandoned* when no agent ever claimed it and either
    (a) it was closed unclaimed (the resident left, went back to the bot, or it was cleared), or
    (b) it is still queued and the resident has written nothing for ``sla.abandon_after_minutes``
    (default 30) — counted from the later of the hand-off's queueing and the resident's last
    inbound message in that conversation. Abandonment rate = abandoned / hand-offs queued.

Time to resolve requests, request SLA
    For service requests received in the window: resolved ones (sub-status ``resolved``) take
    ``updated_datetime - requested_datetime`` hours (mean, median). A request *breaches* its SLA
    (``expected_datetime``, from ``services.*.expected_hours``) when it was closed (resolved or
    rejected) after it, or is still open past it now.

CSAT
    Mean of the 1–5 ratings given in the window; grouped by the hand-off's department when the
    rating belongs to a hand-off, else by the conversation's.

Needs (PCRM: residents grouped by what they need, never by "value")
    A resident's needs are their ``needs_tags`` and the service/FAQ labels and service codes of
    their history. Per need: residents with it (all time), and distinct residents (conversations
    when unknown) who raised it in this window and in the previous window of equal length; change
    % = (this - previous) / previous; *rising* = more this window than before.

Equity
    The KPIs above per channel, language and age band. A group with at least ``equity.min_group``
    conversations is flagged when its mean wait before claim, or its hand-off rate, exceeds the
    overall figure × ``equity.flag_ratio``.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from bot.masking import mask_pii
from bot.municipality import LOW_CONFIDENCE, Municipality
from crm_store.models import (
    PRIORITY_EMERGENCY,
    Conversation,
    Feedback,
    Handoff,
    Interaction,
    Resident,
    ServiceRequest,
)
from crm_store.timeutil import as_utc, utcnow

FCR_GRACE = timedelta(hours=1)
FCR_WINDOW = timedelta(days=7)
OUT_OF_SCOPE = "conv.out_of_scope"
PERIODS = ("day", "week")
GROUPS = ("channel", "department")
EQUITY_DIMENSIONS = ("channel", "lang", "age_band")
_CHUNK = 900


@dataclass(frozen=True)
class Window:
    start_day: date
    end_day: date  # inclusive
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    tz: ZoneInfo

    def previous(self) -> Window:
        days = (self.end_day - self.start_day).days + 1
        return Window(self.start_day - timedelta(days=days), self.start_day - timedelta(days=1),
                      self.start - (self.end - self.start), self.start, self.tz)


def bucket_of(when: datetime, tz: ZoneInfo, period: str) -> str:
    """``2026-05-04`` (day) or ``2026-W19`` (ISO week) of ``when`` in municipality time."""
    local = as_utc(when).astimezone(tz).date()
    if period == "week":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return local.isoformat()


def buckets(w: Window, period: str) -> list[str]:
    """Every day or week of the window, in order (so empty days show as zero)."""
    out: list[str] = []
    day = w.start_day
    while day <= w.end_day:
        if period == "week":
            year, week, _ = day.isocalendar()
            label = f"{year}-W{week:02d}"
        else:
            label = day.isoformat()
        if not out or out[-1] != label:
            out.append(label)
        day += timedelta(days=1)
    return out


def p90(values: Sequence[float]) -> float | None:
    """Nearest-rank 90th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def _r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    items = sorted(set(ids))
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


# ---------------------------------------------------------------------------- facts

@dataclass
class Facts:
    """Per-kind records; each has ``bucket`` and the group keys ``channel``, ``department``,
    ``lang``, ``age_band`` plus its own values."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    conversations: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    ratings: list[dict[str, Any]] = field(default_factory=list)



def _config(config: Municipality) -> tuple[float, float, float]:
    sla = config.sla
    return sla.handoff_claim_minutes.emergency, sla.handoff_claim_minutes.default, sla.abandon_after_minutes


def load_facts(sessions: sessionmaker[Session], knowledge: Any, w: Window, period: str,
               now: datetime | None = None) -> Facts:
    """The window's records, attributed and classified (see the module doc)."""
    now = as_utc(now or utcnow())
    emergency_min, default_min, abandon_min = _config(knowledge.municipality)
    needs = set(knowledge.services) | set(knowledge.faq)
    I = Interaction  # noqa: N806, E741
    with sessions() as s:
        inbound = s.execute(
            select(I.conversation_id, I.resident_id, I.channel, I.label, I.lang, I.created_at)
            .where(I.direction == "in", I.created_at >= w.start, I.created_at < w.end + FCR_WINDOW)
            .order_by(I.created_at, I.id)).all()
        handoffs = s.execute(
            select(Handoff.id, Handoff.conversation_id, Handoff.department, Handoff.priority, Handoff.status,
                   Handoff.queued_at, Handoff.claimed_at, Handoff.closed_at)
            .where(Handoff.queued_at >= w.start, Handoff.queued_at < w.end).order_by(Handoff.queued_at)).all()
        requests = s.execute(
            select(ServiceRequest.conversation_id, ServiceRequest.resident_id, ServiceRequest.channel,
                   ServiceRequest.agency_responsible, ServiceRequest.status, ServiceRequest.sub_status,
                   ServiceRequest.requested_datetime, ServiceRequest.updated_datetime,
                   ServiceRequest.expected_datetime, ServiceRequest.lang)
            .where(ServiceRequest.requested_datetime >= w.start, ServiceRequest.requested_datetime < w.end)
            .order_by(ServiceRequest.requested_datetime)).all()
        ratings = s.execute(
            select(Feedback.conversation_id, Feedback.handoff_id, Feedback.rating, Feedback.created_at)
            .where(Feedback.created_at >= w.start, Feedback.created_at < w.end)).all()
        conv_ids = {r.conversation_id for r in inbound if as_utc(r.created_at) < w.end}
        conv_ids |= {h.conversation_id for h in handoffs}
        conv_ids |= {r.conversation_id for r in requests if r.conversation_id}
        conv_ids |= {r.conversation_id for r in ratings if r.conversation_id}
        convs: dict[int, Any] = {}
        for chunk in _chunks(conv_ids):
            for c in s.execute(select(Conversation.id, Conversation.channel, Conversation.resident_id,
                                      Conversation.department).where(Conversation.id.in_(chunk))):
                convs[c.id] = c
        resident_ids = {c.resident_id for c in convs.values() if c.resident_id}
        resident_ids |= {r.resident_id for r in requests if r.resident_id}
        residents: dict[int, Any] = {}
        for chunk in _chunks(resident_ids):
            for r in s.execute(select(Resident.id, Resident.age_band, Resident.preferred_lang)
                               .where(Resident.id.in_(chunk))):
                residents[r.id] = r
        waiting = [h.conversation_id for h in handoffs if h.status == "queued" and h.claimed_at is None]
        last_in: dict[int, datetime] = {}
        for chunk in _chunks(waiting):
            for cid, last in s.execute(select(I.conversation_id, func.max(I.created_at))
                                       .where(I.direction == "in", I.conversation_id.in_(chunk))
                                       .group_by(I.conversation_id)):
                last_in[cid] = as_utc(last)

    in_window = [r for r in inbound if as_utc(r.created_at) < w.end]
    # conversation attributes
    first_in: dict[int, datetime] = {}
    langs: dict[int, Counter[str]] = defaultdict(Counter)
    label_dept: dict[int, str] = {}
    for r in in_window:
        first_in.setdefault(r.conversation_id, as_utc(r.created_at))
        if r.lang:
            langs[r.conversation_id][r.lang] += 1
        dept = knowledge.department_of(r.label) if r.label else None
        if dept and r.conversation_id not in label_dept:
            label_dept[r.conversation_id] = dept
    dept_of_conv: dict[int, str] = {}
    for h in handoffs:
        dept_of_conv.setdefault(h.conversation_id, h.department)
    for rq in requests:
        if rq.conversation_id:
            dept_of_conv.setdefault(rq.conversation_id, rq.agency_responsible)
    for cid, dept in label_dept.items():
        dept_of_conv.setdefault(cid, dept)

    def attrs(cid: int | None, resident_id: int | None = None) -> dict[str, Any]:
        conv = convs.get(cid) if cid else None
        rid = resident_id or (conv.resident_id if conv else None)
        res = residents.get(rid) if rid else None
        lang = langs[cid].most_common(1)[0][0] if cid and langs.get(cid) else (res.preferred_lang if res else "ko")
        return {"channel": conv.channel if conv else "-",
                "department": dept_of_conv.get(cid) or (conv.department if conv else None) or "general",
                "lang": lang or "ko", "age_band": res.age_band if res else None}

    cache: dict[int, dict[str, Any]] = {}

    def conv_attrs(cid: int) -> dict[str, Any]:
        if cid not in cache:
            cache[cid] = attrs(cid)
        return cache[cid]

    facts = Facts()
    for r in in_window:
        a = dict(conv_attrs(r.conversation_id))
        a["department"] = (knowledge.department_of(r.label) if r.label else None) or a["department"]
        a["channel"] = r.channel
        facts.messages.append({**a, "bucket": bucket_of(r.created_at, w.tz, period)})
    handed = {h.conversation_id for h in handoffs}
    for cid, first in first_in.items():
        facts.conversations.append({**conv_attrs(cid), "bucket": bucket_of(first, w.tz, period),
                                    "handed": cid in handed})

    # first-contact resolution
    by_need: dict[tuple[Any, str], list[tuple[datetime, int]]] = defaultdict(list)
    for r in inbound:
        if r.label in needs:
            person = r.resident_id or f"c{r.conversation_id}"
            by_need[(person, r.label)].append((as_utc(r.created_at), r.conversation_id))
    for (_person, _label), msgs in by_need.items():
        contacts: list[list[Any]] = []  # [start, last, conversation]
        for at, cid in msgs:
            if contacts and at - contacts[-1][1] < FCR_GRACE:
                contacts[-1][1] = at
            else:
                contacts.append([at, at, cid])
        for i, (start, last, cid) in enumerate(contacts):
            if not w.start <= start < w.end:
                continue
            repeated = i + 1 < len(contacts) and contacts[i + 1][0] - last <= FCR_WINDOW
            facts.contacts.append({**conv_attrs(cid), "bucket": bucket_of(start, w.tz, period),
                                   "repeated": repeated})

    for h in handoffs:
        queued = as_utc(h.queued_at)
        target = emergency_min if (h.priority or 0) >= PRIORITY_EMERGENCY else default_min
        wait = (as_utc(h.claimed_at) - queued).total_seconds() / 60 if h.claimed_at else None
        if wait is not None:
            breach = wait > target
            abandoned = False
        else:
            until = as_utc(h.closed_at) if h.closed_at else now
            breach = (until - queued).total_seconds() / 60 > target
            if h.closed_at is not None:
                abandoned = True
            else:
                silent_since = max(queued, last_in.get(h.conversation_id, queued))
                abandoned = (now - silent_since).total_seconds() / 60 >= abandon_min
        facts.handoffs.append({**conv_attrs(h.conversation_id), "department": h.department,
                               "bucket": bucket_of(queued, w.tz, period), "wait": wait, "breach": breach,
                               "abandoned": abandoned})
    for rq in requests:
        requested = as_utc(rq.requested_datetime)
        hours = ((as_utc(rq.updated_datetime) - requested).total_seconds() / 3600
                 if rq.sub_status == "resolved" else None)
        breach = False
        if rq.expected_datetime is not None:
            expected = as_utc(rq.expected_datetime)
            breach = as_utc(rq.updated_datetime) > expected if rq.status == "closed" else now > expected
        a = attrs(rq.conversation_id, rq.resident_id)
        a.update(channel=rq.channel, department=rq.agency_responsible)
        facts.requests.append({**a, "bucket": bucket_of(requested, w.tz, period),
                               "hours": None if hours is None else max(hours, 0.0), "breach": breach})
    handoff_dept = {h.id: h.department for h in handoffs}
    for fb in ratings:
        a = dict(conv_attrs(fb.conversation_id)) if fb.conversation_id else attrs(None)
        if fb.handoff_id in handoff_dept:
            a["department"] = handoff_dept[fb.handoff_id]
        facts.ratings.append({**a, "bucket": bucket_of(fb.created_at, w.tz, period), "rating": int(fb.rating)})
    return facts


def summarize(f: Facts) -> dict[str, Any]:
    """The KPIs of a set of facts (see the module doc)."""
    n = len(f.conversations)
    handed = sum(1 for c in f.conversations if c["handed"])
    contacts = len(f.contacts)
    first = sum(1 for c in f.contacts if not c["repeated"])
    waits = [h["wait"] for h in f.handoffs if h["wait"] is not None]
    hours = [r["hours"] for r in f.requests if r["hours"] is not None]
    ratings = [r["rating"] for r in f.ratings]
    ho_breach = sum(1 for h in f.handoffs if h["breach"])
    rq_breach = sum(1 for r in f.requests if r["breach"])
    abandoned = sum(1 for h in f.handoffs if h["abandoned"])
    return {
        "messages_in": len(f.messages),
        "conversations": n,
        "handed_off_conversations": handed,
        "handoff_rate": _r(handed / n, 4) if n else None,
        "bot_containment": _r((n - handed) / n, 4) if n else None,
        "fcr": {"contacts": contacts, "resolved_first": first, "rate": _r(first / contacts, 4) if contacts else None},
        "handoffs": len(f.handoffs),
        "wait_before_claim_minutes": {"n": len(waits), "mean": _r(_mean(waits)), "p90": _r(p90(waits))},
        "abandoned": abandoned,
        "abandonment_rate": _r(abandoned / len(f.handoffs), 4) if f.handoffs else None,
        "requests": len(f.requests),
        "requests_resolved": len(hours),
        "resolve_hours": {"mean": _r(_mean(hours)), "median": _r(statistics.median(hours)) if hours else None},
        "sla_breaches": {"handoffs": ho_breach, "requests": rq_breach, "total": ho_breach + rq_breach},
        "csat": {"mean": _r(_mean(ratings)), "n": len(ratings)},
    }


_KINDS = ("messages", "conversations", "contacts", "handoffs", "requests", "ratings")


def split(f: Facts, key: str) -> dict[Any, Facts]:
    """The facts per value of ``key``, in one pass."""
    out: dict[Any, Facts] = {}
    for kind in _KINDS:
        for r in getattr(f, kind):
            getattr(out.setdefault(r.get(key), Facts()), kind).append(r)
    return out


def series(f: Facts, w: Window, period: str) -> list[dict[str, Any]]:
    """KPIs per day or week of the window."""
    parts = split(f, "bucket")
    return [{"period": b, **summarize(parts.get(b, Facts()))} for b in buckets(w, period)]


def _values(f: Facts, key: str) -> list[str]:
    seen: Counter[str] = Counter()
    for kind in ("messages", "conversations", "handoffs", "requests", "ratings"):
        for r in getattr(f, kind):
            if r.get(key) is not None:
                seen[r[key]] += 1
    return [v for v, _ in seen.most_common()]


def by_group(f: Facts, key: str) -> list[dict[str, Any]]:
    """KPIs per value of ``key`` (channel, department, lang, age_band), biggest group first."""
    parts = split(f, key)
    return [{"group": v, **summarize(parts[v])} for v in _values(f, key)]


def volume_matrix(f: Facts, w: Window, period: str, key: str) -> dict[str, dict[str, int]]:
    """Inbound messages per group and day/week: ``{group: {bucket: count}}``."""
    out: dict[str, dict[str, int]] = {}
    all_buckets = buckets(w, period)
    for m in f.messages:
        row = out.setdefault(m[key], dict.fromkeys(all_buckets, 0))
        if m["bucket"] in row:
            row[m["bucket"]] += 1
    return dict(sorted(out.items(), key=lambda kv: -sum(kv[1].values())))


def equity(f: Facts, overall: dict[str, Any], flag_ratio: float, min_group: int) -> dict[str, list[dict[str, Any]]]:
    """Per dimension, each group's KPIs with ``flags`` (``waits_longer``, ``handed_off_more``)."""
    base_wait = overall["wait_before_claim_minutes"]["mean"]
    base_rate = overall["handoff_rate"]
    out: dict[str, list[dict[str, Any]]] = {}
    for dim in EQUITY_DIMENSIONS:
        rows = []
        for g in by_group(f, dim):
            flags = []
            judged = g["conversations"] >= min_group
            wait = g["wait_before_claim_minutes"]["mean"]
            if judged and wait is not None and base_wait and wait > base_wait * flag_ratio:
                flags.append("waits_longer")
            if judged and g["handoff_rate"] is not None and base_rate and g["handoff_rate"] > base_rate * flag_ratio:
                flags.append("handed_off_more")
            rows.append({**g, "judged": judged, "flags": flags})
        out[dim] = rows
    return out


# ---------------------------------------------------------------------------- needs

def needs(sessions: sessionmaker[Session], knowledge: Any, w: Window) -> list[dict[str, Any]]:
    """Residents grouped by need, with this window against the previous one (see the module doc)."""
    labels = sorted(set(knowledge.services) | set(knowledge.faq))
    prev = w.previous()
    I = Interaction  # noqa: N806, E741
    now_set: dict[str, set[Any]] = defaultdict(set)
    prev_set: dict[str, set[Any]] = defaultdict(set)
    everyone: dict[str, set[int]] = defaultdict(set)
    with sessions() as s:
        merged = dict(s.execute(select(Resident.id, Resident.merged_into_id)
                                .where(Resident.merged_into_id.is_not(None))).all())
        gone = set(s.scalars(select(Resident.id).where(Resident.deleted_at.is_not(None))))

        def final(rid: int | None) -> int | None:
            seen = 0
            while rid in merged and seen < 20:
                rid, seen = merged[rid], seen + 1
            return rid

        def add(label: str, rid: int | None, cid: int | None, at: datetime, key: Any = None) -> None:
            person = final(rid) or (f"c{cid}" if cid else key)
            at = as_utc(at)
            if w.start <= at < w.end:
                now_set[label].add(person)
            elif prev.start <= at < prev.end:
                prev_set[label].add(person)

        for label, rid, cid, at in s.execute(
                select(I.label, I.resident_id, I.conversation_id, I.created_at)
                .where(I.direction == "in", I.label.in_(labels), I.created_at >= prev.start, I.created_at < w.end)):
            add(label, rid, cid, at)
        for code, rid, cid, at, sid in s.execute(
                select(ServiceRequest.service_code, ServiceRequest.resident_id, ServiceRequest.conversation_id,
                       ServiceRequest.requested_datetime, ServiceRequest.service_request_id)
                .where(ServiceRequest.requested_datetime >= prev.start, ServiceRequest.requested_datetime < w.end)):
            add(code, rid, cid, at, key=f"r{sid}")
        for label, rid in s.execute(select(I.label, I.resident_id).where(
                I.direction == "in", I.label.in_(labels), I.resident_id.is_not(None)).distinct()):
            everyone[label].add(final(rid))  # type: ignore[arg-type]
        for code, rid in s.execute(select(ServiceRequest.service_code, ServiceRequest.resident_id)
                                   .where(ServiceRequest.resident_id.is_not(None)).distinct()):
            everyone[code].add(final(rid))  # type: ignore[arg-type]
        for rid, tags in s.execute(select(Resident.id, Resident.needs_tags).where(
                Resident.deleted_at.is_(None), Resident.merged_into_id.is_(None))):
            for tag in tags or []:
                everyone[str(tag)].add(rid)
    rows = []
    for need in set(everyone) | set(now_set) | set(prev_set):
        cur, before = len(now_set.get(need, ())), len(prev_set.get(need, ()))
        residents = len({r for r in everyone.get(need, ()) if r not in gone})
        rows.append({"need": need, "name": knowledge.label_name(need, "ko"), "residents": residents,
                     "current": cur, "previous": before,
                     "change_pct": round((cur - before) / before * 100, 1) if before else None,
                     "rising": cur > before})
    rows.sort(key=lambda r: (-r["current"], -r["residents"], r["need"]))
    return rows


def rising(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Needs raised by more residents than in the previous window, biggest growth first (new ones first)."""
    up = [r for r in rows if r["rising"]]
    return sorted(up, key=lambda r: (r["change_pct"] is not None, -(r["change_pct"] or 0), -r["current"]))


# ---------------------------------------------------------------------------- unrecognised → Rasa NLU

def unrecognised(sessions: sessionmaker[Session], w: Window, limit: int = 1000) -> list[dict[str, Any]]:
    """Inbound messages of the window the NLU did not understand: ``conv.out_of_scope``, no label,
    or confidence below :data:`LOW_CONFIDENCE`; newest first, text masked."""
    I = Interaction  # noqa: N806, E741
    with sessions() as s:
        rows = s.execute(
            select(I.id, I.created_at, I.channel, I.label, I.confidence, I.text)
            .where(I.direction == "in", I.created_at >= w.start, I.created_at < w.end,
                   or_(I.label == OUT_OF_SCOPE, I.label.is_(None), I.confidence < LOW_CONFIDENCE))
            .order_by(I.id.desc()).limit(limit)).all()
    return [{"id": r.id, "created_at": as_utc(r.created_at).isoformat(timespec="seconds"), "channel": r.channel,
             "label": r.label or OUT_OF_SCOPE, "confidence": None if r.confidence is None else round(r.confidence, 3),
             "text": mask_pii(r.text or "")} for r in rows]


_WS = re.compile(r"\s+")


def nlu_yaml(rows: Iterable[dict[str, Any]]) -> str:
    """Rasa 3.x ``nlu`` training data: one ``intent`` block per predicted label, texts (masked) as
    examples, to be corrected by a person and added to ``nlu_data/nlu``."""
    grouped: dict[str, dict[str, None]] = {}
    for r in rows:
        text = _WS.sub(" ", mask_pii(r["text"] or "")).strip()
        if text:
            grouped.setdefault(r["label"] or OUT_OF_SCOPE, {})[text] = None
    lines = ['version: "3.1"', "nlu:"]
    for label in sorted(grouped):
        lines.append(f"- intent: {label}")
        lines.append("  examples: |")
        lines.extend(f"    - {t}" for t in grouped[label])
    if len(lines) == 2:
        lines[-1] = "nlu: []"
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- everything

def report(sessions: sessionmaker[Session], knowledge: Any, w: Window, period: str = "day",
           group: str = "channel", now: datetime | None = None) -> dict[str, Any]:
    """All dashboard analytics for the window, as JSON-ready data."""
    eq = knowledge.municipality.equity
    ratio, min_group = eq.flag_ratio, eq.min_group
    facts = load_facts(sessions, knowledge, w, period, now)
    overall = summarize(facts)
    need_rows = needs(sessions, knowledge, w)
    return {
        "period": period,
        "group": group,
        "overall": overall,
        "series": series(facts, w, period),
        "groups": by_group(facts, group),
        "volume_by_group": volume_matrix(facts, w, period, group),
        "needs": need_rows,
        "rising_needs": rising(need_rows),
        "previous_window": {"from": w.previous().start_day.isoformat(), "to": w.previous().end_day.isoformat()},
        "equity": {"flag_ratio": ratio, "min_group": min_group, "groups": equity(facts, overall, ratio, min_group)},
    }
