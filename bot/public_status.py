"""Public status of requests: look up a ticket, and a map and list of open and recently fixed ones.

Information asymmetry falls when residents can see what happens to their requests, without
asking in the same chat they reported in. Anyone may use these pages (no login), so they show
only what a notice board would: the service, status, department, dates, the notes staff wrote
*for the public* (``request_updates.public``, personal numbers masked) and how many residents
reported the same problem. Never the resident's words, name, channel, exact address or photos:
the place is the 동 (area) and coordinates rounded to 3 decimals (≈ 100 m).

* ``GET /status`` (``?ticket=2026-000123``; ``?lang=en``) — the lookup form and the ticket's card;
* ``GET /api/status/{ticket}`` — the same as JSON;
* ``GET /status/map`` — open requests and those fixed in the last :data:`RECENT_DAYS` days, by
  category and area, drawn on an offline schematic of the district's roads (SVG from the gazetteer,
  no map tiles) and listed in a table; ``?service=`` and ``?area=`` filter it;
* ``GET /api/status/map`` — the same as JSON.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from bot.geo import gazetteer
from bot.knowledge import Knowledge
from bot.masking import mask_pii
from bot.service_requests import TICKET_RE
from bot.web import pages
from crm_store.models import RequestSubscription, RequestUpdate, ServiceRequest
from crm_store.timeutil import as_utc, utcnow

router = APIRouter(tags=["public status"])

RECENT_DAYS = 30
MAP_LIMIT = 500
PUBLIC_DECIMALS = 3


def _tz(knowledge: Knowledge) -> ZoneInfo:
    return knowledge.municipality.municipality.tz


def _area(row: Any, lang: str) -> str:
    """The 동 of a request: from its coordinates, else from its address; "" when unknown."""
    g = gazetteer()
    if row.lat is not None and row.long is not None:
        ko, en = g.area(row.lat, row.long)
        return en if lang == "en" else ko
    found = g.forward(row.address_string or "")
    if found is None:
        return ""
    return found.area_en if lang == "en" else found.area_ko


def _approx(value: float | None) -> float | None:
    return None if value is None else round(value, PUBLIC_DECIMALS)


def ticket_status(sessions: sessionmaker[Session], knowledge: Knowledge, ticket: str,
                  lang: str) -> dict[str, Any] | None:
    """The public card of ``ticket`` (module doc), or None if there is no such request."""
    ticket = ticket.strip()
    if not TICKET_RE.match(ticket):
        return None
    tz = _tz(knowledge)
    with sessions() as s:
        row = s.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == ticket)).one_or_none()
        if row is None:
            return None
        notes = s.execute(select(RequestUpdate.note, RequestUpdate.created_at, RequestUpdate.sub_status)
                          .where(RequestUpdate.request_id == row.id, RequestUpdate.public.is_(True),
                                 RequestUpdate.note.is_not(None))
                          .order_by(RequestUpdate.created_at, RequestUpdate.id)).all()
        followers = s.scalar(select(func.count()).select_from(RequestSubscription)
                             .where(RequestSubscription.request_id == row.id)) or 0
        merged_into = None
        if row.duplicate_of_id is not None:
            merged_into = s.scalar(select(ServiceRequest.service_request_id)
                                   .where(ServiceRequest.id == row.duplicate_of_id))
        svc = knowledge.services.get(row.service_code)

        def day(value: datetime | None) -> str | None:
            return as_utc(value).astimezone(tz).strftime("%Y-%m-%d") if value else None

        return {
            "ticket": row.service_request_id,
            "service_code": row.service_code,
            "service": svc.name(lang) if svc else row.service_code,
            "status": row.status,
            "sub_status": row.sub_status,
            "status_label": knowledge.render(f"status_{row.sub_status}", lang),
            "department": knowledge.department_name(row.agency_responsible, lang),
            "requested": day(row.requested_datetime),
            "updated": day(row.updated_datetime),
            "expected": day(row.expected_datetime),
            "area": _area(row, lang),
            "reports": 1 + int(followers),
            "merged_into": merged_into,
            "notes": [{"date": day(at), "text": mask_pii(note, full=True)} for note, at, _ in notes],
        }


def map_items(sessions: sessionmaker[Session], knowledge: Knowledge, lang: str, service: str | None = None,
              area: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Open requests and those fixed in the last :data:`RECENT_DAYS` days, public fields only."""
    end = as_utc(now or utcnow())
    since = end - timedelta(days=RECENT_DAYS)
    tz = _tz(knowledge)
    stmt = (select(ServiceRequest)
            .where(ServiceRequest.duplicate_of_id.is_(None),
                   or_(ServiceRequest.status == "open",
                       (ServiceRequest.sub_status == "resolved") & (ServiceRequest.updated_datetime >= since)))
            .order_by(ServiceRequest.requested_datetime.desc()).limit(MAP_LIMIT))
    if service:
        stmt = stmt.where(ServiceRequest.service_code == service)
    items = []
    with sessions() as s:
        for row in s.scalars(stmt):
            where = _area(row, lang)
            if area and where != area:
                continue
            svc = knowledge.services.get(row.service_code)
            items.append({
                "ticket": row.service_request_id, "service_code": row.service_code,
                "service": svc.name(lang) if svc else row.service_code,
                "fixed": row.sub_status == "resolved",
                "status_label": knowledge.render(f"status_{row.sub_status}", lang),
                "area": where, "lat": _approx(row.lat), "long": _approx(row.long),
                "requested": as_utc(row.requested_datetime).astimezone(tz).strftime("%Y-%m-%d"),
            })
    return {"recent_days": RECENT_DAYS, "items": items}


# --------------------------------------------------------------------------------- HTML (bot/web/templates/public)

_TEXT = {
    "ko": {
        "title": "민원 처리 상태 조회", "map_title": "민원 지도: 처리 중이거나 최근 처리된 민원",
        "lead": "접수번호로 처리 상태를 확인하세요. "
                "개인정보(이름, 연락처, 신고 내용, 정확한 주소, 사진)는 보이지 않아요.",
        "label": "접수번호", "hint": "예: 2026-000123", "submit": "조회",
        "not_found": "접수번호 {ticket}에 해당하는 민원을 찾지 못했어요. 번호를 다시 확인해 주세요.",
        "service": "민원 종류", "status": "처리 상태", "department": "담당 부서", "requested": "접수일",
        "updated": "최근 변경일", "expected": "처리 예정일", "area": "지역", "reports": "같은 문제를 알린 주민",
        "reports_n": "{n}명", "notes": "처리 소식", "no_notes": "아직 공개된 처리 소식이 없어요.",
        "merged": "이 민원은 {ticket} 민원과 함께 처리돼요.",
        "map_link": "민원 지도 보기", "lookup_link": "접수번호로 조회하기",
        "map_lead": "처리 중인 민원과 최근 {days}일 동안 처리 완료된 민원이에요. "
                    "위치는 동 단위의 대략적인 위치만 보여요.",
        "legend_open": "처리 중", "legend_fixed": "처리 완료", "all": "전체", "filter": "보기",
        "table": "민원 목록", "ticket": "접수번호", "none": "조건에 맞는 민원이 없어요.",
        "map_alt": "한빛구 도로 약도 위에 민원 위치를 대략적으로 표시한 지도",
    },
    "en": {
        "title": "Request status lookup", "map_title": "Request map: open and recently fixed",
        "lead": "Check a request's status by its ticket number. No personal data (names, contacts, the "
                "report's words, exact addresses, photos) is shown.",
        "label": "Ticket number", "hint": "e.g. 2026-000123", "submit": "Look up",
        "not_found": "No request has the ticket number {ticket}. Please check the number.",
        "service": "Service", "status": "Status", "department": "Department", "requested": "Received",
        "updated": "Last updated", "expected": "Expected by", "area": "Area", "reports": "Residents who reported it",
        "reports_n": "{n}", "notes": "Updates", "no_notes": "No public updates yet.",
        "merged": "This request is handled together with {ticket}.",
        "map_link": "See the request map", "lookup_link": "Look up a ticket",
        "map_lead": "Open requests and those fixed in the last {days} days. Places are approximate (the area only).",
        "legend_open": "Open", "legend_fixed": "Fixed", "all": "All", "filter": "Show",
        "table": "Requests", "ticket": "Ticket", "none": "No requests match.",
        "map_alt": "A schematic map of Hanbit-gu's roads with the approximate places of requests",
    },
}

def _card_fields(card: dict[str, Any], t: dict[str, str]) -> list[tuple[str, str]]:
    return [("service", card["service"]), ("status", card["status_label"]), ("department", card["department"]),
            ("requested", card["requested"]), ("updated", card["updated"]), ("expected", card["expected"] or "–"),
            ("area", card["area"] or "–"), ("reports", t["reports_n"].format(n=card["reports"]))]


def map_shapes(items: list[dict[str, Any]], lang: str) -> dict[str, Any]:
    """The district's roads (gazetteer) and the requests' approximate places, in SVG coordinates
    (``public/map.html`` draws them: an offline schematic, no map tiles)."""
    g = gazetteer()
    pts = [(la, lo) for r in g.roads.values() for _, la, lo in r.anchors]
    lat0, lat1 = min(p[0] for p in pts) - 0.001, max(p[0] for p in pts) + 0.001
    lon0, lon1 = min(p[1] for p in pts) - 0.001, max(p[1] for p in pts) + 0.001
    w, h = 600, round(600 * (lat1 - lat0) / ((lon1 - lon0) * 0.79))

    def xy(la: float, lo: float) -> tuple[float, float]:
        return round((lo - lon0) / (lon1 - lon0) * w, 1), round((lat1 - la) / (lat1 - lat0) * h, 1)

    roads = []
    for road in g.roads.values():
        x, y = xy(road.anchors[0][1], road.anchors[0][2])
        roads.append({"points": " ".join("{},{}".format(*xy(la, lo)) for _, la, lo in road.anchors),
                      "x": x + 4, "y": y - 6, "name": road.en if lang == "en" else road.ko})
    points = []
    for it in items:
        if it["lat"] is not None:
            x, y = xy(it["lat"], it["long"])
            points.append({"x": x, "y": y, "fixed": it["fixed"],
                           "label": f'{it["ticket"]} {it["service"]} ({it["status_label"]})'})
    return {"w": w, "h": h, "roads": roads, "points": points}


def _lang(request: Request) -> str:
    return "en" if request.query_params.get("lang", "").lower().startswith("en") else "ko"


def _state(request: Request) -> tuple[sessionmaker[Session], Knowledge]:
    return request.app.state.sessions, request.app.state.engine.knowledge


@router.get("/status.css", include_in_schema=False)
def status_css() -> Response:
    """The app's stylesheet under the pages' old CSS address (pages a browser cached still find it)."""
    return pages.stylesheet_response()


@router.get("/api/status/map", summary="Open and recently fixed requests (public fields)")
def map_json(request: Request, service: str = "", area: str = "") -> JSONResponse:
    sessions, k = _state(request)
    return JSONResponse(map_items(sessions, k, _lang(request), service or None, area or None),
                        headers={"Cache-Control": "public, max-age=60"})


@router.get("/api/status/{ticket}", summary="A request's public status")
def status_json(request: Request, ticket: str) -> JSONResponse:
    sessions, k = _state(request)
    card = ticket_status(sessions, k, ticket, _lang(request))
    if card is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse(card, headers={"Cache-Control": "no-cache"})


@router.get("/status/map", response_class=HTMLResponse, summary="Public map of requests")
def map_page(request: Request, service: str = "", area: str = "") -> HTMLResponse:
    sessions, k = _state(request)
    lang = _lang(request)
    data = map_items(sessions, k, lang, service or None, area or None)
    services = sorted(((code, s.name(lang)) for code, s in k.services.items()), key=lambda p: p[1])
    areas = [(a, a) for a in sorted({(a[1] if lang == "en" else a[0]) for a in gazetteer().areas})]
    query = urlencode({"service": service}) if service else ""  # area names differ by language
    return pages.public_page(request, "public/map.html", lang, query, title=_TEXT[lang]["map_title"],
                             t=_TEXT[lang], data=data, m=map_shapes(data["items"], lang), service=service,
                             area=area, services=services, areas=areas)


@router.get("/status", response_class=HTMLResponse, summary="Public ticket status lookup")
def status_page(request: Request, ticket: str = "") -> HTMLResponse:
    sessions, k = _state(request)
    lang = _lang(request)
    ticket = ticket.strip()[:20]
    card = ticket_status(sessions, k, ticket, lang) if ticket else None
    t = _TEXT[lang]
    return pages.public_page(request, "public/status.html", lang, urlencode({"ticket": ticket}) if ticket else "",
                             status_code=200 if card or not ticket else 404, title=t["title"], t=t, ticket=ticket,
                             card=card, fields=_card_fields(card, t) if card else [])
