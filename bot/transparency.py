"""Public transparency page: how each department handles residents' requests (no login, no personal data).

``GET /transparency`` (HTML, Korean; ``?lang=en`` English) and ``GET /api/transparency`` (JSON) show,
per catalog department, over the last 30 days:

* ``received``: service requests received (``requested_datetime`` in the window);
* ``median_hours_to_resolve``: median of ``updated_datetime - requested_datetime`` over those of them
  that are resolved (sub-status ``resolved``; rejected requests are not counted as resolved);
* ``on_time_share``: share of those resolved requests resolved by their ``expected_datetime``
  (the target from ``config.yml``);
* ``csat`` / ``csat_n``: mean 1–5 rating residents gave after a hand-off to that department
  (feedback given in the window), and how many ratings.

Only counts and aggregates leave the store: no text, no identifiers.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.knowledge import Knowledge
from bot.web import pages
from crm_store.models import Feedback, Handoff, ServiceRequest
from crm_store.timeutil import as_utc, utcnow

router = APIRouter(tags=["transparency"])

WINDOW_DAYS = 30


def department_stats(
    sessions: sessionmaker[Session], knowledge: Knowledge, now: datetime | None = None, days: int = WINDOW_DAYS
) -> dict[str, Any]:
    """The transparency figures (see the module doc) for the ``days`` before ``now``."""
    end = as_utc(now or utcnow())
    since = end - timedelta(days=days)
    received: dict[str, int] = {}
    durations: dict[str, list[float]] = {}
    on_time: dict[str, int] = {}
    ratings: dict[str, list[int]] = {}
    with sessions() as session:
        rows = session.execute(
            select(ServiceRequest.agency_responsible, ServiceRequest.sub_status,
                   ServiceRequest.requested_datetime, ServiceRequest.updated_datetime,
                   ServiceRequest.expected_datetime)
            .where(ServiceRequest.requested_datetime >= since, ServiceRequest.requested_datetime <= end)
        )
        for dept, sub_status, requested, updated, expected in rows:
            received[dept] = received.get(dept, 0) + 1
            if sub_status != "resolved":
                continue
            hours = (as_utc(updated) - as_utc(requested)).total_seconds() / 3600
            durations.setdefault(dept, []).append(max(hours, 0.0))
            if expected is not None and as_utc(updated) <= as_utc(expected):
                on_time[dept] = on_time.get(dept, 0) + 1
        for dept, rating in session.execute(
            select(Handoff.department, Feedback.rating)
            .join(Handoff, Handoff.id == Feedback.handoff_id)
            .where(Feedback.created_at >= since, Feedback.created_at <= end)
        ):
            ratings.setdefault(dept, []).append(int(rating))
    codes = list(knowledge.departments)
    codes += sorted(set(received) - set(codes))
    out = []
    for code in codes:
        resolved = durations.get(code, [])
        scores = ratings.get(code, [])
        out.append({
            "department": code,
            "name_ko": knowledge.department_name(code, "ko"),
            "name_en": knowledge.department_name(code, "en"),
            "received": received.get(code, 0),
            "resolved": len(resolved),
            "median_hours_to_resolve": round(statistics.median(resolved), 1) if resolved else None,
            "on_time_share": round(on_time.get(code, 0) / len(resolved), 3) if resolved else None,
            "csat": round(statistics.fmean(scores), 2) if scores else None,
            "csat_n": len(scores),
        })
    return {"window_days": days, "from": since.isoformat(timespec="seconds"),
            "to": end.isoformat(timespec="seconds"), "departments": out}


_TEXT = {
    "ko": {
        "title": "민원 처리 현황 공개",
        "intro": "최근 {days}일 동안 부서별로 접수된 민원과 처리 결과입니다. 개인정보는 포함되지 않습니다.",
        "caption": "부서별 민원 처리 현황 (최근 {days}일)",
        "dept": "부서", "received": "접수 건수", "median": "처리 소요 시간 중앙값 (시간)",
        "on_time": "목표 시간 내 처리 비율", "csat": "상담 만족도 (5점 만점)",
        "notes": "처리 소요 시간과 목표 시간 내 처리 비율은 처리 완료된 민원만 셉니다. "
                 "만족도는 상담원 연결 후 주민이 남긴 평가의 평균이며, 괄호 안은 응답 수입니다.",
        "none": "–", "n": "{n}명",
    },
    "en": {
        "title": "Service request transparency",
        "intro": "Requests received and how they were handled, per department, over the last {days} days. "
                 "No personal data is shown.",
        "caption": "Service requests by department (last {days} days)",
        "dept": "Department", "received": "Requests received", "median": "Median time to resolve (hours)",
        "on_time": "Resolved on time", "csat": "Satisfaction (out of 5)",
        "notes": "Time to resolve and the on-time share count resolved requests only. Satisfaction is the "
                 "mean rating residents gave after talking to an agent; the number of ratings is in brackets.",
        "none": "–", "n": "n={n}",
    },
}

def _fmt_hours(v: float | None, t: dict[str, str]) -> str:
    return t["none"] if v is None else f"{v:.1f}"


def _fmt_share(v: float | None, t: dict[str, str]) -> str:
    return t["none"] if v is None else f"{round(v * 100)}%"


def _fmt_csat(v: float | None, n: int, t: dict[str, str]) -> str:
    return t["none"] if v is None else f"{v:.2f} ({t['n'].format(n=n)})"


def table_rows(stats: dict[str, Any], lang: str) -> list[dict[str, Any]]:
    """One row per department, worded and formatted in ``lang`` (the template escapes them)."""
    t = _TEXT[lang]
    return [{"code": d["department"], "name": d["name_en"] if lang == "en" else d["name_ko"],
             "received": d["received"], "median": _fmt_hours(d["median_hours_to_resolve"], t),
             "on_time": _fmt_share(d["on_time_share"], t), "csat": _fmt_csat(d["csat"], d["csat_n"], t)}
            for d in stats["departments"]]


def _stats(request: Request) -> dict[str, Any]:
    return department_stats(request.app.state.sessions, request.app.state.engine.knowledge)


@router.get("/api/transparency", summary="Per-department request statistics (last 30 days)")
def transparency_json(request: Request) -> JSONResponse:
    return JSONResponse(_stats(request), headers={"Cache-Control": "public, max-age=300"})


@router.get("/transparency.css", include_in_schema=False)
def stylesheet() -> Response:
    """The app's stylesheet under the page's old CSS address (pages a browser cached still find it)."""
    return pages.stylesheet_response()


@router.get("/transparency", response_class=HTMLResponse, summary="Public transparency page")
def transparency_page(request: Request) -> HTMLResponse:
    lang = "en" if request.query_params.get("lang", "").lower().startswith("en") else "ko"
    stats = _stats(request)
    return pages.public_page(request, "public/transparency.html", lang,
                             headers={"Cache-Control": "public, max-age=300"}, title=_TEXT[lang]["title"],
                             t=_TEXT[lang], days=stats["window_days"], rows=table_rows(stats, lang))
