"""Supervisor pages inside the console: a live wallboard, statistics with drill-down, transcripts.

Same look, login and CSRF as the agent console (``bot/console/templates``, ``console.js``), for
``supervisor`` and ``admin`` roles only.  All numbers come from SQL aggregates
(:mod:`crm_store.analytics_sql`); every bar and table row links to the conversations behind it
(``/console/drill``), and every conversation to its transcript.  Times are shown in the office's
time zone.  The wallboard refreshes itself over the console socket: any queue event of any
department makes it fetch ``/console/api/wallboard`` again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from bot.console import labels as human
from bot.console.auth import ConsoleUser, require_user
from bot.console.routes import _departments, _knowledge, _municipality, _render, _sla, _tz, capacity, page_user
from bot.masking import mask_pii
from bot.web.pages import PageResponse
from crm_store import analytics_sql as A
from crm_store import interactions
from crm_store.models import Conversation, Handoff
from crm_store.timeutil import as_utc

router = APIRouter(prefix="/console", tags=["supervisor"])

PRESETS = {"today": "오늘", "yesterday": "어제", "7d": "최근 7일", "30d": "최근 30일"}
TABS = {"overview": "개요", "departments": "부서별", "agents": "상담원별", "volume": "채널·일자별"}


def _supervisor(user: ConsoleUser) -> None:
    if not user.sees_all:
        raise HTTPException(status_code=403, detail="supervisors only")


def _api_supervisor(user: ConsoleUser = Depends(require_user)) -> ConsoleUser:
    _supervisor(user)
    return user


async def _page_supervisor(request: Request, user: ConsoleUser = Depends(page_user)) -> ConsoleUser:
    """Dependency of the pages: a browser without a session goes to the login (and comes back),
    an agent gets the 403 page; the route only renders its page."""
    if not user.sees_all:
        raise PageResponse(_render(request, "error.html", status_code=403, user=user, title="접근할 수 없음",
                                   message="관리자만 볼 수 있는 화면입니다."))
    return user


def _wallboard(request: Request) -> dict[str, Any]:
    k = _knowledge(request)
    with request.app.state.sessions() as s:
        data = A.wallboard(s, _sla(_municipality(request)))
    for d in data["departments"]:
        d["department_name"] = k.department_name(d["department"], "ko")
    cap = capacity(_municipality(request))
    for a in data["agents"]:
        a["department_names"] = [k.department_name(x, "ko") for x in a["departments"]]
        a["capacity"] = cap
    return data


def _stats(request: Request, preset: str, department: str | None, channel: str | None,
           tab: str | None = None) -> dict[str, Any]:
    """The statistics of one tab (``None``: all of them, for the JSON API)."""
    k = _knowledge(request)
    tz = _tz(request)
    period = A.Period.preset(preset, tz)
    sla = _sla(_municipality(request))
    with request.app.state.sessions() as s:
        data: dict[str, Any] = {
            "overview": A.overview(s, period, department, channel) if tab in (None, "overview") else {},
            "by_day": A.by_day(s, period, channel) if tab in (None, "volume") else [],
            "departments": A.by_department(s, period, sla) if tab in (None, "departments") else [],
            "agents": A.by_agent(s, period) if tab in (None, "agents") else []}
    for d in data["departments"]:
        d["department_name"] = k.department_name(d["department"], "ko")
    days: dict[str, int] = {}
    chans: dict[str, int] = {}
    for r in data["by_day"]:
        days[r["day"]] = days.get(r["day"], 0) + r["messages"]
        chans[r["channel"]] = chans.get(r["channel"], 0) + r["messages"]
    data["days"] = [{"day": d, "messages": n} for d, n in sorted(days.items())]
    data["channels"] = [{"channel": c, "channel_name": human.channel(c), "messages": n}
                        for c, n in sorted(chans.items(), key=lambda x: -x[1])]
    data["period"] = {"preset": preset, "start": period.start.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
                      "end": period.end.astimezone(tz).strftime("%Y-%m-%d %H:%M")}
    return data


def _q(**kw: Any) -> str:
    return urlencode({k: v for k, v in kw.items() if v not in (None, "")})


# --- pages -------------------------------------------------------------------------------------

@router.get("/wallboard", response_class=HTMLResponse, include_in_schema=False)
async def wallboard_page(request: Request, user: ConsoleUser = Depends(_page_supervisor)) -> Response:
    data = await run_in_threadpool(_wallboard, request)
    return _render(request, "wallboard.html", user=user, w=data, title="실시간 현황판")


@router.get("/stats", response_class=HTMLResponse, include_in_schema=False)
async def stats_page(request: Request, preset: str = "30d", tab: str = "overview", department: str = "",
                     channel: str = "", user: ConsoleUser = Depends(_page_supervisor)) -> Response:
    preset = preset if preset in PRESETS else "30d"
    tab = tab if tab in TABS else "overview"
    data = await run_in_threadpool(_stats, request, preset, department or None, channel or None, tab)
    top_day = max([d["messages"] for d in data["days"]] or [1])
    top_ch = max([c["messages"] for c in data["channels"]] or [1])
    top_dep = max([d["handoffs"] for d in data["departments"]] or [1])
    channels = [(c, human.channel(c)) for c in _municipality(request).channels]
    return _render(request, "stats.html", user=user, st=data, tab=tab, tabs=TABS, presets=PRESETS, preset=preset,
                   department=department, channel=channel, departments=_departments(request), channels=channels,
                   top_day=top_day, top_ch=top_ch, top_dep=top_dep, q=_q, title="상담 통계")


@router.get("/drill", response_class=HTMLResponse, include_in_schema=False)
async def drill_page(request: Request, preset: str = "30d", department: str = "", channel: str = "",
                     agent_id: int | None = None, day: str = "", handoffs: int = 0,
                     user: ConsoleUser = Depends(_page_supervisor)) -> Response:
    preset = preset if preset in PRESETS else "30d"
    k = _knowledge(request)
    tz = _tz(request)

    def run() -> list[dict[str, Any]]:
        with request.app.state.sessions() as s:
            rows = A.drill(s, A.Period.preset(preset, tz), department or None, channel or None, agent_id,
                           day or None, handoffs=bool(handoffs))
        for r in rows:
            r["at_local"] = as_utc(_parse(r["at"])).astimezone(tz).strftime("%Y-%m-%d %H:%M")
            r["channel_name"] = human.channel(r.get("channel"))
            if r.get("department"):
                r["department_name"] = k.department_name(r["department"], "ko")
        return rows

    rows = await run_in_threadpool(run)
    what = " · ".join(x for x in (PRESETS[preset], k.department_name(department, "ko") if department else "",
                                  human.channel(channel) if channel else "", day,
                                  f"상담원 #{agent_id}" if agent_id else "") if x)
    return _render(request, "drill.html", user=user, rows=rows, what=what, title="상담 목록")


@router.get("/conversations/{conversation_id}", response_class=HTMLResponse, include_in_schema=False)
async def transcript_page(request: Request, conversation_id: int,
                          user: ConsoleUser = Depends(_page_supervisor)) -> Response:
    tz = _tz(request)
    k = _knowledge(request)

    def run() -> dict[str, Any] | None:
        with request.app.state.sessions() as s:
            conv = s.get(Conversation, conversation_id)
            if conv is None:
                return None
            rows = interactions.transcript(s, conv.id)
            hs = list(s.scalars(select(Handoff).where(Handoff.conversation_id == conv.id).order_by(Handoff.id)))
            return {"id": conv.id, "channel_name": human.channel(conv.channel),
                    "handoffs": [{"id": h.id, "department_name": k.department_name(h.department, "ko"),
                                  "status": h.status, "reason_name": human.reason(h.reason, k)} for h in hs],
                    "messages": [{"author": "resident" if r.direction == "in" else (
                                      "agent" if (r.handled_by or "").startswith("agent:") else "bot"),
                                  "text": mask_pii(r.text or ""), "label_name": human.label(r.label, k),
                                  "at_local": as_utc(r.created_at).astimezone(tz).strftime("%m-%d %H:%M")}
                                 for r in rows]}

    data = await run_in_threadpool(run)
    if data is None:
        return _render(request, "error.html", status_code=404, user=user, title="찾을 수 없음",
                       message="대화를 찾을 수 없습니다.")
    return _render(request, "transcript.html", user=user, c=data, title=f"대화 #{conversation_id}")


def _parse(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value)


# --- JSON --------------------------------------------------------------------------------------

@router.get("/api/wallboard", summary="Queue depth, longest wait, SLA at risk and agents' load, now")
async def api_wallboard(request: Request, user: ConsoleUser = Depends(_api_supervisor)) -> dict[str, Any]:
    return await run_in_threadpool(_wallboard, request)


@router.get("/api/stats", summary="Totals, volume by day and channel, departments, per-agent statistics")
async def api_stats(request: Request, preset: str = "30d", department: str = "", channel: str = "",
                    user: ConsoleUser = Depends(_api_supervisor)) -> dict[str, Any]:
    return await run_in_threadpool(_stats, request, preset if preset in PRESETS else "30d", department or None,
                                   channel or None)
