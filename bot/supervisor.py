"""Supervisor dashboard: KPIs over a date range and a searchable interaction log.

``GET /supervisor`` (HTML), ``GET /supervisor/kpis.json`` (the same figures as JSON) and
``GET /supervisor/interactions.csv`` (the filtered log as CSV). Supervisors and admins only.

Who: the console's session (``bot.console.auth.current_user``) when its cookie reaches this
path, otherwise HTTP Basic checked against the ``agents`` table with the console's argon2
``authenticate``. The console cookie is scoped to ``/console``, so in a browser it is HTTP Basic
that usually applies here. Anonymous → 401 (with ``WWW-Authenticate: Basic``), an agent → 403.

Range: ``from`` and ``to`` are dates (``YYYY-MM-DD``) in municipality time, both inclusive;
default the last 7 days, at most 366 days.

KPIs (everything in the range):

* volume by channel: inbound messages per channel;
* conversations: conversations with at least one inbound message; hand-off rate: share of them
  with a hand-off queued in the range; bot containment: the rest (1 - hand-off rate);
* wait before claim: ``claimed_at - queued_at`` of hand-offs queued in the range and claimed
  (mean and nearest-rank p90, minutes), plus how many are still waiting;
* CSAT: mean of the 1–5 feedback ratings given in the range, and their number;
* top labels: the 10 most frequent NLU labels of inbound messages;
* low-confidence messages: the 20 latest inbound messages with confidence < 0.45.

Interaction log: filters ``channel``, ``label``, ``direction`` (in/out), ``q`` (text contains,
case-insensitive), newest first, 50 a page; ``before_id`` continues after the last row shown
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
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_store.masking import mask_pii
from crm_store.models import Feedback, Handoff, Interaction
from crm_store.timeutil import as_utc

router = APIRouter(prefix="/supervisor", tags=["supervisor"])

ALLOWED_ROLES = ("supervisor", "admin")
LOW_CONFIDENCE = 0.45
PAGE_SIZE = 50
CSV_MAX_ROWS = 100_000
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


def viewer(request: Request) -> Viewer:
    """The supervisor or admin making the request; :class:`Denied` 401 (nobody) or 403 (an agent)."""
    from bot.console.auth import authenticate, current_user

    sessions: sessionmaker[Session] = request.app.state.sessions
    user = current_user(request)
    if user is not None:
        who = Viewer(user.username, user.role)
    else:
        creds = _basic_credentials(request)
        agent = authenticate(sessions, *creds) if creds else None
        if agent is None:
            raise Denied(401, "login required")
        who = Viewer(agent.username, agent.role)
    if who.role not in ALLOWED_ROLES:
        raise Denied(403, "supervisors and admins only")
    return who


def _denied(err: Denied) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="pcrm supervisor", charset="UTF-8"'} if err.status == 401 else {}
    return JSONResponse({"detail": err.detail}, status_code=err.status, headers=headers)


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

    def query(self, **override: Any) -> str:
        params: dict[str, Any] = {"from": self.start_day.isoformat(), "to": self.end_day.isoformat(),
                                  "channel": self.channel, "label": self.label, "direction": self.direction,
                                  "q": self.q}
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

    def short(name: str, limit: int = 200) -> str | None:
        value = (q.get(name) or "").strip()
        return value[:limit] or None

    return Filters(start_day, end_day, start, end, channel=short("channel", 32), label=short("label", 64),
                   direction=direction, q=short("q"), before_id=int(before) if before else None)


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
    }


def _search_stmt(f: Filters) -> Any:
    stmt = select(Interaction).where(Interaction.created_at >= f.start, Interaction.created_at < f.end)
    if f.channel:
        stmt = stmt.where(Interaction.channel == f.channel)
    if f.label:
        stmt = stmt.where(Interaction.label == f.label)
    if f.direction:
        stmt = stmt.where(Interaction.direction == f.direction)
    if f.q:
        stmt = stmt.where(func.lower(Interaction.text).contains(f.q.lower(), autoescape=True))
    return stmt.order_by(Interaction.id.desc())


def search(
    sessions: sessionmaker[Session], f: Filters, limit: int = PAGE_SIZE
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the log (newest first) and the ``before_id`` of the next page (``None`` at the end)."""
    stmt = _search_stmt(f)
    if f.before_id is not None:
        stmt = stmt.where(Interaction.id < f.before_id)
    with sessions() as s:
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
            if text[:1] in ("=", "+", "-", "@"):
                text = "'" + text  # no formula injection in spreadsheets
            writer.writerow([*(row[k] for k in CSV_FIELDS[:-1]), text])
        sent += len(page)
        yield buf.getvalue()
        if before is None:
            break


# ---------------------------------------------------------------------------- routes

@router.get("/kpis.json", summary="Supervisor KPIs over a date range")
def kpis_json(request: Request) -> Response:
    try:
        viewer(request)
        f = parse_filters(request)
    except Denied as err:
        return _denied(err)
    return JSONResponse(kpis(request.app.state.sessions, f))


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
        return _denied(err)
    sessions = request.app.state.sessions
    return HTMLResponse(render(who, f, kpis(sessions, f), *search(sessions, f)))


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
"""


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def _num(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}"


def render(who: Viewer, f: Filters, k: dict[str, Any], page: list[dict[str, Any]], next_before: int | None) -> str:
    e = html.escape
    wait = k["wait_before_claim_minutes"]
    cards = [
        ("받은 메시지 / Messages in", str(k["messages_in"])),
        ("대화 / Conversations", str(k["conversations"])),
        ("봇 자체 해결률 / Bot containment", _pct(k["bot_containment"])),
        ("상담원 연결률 / Hand-off rate", _pct(k["handoff_rate"])),
        ("연결 대기 평균 / Mean wait (min)", _num(wait["mean"])),
        ("연결 대기 p90 / p90 wait (min)", _num(wait["p90"])),
        ("대기 중 / Waiting now", str(k["handoffs_waiting"])),
        ("만족도 / CSAT", f"{_num(k['csat']['mean'])} (n={k['csat']['n']})"),
    ]
    cards_html = "".join(f"<li>{e(t)}<strong>{e(v)}</strong></li>" for t, v in cards)
    volume = "".join(f'<tr><th scope="row">{e(ch)}</th><td>{n}</td></tr>' for ch, n in k["volume_by_channel"].items())
    labels = "".join(f'<tr><th scope="row">{e(x["label"])}</th><td>{x["count"]}</td></tr>' for x in k["top_labels"])

    def rows(items: list[dict[str, Any]]) -> str:
        return "".join(
            f'<tr><td>{r["id"]}</td><td>{e(r["created_at"])}</td><td>{e(r["channel"])}</td>'
            f'<td>{e(r["direction"])}</td><td>{e(r["label"] or "")}</td><td>{_num(r["confidence"])}</td>'
            f'<td>{e(r["handled_by"] or "")}</td><td>{e(r["text"])}</td></tr>' for r in items)

    head = ('<thead><tr><th scope="col">id</th><th scope="col">시각 (UTC)</th><th scope="col">채널</th>'
            '<th scope="col">방향</th><th scope="col">라벨</th><th scope="col">신뢰도</th>'
            '<th scope="col">처리</th><th scope="col">내용 (마스킹)</th></tr></thead>')
    more = (f'<p><a href="/supervisor?{e(f.query(before_id=next_before))}#log">다음 / Older</a></p>'
            if next_before is not None else "")
    dir_opts = "".join(f'<option value="{v}"{" selected" if f.direction == v else ""}>{t}</option>'
                       for v, t in (("", "전체 / all"), ("in", "in"), ("out", "out")))
    return f"""<!doctype html>
<html lang="ko">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>상황판 · Supervisor dashboard</title><style>{_CSS}</style></head>
<body><main>
<h1>상황판 · Supervisor dashboard</h1>
<p>{e(who.username)} ({e(who.role)}) · {e(f.start_day.isoformat())} – {e(f.end_day.isoformat())}</p>
<form method="get" action="/supervisor" aria-label="기간 / Range">
<label>시작 / From<input type="date" name="from" value="{e(f.start_day.isoformat())}"></label>
<label>끝 / To<input type="date" name="to" value="{e(f.end_day.isoformat())}"></label>
<label>채널 / Channel<input name="channel" value="{e(f.channel or "")}"></label>
<label>라벨 / Label<input name="label" value="{e(f.label or "")}"></label>
<label>방향 / Direction<select name="direction">{dir_opts}</select></label>
<label>내용 / Text contains<input name="q" value="{e(f.q or "")}"></label>
<button type="submit">보기 / Show</button>
</form>
<h2>지표 / KPIs</h2>
<ul class="cards">{cards_html}</ul>
<table><caption>채널별 받은 메시지 / Messages in by channel</caption>
<thead><tr><th scope="col">채널</th><th scope="col">건수</th></tr></thead><tbody>{volume}</tbody></table>
<table><caption>많이 나온 라벨 / Top labels</caption>
<thead><tr><th scope="col">라벨</th><th scope="col">건수</th></tr></thead><tbody>{labels}</tbody></table>
<table><caption>신뢰도 {LOW_CONFIDENCE} 미만 메시지 / Low-confidence messages</caption>{head}
<tbody>{rows(k["low_confidence"])}</tbody></table>
<h2 id="log">대화 기록 / Interaction log</h2>
<p><a href="/supervisor/interactions.csv?{e(f.query())}">CSV 내보내기 / Export CSV</a></p>
<table><caption>대화 기록 (최신순) / Interactions, newest first</caption>{head}<tbody>{rows(page)}</tbody></table>
{more}
</main></body></html>
"""
