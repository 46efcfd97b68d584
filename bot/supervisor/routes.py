"""The ``/supervisor`` routes: each states its audience (:mod:`bot.supervisor.access`) and its
filters (:func:`bot.supervisor.filters.filters`) as dependencies, reads the store through
:mod:`bot.supervisor.queries` and answers JSON, CSV, YAML or a page from ``bot/web/templates``.

Plain ``def`` routes: FastAPI runs them on the thread pool, where the SQL may block.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse

from bot import analytics
from bot.console.auth import ConsoleUser
from bot.supervisor import view
from bot.supervisor.access import require_supervisor, require_supervisor_page
from bot.supervisor.filters import Filters, filters, window
from bot.supervisor.queries import LOW_CONFIDENCE, csv_lines, kpis, log_row, search
from bot.web import pages
from crm_store.models import Conversation, audit

router = APIRouter(prefix="/supervisor", tags=["supervisor"])


def _analytics(request: Request, f: Filters) -> dict[str, Any]:
    return analytics.report(request.app.state.sessions, request.app.state.engine.knowledge, window(request, f),
                            period=f.period, group=f.group)


@router.get("/supervisor.css", include_in_schema=False)
def stylesheet() -> Response:
    """The app's stylesheet under its old address (pages a browser cached still find it)."""
    return pages.stylesheet_response()


@router.get("/kpis.json", summary="Supervisor KPIs and PCRM analytics over a date range")
def kpis_json(request: Request, who: ConsoleUser = Depends(require_supervisor),
              f: Filters = Depends(filters)) -> Response:
    return JSONResponse({**kpis(request.app.state.sessions, f), "analytics": _analytics(request, f)})


@router.get("/unrecognised.yml", summary="Not-understood messages as Rasa NLU training data (PII masked)")
def unrecognised_yml(request: Request, who: ConsoleUser = Depends(require_supervisor),
                     f: Filters = Depends(filters)) -> Response:
    rows = analytics.unrecognised(request.app.state.sessions, window(request, f), limit=5000)
    with request.app.state.sessions.begin() as s:
        s.add(audit(who.username, "supervisor.export_unrecognised", f.query()[:255]))
    name = f"unrecognised-{f.start_day.isoformat()}-{f.end_day.isoformat()}.yml"
    return PlainTextResponse(analytics.nlu_yaml(rows), media_type="application/x-yaml; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/conversations/{conversation_id}", response_class=HTMLResponse, summary="One conversation's transcript")
def conversation_page(request: Request, conversation_id: int,
                      who: ConsoleUser = Depends(require_supervisor_page)) -> Response:
    from crm_store.interactions import transcript

    with request.app.state.sessions() as s:
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            return JSONResponse({"detail": "no such conversation"}, status_code=404)
        rows = [log_row(i) for i in transcript(s, conversation_id)]
        channel = conv.channel
    return pages.staff_page(request, "supervisor/transcript.html", who, title=f"대화 {conversation_id} · Transcript",
                            conversation_id=conversation_id, channel=channel, rows=rows)


@router.get("/interactions.json", summary="Interaction log page (keyset pagination with before_id)")
def interactions_json(request: Request, who: ConsoleUser = Depends(require_supervisor),
                      f: Filters = Depends(filters)) -> Response:
    page, next_before = search(request.app.state.sessions, f)
    return JSONResponse({"items": page, "next_before_id": next_before})


@router.get("/interactions.csv", summary="Interaction log as CSV (personal numbers masked)")
def interactions_csv(request: Request, who: ConsoleUser = Depends(require_supervisor),
                     f: Filters = Depends(filters)) -> Response:
    with request.app.state.sessions.begin() as s:
        s.add(audit(who.username, "supervisor.export_interactions", f.query()[:255]))
    name = f"interactions-{f.start_day.isoformat()}-{f.end_day.isoformat()}.csv"
    return StreamingResponse(csv_lines(request.app.state.sessions, f), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("", response_class=HTMLResponse, summary="Supervisor dashboard")
def dashboard(request: Request, who: ConsoleUser = Depends(require_supervisor_page),
              f: Filters = Depends(filters)) -> Response:
    sessions = request.app.state.sessions
    k = kpis(sessions, f)
    k["analytics"] = _analytics(request, f)
    k["unrecognised"] = analytics.unrecognised(sessions, window(request, f), limit=20)
    page, next_before = search(sessions, f)
    return pages.staff_page(
        request, "supervisor/dashboard.html", who, title="상황판 · Supervisor dashboard", f=f,
        d=view.dashboard(f, k), page=page, next_before=next_before, num=view.num, log_head=view.LOG_HEAD,
        low_confidence=LOW_CONFIDENCE, directions=view.DIRECTIONS, handled=view.HANDLED, periods=view.PERIODS,
        groups=view.GROUPS)
