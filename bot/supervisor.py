"""Supervisor dashboard: KPIs over a date range, PCRM analytics and a searchable interaction log.

``GET /supervisor`` (HTML), ``GET /supervisor/kpis.json`` (the same figures as JSON, the analytics
of :mod:`bot.analytics` under ``analytics``), ``GET /supervisor/interactions.csv`` (the filtered log
as CSV), ``GET /supervisor/unrecognised.yml`` (not-understood messages as Rasa NLU training data)
and ``GET /supervisor/conversations/{id}`` (one whole transcript). Supervisors and admins only.

Who: the console's session (``bot.console.auth.current_user``; its cookie has path ``/``, so a
supervisor who logged in at ``/console/login`` opens this page in the browser). HTTP Basic
(for scripts fetching the CSV) only from the addresses in ``PCRM_SUPERVISOR_BASIC_ALLOW`` (none by
default), throttled and audited like the console login, on the bounded argon2 pool: before, every
anonymous request anywhere ran argon2, and 48 concurrent ones pushed ``/healthz`` to 10.8 s.
Anonymous → 401 (with ``WWW-Authenticate: Basic``; a browser asking for HTML is sent to the
console login instead), an agent → 403.

Range: ``from`` and ``to`` are dates (``YYYY-MM-DD``) in municipality time, both inclusive;
default the last 7 days, at most 366 days. ``period`` (``day``/``week``) and ``group``
(``channel``/``department``) choose how the analytics are split.

KPIs (everything in the range):

* volume by channel: inbound messages per channel;
* conversations: conversations with at least one inbound message; hand-off rate: share of them
  with a hand-off queued in the range; bot containment: the rest (1 - hand-off rate);
* wait before claim: ``claimed_at - queued_at`` of hand-offs queued in the range and claimed
  (mean and nearest-rank p90, minutes), plus how many are still waiting;
* CSAT: mean of the 1–5 feedback ratings given in the range, and their number;
* top labels: the 10 most frequent NLU labels of inbound messages;
* low-confidence messages: the 20 latest inbound messages with confidence < 0.45.

Interaction log: filters ``channel``, ``label``, ``department`` (labels of that catalog
department), ``direction`` (in/out), ``handled`` (``bot``/``agent``), ``lang``, ``resident`` (id),
``q`` (text contains, case-insensitive ``ILIKE``: a pg_trgm GIN index serves it on PostgreSQL),
newest first (``created_at``, then id), 50 a page; ``before_id`` continues after the last row shown
(keyset pagination: stable while new messages arrive). Message text is shown and exported with
phone and resident registration numbers masked (``crm_store.masking.mask_pii``).
"""

from __future__ import annotations

import base64
import binascii
import csv
import html
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from sqlalchemy import func, literal_column, or_, select
from sqlalchemy.orm import Session, sessionmaker

from bot import analytics, charts
from crm_store.masking import mask_pii
from crm_store.models import Conversation, Feedback, Handoff, Interaction, RequestUpdate
from crm_store.timeutil import as_utc

router = APIRouter(prefix="/supervisor", tags=["supervisor"])

ALLOWED_ROLES = ("supervisor", "admin")
LOW_CONFIDENCE = 0.45
PAGE_SIZE = 50
CSV_MAX_ROWS = 100_000
#: First characters a spreadsheet may take for a formula (a tab or CR is skipped before one).
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
MAX_RANGE_DAYS = 366
DEFAULT_DAYS = 7


class Denied(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Viewer:
    username: str
    role: str


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep or len(username) > 64 or len(password) > 256:
        return None
    return username, password


def basic_allowed(request: Request) -> bool:
    """Whether the client's address is in ``PCRM_SUPERVISOR_BASIC_ALLOW`` (IPs or CIDRs)."""
    import ipaddress

    from bot.throttle import client_ip

    allow = getattr(request.app.state.settings, "pcrm_supervisor_basic_allow", "") or ""
    try:
        ip = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return False
    for entry in allow.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _basic_login(request: Request, creds: tuple[str, str]) -> Any:
    """The agent of Basic credentials, throttled (429) and audited like the console login."""
    from bot import throttle
    from bot.console.auth import authenticate
    from bot.console.passwords import HashingBusy, no_wait
    from bot.ratelimit import RateLimited
    from crm_store.models import audit

    sessions: sessionmaker[Session] = request.app.state.sessions
    ip, lim = throttle.client_ip(request), throttle.limiter(request.app)
    try:
        throttle.login_blocked(lim, creds[0], ip)
        with no_wait():  # on the shared thread pool: never wait for a hashing slot (503 instead)
            agent = authenticate(sessions, *creds)
    except RateLimited as exc:
        raise Denied(429, f"too many failed logins; retry after {exc.retry_after}s") from exc
    except HashingBusy as exc:
        raise Denied(503, "busy; try again shortly") from exc
    if agent is None:
        throttle.login_failed(lim, creds[0], ip)
        with sessions.begin() as s:
            s.add(audit(creds[0][:64] or "-", "supervisor.basic_failed", f"client:{ip}"))
    return agent


def viewer(request: Request) -> Viewer:
    """The supervisor or admin making the request; :class:`Denied` 401 (nobody) or 403 (an agent)."""
    from bot.console.auth import current_user

    user = current_user(request)
    if user is not None:
        who = Viewer(user.username, user.role)
    else:
        creds = _basic_credentials(request) if basic_allowed(request) else None
        agent = _basic_login(request, creds) if creds else None
        if agent is None:
            raise Denied(401, "login required")
        who = Viewer(agent.username, agent.role)
    if who.role not in ALLOWED_ROLES:
        raise Denied(403, "supervisors and admins only")
    return who


def _denied(err: Denied) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="pcrm supervisor", charset="UTF-8"'} if err.status == 401 else {}
    if err.status in (429, 503):
        headers = {"Retry-After": "60" if err.status == 429 else "5"}
    return JSONResponse({"detail": err.detail}, status_code=err.status, headers=headers)


def _denied_page(request: Request, err: Denied) -> Response:
    """Like :func:`_denied`, but a browser without credentials is sent to the console login."""
    if err.status == 401 and "text/html" in request.headers.get("accept", "") \
            and "authorization" not in request.headers:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?{urlencode({'next': target})}", status_code=303)
    return _denied(err)


# ---------------------------------------------------------------------------- parameters

def _tz(request: Request) -> ZoneInfo:
    config = request.app.state.engine.knowledge.config
    try:
        return ZoneInfo(str((config.get("municipality") or {}).get("timezone") or "Asia/Seoul"))
    except Exception:  # noqa: BLE001
        return ZoneInfo("Asia/Seoul")


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


# ---------------------------------------------------------------------------- figures

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
        "low_confidence": [_row(i) for i in low],
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
    page = [_row(r) for r in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


def _row(i: Interaction) -> dict[str, Any]:
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


def _csv_lines(sessions: sessionmaker[Session], f: Filters) -> Iterator[str]:
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


# ---------------------------------------------------------------------------- routes

def _analytics(request: Request, f: Filters) -> dict[str, Any]:
    return analytics.report(request.app.state.sessions, request.app.state.engine.knowledge, window(request, f),
                            period=f.period, group=f.group)


@router.get("/supervisor.css", include_in_schema=False)
def stylesheet() -> Response:
    """The pages' CSS as a file: the Content-Security-Policy allows no inline style."""
    return Response(_CSS, media_type="text/css; charset=utf-8", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/kpis.json", summary="Supervisor KPIs and PCRM analytics over a date range")
def kpis_json(request: Request) -> Response:
    try:
        viewer(request)
        f = parse_filters(request)
    except Denied as err:
        return _denied(err)
    return JSONResponse({**kpis(request.app.state.sessions, f), "analytics": _analytics(request, f)})


@router.get("/unrecognised.yml", summary="Not-understood messages as Rasa NLU training data (PII masked)")
def unrecognised_yml(request: Request) -> Response:
    try:
        who = viewer(request)
        f = parse_filters(request)
    except Denied as err:
        return _denied(err)
    from crm_store.models import audit

    rows = analytics.unrecognised(request.app.state.sessions, window(request, f), limit=5000)
    with request.app.state.sessions.begin() as s:
        s.add(audit(who.username, "supervisor.export_unrecognised", f.query()[:255]))
    name = f"unrecognised-{f.start_day.isoformat()}-{f.end_day.isoformat()}.yml"
    return PlainTextResponse(analytics.nlu_yaml(rows), media_type="application/x-yaml; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/conversations/{conversation_id}", response_class=HTMLResponse, summary="One conversation's transcript")
def conversation_page(request: Request, conversation_id: int) -> Response:
    try:
        viewer(request)
    except Denied as err:
        return _denied_page(request, err)
    from crm_store.interactions import transcript

    with request.app.state.sessions() as s:
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            return JSONResponse({"detail": "no such conversation"}, status_code=404)
        rows = [_row(i) for i in transcript(s, conversation_id)]
        channel = conv.channel
    return HTMLResponse(render_transcript(conversation_id, channel, rows))


@router.get("/interactions.json", summary="Interaction log page (keyset pagination with before_id)")
def interactions_json(request: Request) -> Response:
    try:
        viewer(request)
        f = parse_filters(request)
    except Denied as err:
        return _denied(err)
    page, next_before = search(request.app.state.sessions, f)
    return JSONResponse({"items": page, "next_before_id": next_before})


@router.get("/interactions.csv", summary="Interaction log as CSV (personal numbers masked)")
def interactions_csv(request: Request) -> Response:
    try:
        who = viewer(request)
        f = parse_filters(request)
    except Denied as err:
        return _denied(err)
    from crm_store.models import audit

    with request.app.state.sessions.begin() as s:
        s.add(audit(who.username, "supervisor.export_interactions", f.query()[:255]))
    name = f"interactions-{f.start_day.isoformat()}-{f.end_day.isoformat()}.csv"
    return StreamingResponse(_csv_lines(request.app.state.sessions, f), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("", response_class=HTMLResponse, summary="Supervisor dashboard")
def dashboard(request: Request) -> Response:
    try:
        who = viewer(request)
        f = parse_filters(request)
    except Denied as err:
        return _denied_page(request, err)
    sessions = request.app.state.sessions
    knowledge = request.app.state.engine.knowledge
    k = kpis(sessions, f)
    k["analytics"] = _analytics(request, f)
    k["unrecognised"] = analytics.unrecognised(sessions, window(request, f), limit=20)
    return HTMLResponse(render(who, f, k, *search(sessions, f), knowledge=knowledge))


# ---------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,"Noto Sans KR",sans-serif;margin:0;color:#1a1a1a;background:#fff;line-height:1.45}
main{max-width:80rem;margin:0 auto;padding:1rem 1.5rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.6rem}
a{color:#0b4fc2}
.cards{display:flex;flex-wrap:wrap;gap:.75rem;padding:0;list-style:none}
.cards li{border:1px solid #6b6b6b;border-radius:.4rem;padding:.5rem .8rem;min-width:9rem}
.cards strong{display:block;font-size:1.3rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
caption{text-align:left;font-weight:700;padding:.3rem 0}
th,td{border:1px solid #8a8a8a;padding:.3rem .5rem;text-align:left;vertical-align:top}
thead th{background:#eef1f5}
form{display:flex;flex-wrap:wrap;gap:.6rem;align-items:end}
label{display:flex;flex-direction:column;font-size:.9rem}
input,select,button{font:inherit;padding:.25rem .4rem}
header nav{padding:.5rem 1.5rem;border-bottom:1px solid #8a8a8a}
.scroll{overflow-x:auto}
figure.chart{margin:.8rem 0}figure.chart svg{max-width:100%;height:auto}
figcaption{font-size:.9rem;color:#333}
"""


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def _num(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}"


_GROUP_NAMES = {"channel": "채널 / Channel", "department": "부서 / Department", "lang": "언어 / Language",
                "age_band": "연령대 / Age band"}
_FLAG_NAMES = {"waits_longer": "더 오래 기다림 / waits longer", "handed_off_more": "상담원 연결 많음 / handed off more"}
_KPI_HEAD = ("받은 메시지 / Msgs in", "대화 / Convs", "연결률 / Hand-off", "봇 해결 / Containment",
             "첫 접촉 해결 / FCR", "대기 평균 / Wait mean (min)", "대기 p90 / Wait p90 (min)", "포기 / Abandoned",
             "민원 / Requests", "처리 시간 / Resolve (h)", "SLA 위반 / SLA breaches", "만족도 / CSAT")


def _kpi_cells(m: dict[str, Any]) -> list[str]:
    wait = m["wait_before_claim_minutes"]
    return [str(m["messages_in"]), str(m["conversations"]), _pct(m["handoff_rate"]), _pct(m["bot_containment"]),
            _pct(m["fcr"]["rate"]), _num(wait["mean"]), _num(wait["p90"]),
            f"{m['abandoned']} ({_pct(m['abandonment_rate'])})", str(m["requests"]),
            _num(m["resolve_hours"]["mean"]), str(m["sla_breaches"]["total"]),
            f"{_num(m['csat']['mean'])} (n={m['csat']['n']})"]


def _table(table_id: str, caption: str, head: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    e = html.escape
    th = "".join(f'<th scope="col">{e(h)}</th>' for h in head)
    body = "".join("<tr>" + f'<th scope="row">{e(r[0])}</th>' + "".join(f"<td>{e(c)}</td>" for c in r[1:]) + "</tr>"
                   for r in rows)
    return (f'<div class="scroll"><table id="{table_id}"><caption>{e(caption)}</caption><thead><tr>{th}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def render(who: Viewer, f: Filters, k: dict[str, Any], page: list[dict[str, Any]], next_before: int | None,
           knowledge: Any = None) -> str:
    e = html.escape
    a = k["analytics"]
    o = a["overall"]
    wait = k["wait_before_claim_minutes"]
    group_name = _GROUP_NAMES[f.group]
    cards = [
        ("받은 메시지 / Messages in", str(k["messages_in"])),
        ("대화 / Conversations", str(k["conversations"])),
        ("봇 자체 해결률 / Bot containment", _pct(k["bot_containment"])),
        ("상담원 연결률 / Hand-off rate", _pct(k["handoff_rate"])),
        ("첫 접촉 해결률 / First-contact resolution", _pct(o["fcr"]["rate"])),
        ("연결 대기 평균 / Mean wait (min)", _num(wait["mean"])),
        ("연결 대기 p90 / p90 wait (min)", _num(wait["p90"])),
        ("대기 중 / Waiting now", str(k["handoffs_waiting"])),
        ("포기 / Abandoned", f"{o['abandoned']} ({_pct(o['abandonment_rate'])})"),
        ("SLA 위반 / SLA breaches", f"{o['sla_breaches']['total']} (연결 {o['sla_breaches']['handoffs']} · "
                                    f"민원 {o['sla_breaches']['requests']})"),
        ("민원 처리 평균 / Mean time to resolve (h)", _num(o["resolve_hours"]["mean"])),
        ("재민원(미해결 응답) 비율 / Reopen rate", f"{_pct(k['reopen_rate'])} ({k['requests_reopened']}/"
                                                   f"{k['requests_resolved']})"),
        ("만족도 / CSAT", f"{_num(k['csat']['mean'])} (n={k['csat']['n']})"),
    ]
    cards_html = "".join(f'<li data-kpi="{i}">{e(t)}<strong>{e(v)}</strong></li>' for i, (t, v) in enumerate(cards))
    volume = "".join(f'<tr><th scope="row">{e(ch)}</th><td>{n}</td></tr>' for ch, n in k["volume_by_channel"].items())
    labels = "".join(f'<tr><th scope="row">{e(x["label"])}</th><td>{x["count"]}</td></tr>' for x in k["top_labels"])

    # trend and groups
    periods = [r["period"] for r in a["series"]]
    trend = charts.line_chart(
        "기간별 추이 / Trend per " + ("day" if f.period == "day" else "week"), periods,
        {"받은 메시지 / messages in": [r["messages_in"] for r in a["series"]],
         "상담원 연결 / hand-offs": [r["handoffs"] for r in a["series"]],
         "SLA 위반 / SLA breaches": [r["sla_breaches"]["total"] for r in a["series"]]})
    series_table = _table("series-table", "기간별 지표 / KPIs per " + f.period, ("기간 / Period", *_KPI_HEAD),
                          [[r["period"], *_kpi_cells(r)] for r in a["series"]])
    group_lines = {g: list(vals.values()) for g, vals in list(a["volume_by_group"].items())[:6]}
    group_trend = charts.line_chart(f"{group_name}별 받은 메시지 / Messages in per {f.group}", periods, group_lines)
    group_bars = charts.bar_chart(
        f"{group_name}별 상담원 연결률 / Hand-off rate per {f.group} (%)",
        [(g["group"], None if g["handoff_rate"] is None else round(g["handoff_rate"] * 100, 1)) for g in a["groups"]],
        unit="%")
    groups_table = _table("groups-table", f"{group_name}별 지표 / KPIs per {f.group}", (group_name, *_KPI_HEAD),
                          [[g["group"], *_kpi_cells(g)] for g in a["groups"]])
    label_bars = charts.bar_chart("많이 나온 라벨 / Top labels", [(x["label"], x["count"]) for x in k["top_labels"]])

    # needs
    rising = a["rising_needs"][:10]
    need_bars = charts.bar_chart("늘어난 필요 / Rising needs (residents this period)",
                                 [(f"{r['name']}", r["current"]) for r in rising])
    needs_table = _table(
        "needs-table", f"필요별 주민 / Residents by need (이전 기간 / previous: {a['previous_window']['from']} – "
                 f"{a['previous_window']['to']})",
        ("필요 / Need", "코드 / Code", "주민 (전체) / Residents (all time)", "이번 기간 / This period",
         "이전 기간 / Previous", "변화 / Change", "증가 / Rising"),
        [[r["name"], r["need"], str(r["residents"]), str(r["current"]), str(r["previous"]),
          "신규 / new" if r["change_pct"] is None and r["current"] else
          ("–" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%"),
          "▲ 증가 / rising" if r["rising"] else ""] for r in a["needs"]])

    # equity
    eq = a["equity"]
    eq_parts = []
    for dim, rows in eq["groups"].items():
        name = _GROUP_NAMES[dim]
        flagged = [r["group"] for r in rows if r["flags"]]
        eq_parts.append(charts.bar_chart(
            f"{name}별 연결 대기 평균 / Mean wait before claim per {dim} (min)",
            [(r["group"], r["wait_before_claim_minutes"]["mean"]) for r in rows], unit="", flagged=flagged))
        eq_parts.append(_table(
            f"equity-{dim}-table", f"{name}별 형평성 / Equity by {dim}",
            (name, "대화 / Convs", "연결률 / Hand-off", "대기 평균 / Wait mean (min)", "대기 p90 / Wait p90 (min)",
             "처리 시간 / Resolve (h)", "만족도 / CSAT", "표시 / Flags"),
            [[r["group"], str(r["conversations"]), _pct(r["handoff_rate"]),
              _num(r["wait_before_claim_minutes"]["mean"]), _num(r["wait_before_claim_minutes"]["p90"]),
              _num(r["resolve_hours"]["mean"]), f"{_num(r['csat']['mean'])} (n={r['csat']['n']})",
              ", ".join(_FLAG_NAMES[x] for x in r["flags"]) or ("" if r["judged"] else "표본 부족 / too few")]
             for r in rows]))

    def rows(items: list[dict[str, Any]]) -> str:
        return "".join(
            f'<tr><td>{r["id"]}</td><td>{e(r["created_at"])}</td><td>{e(r["channel"])}</td>'
            f'<td>{e(r["direction"])}</td><td>{e(r["label"] or "")}</td><td>{_num(r["confidence"])}</td>'
            f'<td>{e(r["handled_by"] or "")}</td><td><a href="/supervisor/conversations/{r["conversation_id"]}">'
            f'{r["conversation_id"]}</a></td><td>{e(r["text"])}</td></tr>' for r in items)

    head = ('<thead><tr><th scope="col">id</th><th scope="col">시각 (UTC)</th><th scope="col">채널</th>'
            '<th scope="col">방향</th><th scope="col">라벨</th><th scope="col">신뢰도</th>'
            '<th scope="col">처리</th><th scope="col">대화</th><th scope="col">내용 (마스킹)</th></tr></thead>')
    unrec = "".join(
        f'<tr><td>{r["id"]}</td><td>{e(r["created_at"])}</td><td>{e(r["channel"])}</td><td>{e(r["label"])}</td>'
        f'<td>{_num(r["confidence"])}</td><td>{e(r["text"])}</td></tr>' for r in k["unrecognised"])
    more = (f'<p><a href="/supervisor?{e(f.query(before_id=next_before))}#log">다음 / Older</a></p>'
            if next_before is not None else "")

    def options(current: str | None, choices: tuple[tuple[str, str], ...]) -> str:
        return "".join(f'<option value="{v}"{" selected" if (current or "") == v else ""}>{t}</option>'
                       for v, t in choices)

    dir_opts = options(f.direction, (("", "전체 / all"), ("in", "in"), ("out", "out")))
    handled_opts = options(f.handled, (("", "전체 / all"), ("bot", "봇 / bot"), ("agent", "상담원 / agent")))
    period_opts = options(f.period, (("day", "일별 / by day"), ("week", "주별 / by week")))
    group_opts = options(f.group, (("channel", "채널별 / by channel"), ("department", "부서별 / by department")))
    return f"""<!doctype html>
<html lang="ko">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>상황판 · Supervisor dashboard</title><link rel="stylesheet" href="/supervisor/supervisor.css"></head>
<body><header><nav aria-label="바로가기 / Sections"><a href="#kpis">지표</a> · <a href="#trend">추이</a> ·
<a href="#groups">{e(group_name)}</a> · <a href="#needs">필요</a> · <a href="#equity">형평성</a> ·
<a href="#unrecognised">미인식</a> · <a href="#log">기록</a> · <a href="/console">상담 콘솔 / Console</a></nav></header>
<main>
<h1>상황판 · Supervisor dashboard</h1>
<p>{e(who.username)} ({e(who.role)}) · {e(f.start_day.isoformat())} – {e(f.end_day.isoformat())}</p>
<form method="get" action="/supervisor" aria-label="기간과 필터 / Range and filters">
<label>시작 / From<input type="date" name="from" value="{e(f.start_day.isoformat())}"></label>
<label>끝 / To<input type="date" name="to" value="{e(f.end_day.isoformat())}"></label>
<label>단위 / Period<select name="period">{period_opts}</select></label>
<label>나누기 / Group by<select name="group">{group_opts}</select></label>
<label>채널 / Channel<input name="channel" value="{e(f.channel or "")}"></label>
<label>부서 / Department<input name="department" value="{e(f.department or "")}"></label>
<label>라벨 / Label<input name="label" value="{e(f.label or "")}"></label>
<label>방향 / Direction<select name="direction">{dir_opts}</select></label>
<label>처리 / Handled by<select name="handled">{handled_opts}</select></label>
<label>언어 / Language<input name="lang" value="{e(f.lang or "")}" size="4"></label>
<label>내용 / Text contains<input name="q" value="{e(f.q or "")}"></label>
<button type="submit">보기 / Show</button>
</form>
<h2 id="kpis">지표 / KPIs</h2>
<ul class="cards">{cards_html}</ul>
<h2 id="trend">추이 / Trend</h2>
{trend}
{series_table}
<h2 id="groups">{e(group_name)}별 / Per {e(f.group)}</h2>
{group_trend}
{group_bars}
{groups_table}
<table><caption>채널별 받은 메시지 / Messages in by channel</caption>
<thead><tr><th scope="col">채널</th><th scope="col">건수</th></tr></thead><tbody>{volume}</tbody></table>
{label_bars}
<table><caption>많이 나온 라벨 / Top labels</caption>
<thead><tr><th scope="col">라벨</th><th scope="col">건수</th></tr></thead><tbody>{labels}</tbody></table>
<h2 id="needs">주민의 필요 / Residents' needs</h2>
<p>주민을 가치가 아니라 필요(문의·민원 이력과 필요 태그)로 묶습니다. /
Residents are grouped by what they need (their history and needs tags), never by value.</p>
{need_bars}
{needs_table}
<h2 id="equity">형평성 / Equity</h2>
<p>전체보다 {eq["flag_ratio"]:g}배 넘게 오래 기다리거나 상담원 연결이 많은 집단을 표시합니다
(대화 {eq["min_group"]}건 이상). /
Groups (at least {eq["min_group"]} conversations) waiting or handed off more than {eq["flag_ratio"]:g}× the overall
are flagged. 전체 / overall: 대기 평균 {_num(o["wait_before_claim_minutes"]["mean"])} 분,
연결률 {_pct(o["handoff_rate"])}.</p>
{"".join(eq_parts)}
<h2 id="unrecognised">이해하지 못한 메시지 / Unrecognised and low-confidence messages</h2>
<p><a href="/supervisor/unrecognised.yml?{e(f.query())}">Rasa NLU 학습 자료로 내보내기 / Export as Rasa NLU YAML</a></p>
<div class="scroll"><table id="unrecognised-table"><caption>신뢰도 {LOW_CONFIDENCE} 미만 또는 범위 밖 / Confidence under
{LOW_CONFIDENCE} or out of scope (최근 20건 / latest 20)</caption>
<thead><tr><th scope="col">id</th><th scope="col">시각 (UTC)</th><th scope="col">채널</th><th scope="col">예측 라벨</th>
<th scope="col">신뢰도</th><th scope="col">내용 (마스킹)</th></tr></thead><tbody>{unrec}</tbody></table></div>
<table><caption>신뢰도 {LOW_CONFIDENCE} 미만 메시지 / Low-confidence messages</caption>{head}
<tbody>{rows(k["low_confidence"])}</tbody></table>
<h2 id="log">대화 기록 / Interaction log</h2>
<p><a href="/supervisor/interactions.csv?{e(f.query())}">CSV 내보내기 / Export CSV</a></p>
<div class="scroll"><table><caption>대화 기록 (최신순) / Interactions, newest first</caption>{head}
<tbody>{rows(page)}</tbody></table></div>
{more}
</main></body></html>
"""


def render_transcript(conversation_id: int, channel: str, rows: list[dict[str, Any]]) -> str:
    e = html.escape
    body = "".join(
        f'<tr><td>{e(r["created_at"])}</td><td>'
        f'{"주민 / resident" if r["direction"] == "in" else e(r["handled_by"] or "bot")}</td>'
        f'<td>{e(r["label"] or "")}</td><td>{e(r["text"])}</td></tr>' for r in rows)
    return f"""<!doctype html>
<html lang="ko">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>대화 {conversation_id} · Transcript</title><link rel="stylesheet" href="/supervisor/supervisor.css"></head>
<body><main>
<h1>대화 {conversation_id} 전체 기록 / Transcript ({e(channel)})</h1>
<p><a href="/supervisor">상황판으로 / Back to the dashboard</a></p>
<table><caption>{len(rows)}개 메시지, 오래된 순 (개인정보 마스킹) / messages, oldest first (masked)</caption>
<thead><tr><th scope="col">시각 (UTC)</th><th scope="col">보낸 쪽 / From</th><th scope="col">라벨</th>
<th scope="col">내용 / Text</th></tr></thead><tbody>{body}</tbody></table>
</main></body></html>
"""
