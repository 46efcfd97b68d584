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

import html
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from bot.geo import gazetteer
from bot.knowledge import Knowledge
from bot.service_requests import TICKET_RE
from crm_store.masking import mask_pii
from crm_store.models import RequestSubscription, RequestUpdate, ServiceRequest
from crm_store.timeutil import as_utc, utcnow

router = APIRouter(tags=["public status"])

RECENT_DAYS = 30
MAP_LIMIT = 500
PUBLIC_DECIMALS = 3


def _tz(knowledge: Knowledge) -> ZoneInfo:
    return ZoneInfo((knowledge.config.get("municipality") or {}).get("timezone", "Asia/Seoul"))


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


# --------------------------------------------------------------------------------- HTML

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
        "switch": "English", "switch_lang": "en",
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
        "switch": "한국어", "switch_lang": "ko",
    },
}

_CSS = """
body{font-family:system-ui,-apple-system,"Noto Sans KR","Malgun Gothic",sans-serif;margin:0;color:#1a1a1a;
background:#fff;line-height:1.5}
main{max-width:48rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:0 0 .5rem}
h2{font-size:1.2rem}
a{color:#0b4fc2}
a:focus,a:hover,input:focus,button:focus,select:focus{outline:3px solid #0b4fc2;outline-offset:2px}
label{display:block;font-weight:700;margin:.5rem 0 .25rem}
input,select,button{font-size:1rem;padding:.6rem;min-height:44px;border:1px solid #595959;border-radius:4px}
button{background:#0b4fc2;color:#fff;border-color:#0b4fc2;cursor:pointer}
.card{border:1px solid #6b6b6b;border-radius:6px;padding:1rem;margin:1rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:0}
dt{font-weight:700}
dd{margin:0}
table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{border:1px solid #6b6b6b;padding:.4rem;text-align:left}
thead th{background:#eef1f5}
.notfound{color:#8a1c1c;font-weight:700}
svg{width:100%;height:auto;border:1px solid #6b6b6b;background:#fafafa}
.legend{display:flex;gap:1rem;list-style:none;padding:0}
"""


def _page(lang: str, title: str, body: str, other_query: str) -> str:
    t = _TEXT[lang]
    e = html.escape
    other = t["switch_lang"]
    return f"""<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<link rel="stylesheet" href="/status.css">
</head>
<body>
<main>
<h1>{e(title)}</h1>
<p><a href="?{e(other_query)}lang={other}" lang="{other}" hreflang="{other}">{e(t["switch"])}</a></p>
{body}
</main>
</body>
</html>
"""


def render_lookup(lang: str, ticket: str, card: dict[str, Any] | None) -> str:
    """The lookup form and, when a ticket was asked for, its card or a not-found line."""
    t = _TEXT[lang]
    e = html.escape
    parts = [f'<p>{e(t["lead"])}</p>',
             f'<form method="get" action="/status" role="search"><label for="ticket">{e(t["label"])}</label>'
             f'<input id="ticket" name="ticket" value="{e(ticket)}" inputmode="numeric" autocomplete="off" '
             f'placeholder="{e(t["hint"])}" aria-describedby="ticket-hint" pattern="\\d{{4}}-\\d{{6}}">'
             f'<input type="hidden" name="lang" value="{lang}"> <button type="submit">{e(t["submit"])}</button>'
             f'<p id="ticket-hint">{e(t["hint"])}</p></form>']
    if ticket and card is None:
        parts.append(f'<p class="notfound" role="alert">{e(t["not_found"].format(ticket=ticket))}</p>')
    if card is not None:
        fields = [("service", card["service"]), ("status", card["status_label"]), ("department", card["department"]),
                  ("requested", card["requested"]), ("updated", card["updated"]), ("expected", card["expected"] or "–"),
                  ("area", card["area"] or "–"), ("reports", t["reports_n"].format(n=card["reports"]))]
        rows = "".join(f"<dt>{e(t[k])}</dt><dd data-field=\"{k}\">{e(str(v))}</dd>" for k, v in fields)
        notes = "".join(f"<li><time>{e(n['date'] or '')}</time> {e(n['text'])}</li>" for n in card["notes"])
        merged = f'<p>{e(t["merged"].format(ticket=card["merged_into"]))}</p>' if card["merged_into"] else ""
        parts.append(f'<section class="card" aria-labelledby="card-title" data-ticket="{e(card["ticket"])}">'
                     f'<h2 id="card-title">{e(card["ticket"])}</h2><dl>{rows}</dl>{merged}'
                     f'<h3>{e(t["notes"])}</h3>'
                     + (f"<ul>{notes}</ul>" if notes else f'<p>{e(t["no_notes"])}</p>') + "</section>")
    parts.append(f'<p><a href="/status/map?lang={lang}">{e(t["map_link"])}</a></p>')
    return _page(lang, t["title"], "\n".join(parts), f"ticket={e(ticket)}&amp;" if ticket else "")


def _svg(items: list[dict[str, Any]], lang: str) -> str:
    """The district's roads (gazetteer) and the requests' approximate places, as an accessible SVG."""
    g = gazetteer()
    t = _TEXT[lang]
    pts = [(la, lo) for r in g.roads.values() for _, la, lo in r.anchors]
    lat0, lat1 = min(p[0] for p in pts) - 0.001, max(p[0] for p in pts) + 0.001
    lon0, lon1 = min(p[1] for p in pts) - 0.001, max(p[1] for p in pts) + 0.001
    w, h = 600, round(600 * (lat1 - lat0) / ((lon1 - lon0) * 0.79))

    def xy(la: float, lo: float) -> tuple[float, float]:
        return round((lo - lon0) / (lon1 - lon0) * w, 1), round((lat1 - la) / (lat1 - lat0) * h, 1)

    e = html.escape
    out = [f'<svg viewBox="0 0 {w} {h}" role="img" aria-labelledby="map-alt" xmlns="http://www.w3.org/2000/svg">'
           f'<title id="map-alt">{e(t["map_alt"])}</title>']
    for road in g.roads.values():
        line = " ".join("{},{}".format(*xy(la, lo)) for _, la, lo in road.anchors)
        x, y = xy(road.anchors[0][1], road.anchors[0][2])
        out.append(f'<polyline points="{line}" fill="none" stroke="#9aa3ad" stroke-width="6"/>'
                   f'<text x="{x + 4}" y="{y - 6}" font-size="13" fill="#333">'
                   f'{e(road.en if lang == "en" else road.ko)}</text>')
    for it in items:
        if it["lat"] is None:
            continue
        x, y = xy(it["lat"], it["long"])
        label = e(f'{it["ticket"]} {it["service"]} ({it["status_label"]})')
        if it["fixed"]:
            out.append(f'<rect x="{x - 6}" y="{y - 6}" width="12" height="12" fill="#1b7a3a">'
                       f'<title>{label}</title></rect>')
        else:
            out.append(f'<circle cx="{x}" cy="{y}" r="7" fill="#c2410c"><title>{label}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def render_map(lang: str, data: dict[str, Any], knowledge: Knowledge, service: str, area: str) -> str:
    t = _TEXT[lang]
    e = html.escape
    services = sorted(((code, s.name(lang)) for code, s in knowledge.services.items()), key=lambda p: p[1])
    areas = sorted({(a[1] if lang == "en" else a[0]) for a in gazetteer().areas})
    svc_opts = "".join(f'<option value="{e(c)}"{" selected" if c == service else ""}>{e(n)}</option>'
                       for c, n in services)
    area_opts = "".join(f'<option{" selected" if a == area else ""}>{e(a)}</option>' for a in areas)
    rows = "".join(
        f'<tr data-ticket="{e(i["ticket"])}"><td><a href="/status?ticket={e(i["ticket"])}&amp;lang={lang}">'
        f'{e(i["ticket"])}</a></td><td>{e(i["service"])}</td><td>{e(i["area"] or "–")}</td>'
        f'<td>{e(i["status_label"])}</td><td>{e(i["requested"])}</td></tr>' for i in data["items"])
    table = (f'<table><caption>{e(t["table"])}</caption><thead><tr><th scope="col">{e(t["ticket"])}</th>'
             f'<th scope="col">{e(t["service"])}</th><th scope="col">{e(t["area"])}</th>'
             f'<th scope="col">{e(t["status"])}</th><th scope="col">{e(t["requested"])}</th></tr></thead>'
             f'<tbody>{rows}</tbody></table>') if rows else f'<p>{e(t["none"])}</p>'
    body = (f'<p>{e(t["map_lead"].format(days=data["recent_days"]))}</p>'
            f'<form method="get" action="/status/map"><label for="service">{e(t["service"])}</label>'
            f'<select id="service" name="service"><option value="">{e(t["all"])}</option>{svc_opts}</select>'
            f'<label for="area">{e(t["area"])}</label><select id="area" name="area"><option value="">{e(t["all"])}'
            f'</option>{area_opts}</select> <input type="hidden" name="lang" value="{lang}">'
            f'<button type="submit">{e(t["filter"])}</button></form>'
            f'<ul class="legend"><li>● {e(t["legend_open"])}</li><li>■ {e(t["legend_fixed"])}</li></ul>'
            f'{_svg(data["items"], lang)}{table}'
            f'<p><a href="/status?lang={lang}">{e(t["lookup_link"])}</a></p>')
    return _page(lang, t["map_title"], body, "")


def _lang(request: Request) -> str:
    return "en" if request.query_params.get("lang", "").lower().startswith("en") else "ko"


def _state(request: Request) -> tuple[sessionmaker[Session], Knowledge]:
    return request.app.state.sessions, request.app.state.engine.knowledge


@router.get("/status.css", include_in_schema=False)
def status_css() -> Response:
    """The pages' CSS as a file (a Content-Security-Policy may allow no inline style)."""
    return Response(_CSS, media_type="text/css; charset=utf-8", headers={"Cache-Control": "public, max-age=3600"})


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
    return HTMLResponse(render_map(lang, data, k, service, area))


@router.get("/status", response_class=HTMLResponse, summary="Public ticket status lookup")
def status_page(request: Request, ticket: str = "") -> HTMLResponse:
    sessions, k = _state(request)
    lang = _lang(request)
    ticket = ticket.strip()[:20]
    card = ticket_status(sessions, k, ticket, lang) if ticket else None
    return HTMLResponse(render_lookup(lang, ticket, card), status_code=200 if card or not ticket else 404)
