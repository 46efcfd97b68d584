"""Open311 GeoReport v2: the city's service requests for outside apps and open-data users.

Endpoints (all under ``/open311/v2``, each as ``.json`` or ``.xml``):

* ``GET services``                 the 11 catalog service codes (``?lang=en`` for English names)
* ``GET services/{code}``          a service definition (its attributes: location, description, when)
* ``GET requests``                 requests, filtered by ``service_request_id`` (comma list, overrides the
  rest), ``service_code`` (comma list), ``start_date``/``end_date`` (W3C datetimes, at most 90 days apart;
  default: the last 90 days) and ``status`` (``open``/``closed``); newest first, at most 1000
* ``POST requests``                create a request (form or JSON body; ``api_key`` required)
* ``GET requests/{id}``            one request (ticket numbers ``YYYY-NNNNNN`` are the ids)
* ``GET tokens/{id}``              requests are created synchronously, so the token *is* the ticket

A POST goes through exactly the path the bot uses (``engine.requests.open(RequestDraft(...))``),
with the department and expected time from the catalog and ``config.yml``. Contact fields of the
Open311 POST (email, phone, names, device id) are not stored: the open API is no way into the
resident profile store. Descriptions and notes are shown with phone and resident registration
numbers masked, since residents sometimes type them into a report.

API keys: ``pcrm open311 keys add NAME`` prints a new key once and keeps only its SHA-256 in
``var/open311_keys.json`` (next to the model directory; ``OPEN311_KEYS_FILE`` overrides the path).
``OPEN311_API_KEYS`` (comma list) adds keys from the environment, plain or as ``sha256:<hex>``.

What the public sees (no key): category (service code and name), status, dates, department,
an approximate location (coordinates rounded to :data:`PUBLIC_COORD_DECIMALS` decimals, ≈ 100 m)
and staff status notes, all with every digit of a phone or registration number starred. The
resident's own words (``description``) and the exact address only when the resident agreed to
publication in the conversation (``service_requests.public_consent``); media never. Before, the
feed published what residents wrote in private channels (SMS, chat), home addresses included.
City systems holding a key (``X-API-Key`` header on GET; the spec's ``api_key`` parameter in the
POST body — never in a query string, which access logs keep) get the full record: exact
address and coordinates, description and ``media_url`` (a signed link valid one hour,
:mod:`bot.media_access`), personal numbers masked.

Text is made safe for XML 1.0 on output (control characters dropped), and a POST whose text
fields hold control characters is refused: one such POST once broke the XML feed for everyone.

Times are ISO 8601 with the municipality's offset (``+09:00``). Errors use the spec's error list
(``[{"code": 404, "description": "..."}]`` / ``<errors><error>...``) for 400, 403 and 404.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from bot.knowledge import Knowledge, Service
from bot.masking import mask_pii
from bot.service_requests import TICKET_RE, RequestDraft
from bot.settings import get_settings
from crm_store.models import ServiceRequest
from crm_store.timeutil import as_utc, utcnow

router = APIRouter(prefix="/open311/v2", tags=["open311"])

FORMATS = ("json", "xml")
MAX_RESULTS = 1000
MAX_SPAN = timedelta(days=90)
MAX_DESCRIPTION = 4000
CHANNEL = "open311"
PUBLIC_COORD_DECIMALS = 3
KEY_HEADER = "x-api-key"
#: Characters XML 1.0 cannot carry (C0 controls but tab/LF/CR, surrogates, U+FFFE/U+FFFF).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: Refused in POSTed text (what residents type never needs them).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")

#: Service definition attributes per form slot (location, description and when are asked by the bot too).
_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "location": {"datatype": "string",
                 "ko": "위치 (주소나 장소; lat/long 또는 address_string 대신 쓸 수 있음)",
                 "en": "Location (address or place; may replace lat/long or address_string)"},
    "description": {"datatype": "text", "ko": "무슨 문제인지 자세히", "en": "What the problem is, in detail"},
    "when": {"datatype": "string", "ko": "언제부터 또는 언제 (예: 어제 저녁부터)",
             "en": "When it happened or since when (e.g. since last night)"},
}


class Open311Error(Exception):
    """An error the client gets in the spec's error-list form."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


# ---------------------------------------------------------------------------- API keys

def keys_path(settings: Any) -> Path:
    """``var/open311_keys.json`` (beside the model directory), or ``OPEN311_KEYS_FILE``."""
    override = getattr(settings, "open311_keys_file", None)
    if override:
        return Path(override)
    return Path(settings.pcrm_model_dir).parent / "open311_keys.json"


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _load_keys(path: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    keys = doc.get("keys") if isinstance(doc, dict) else None
    return [k for k in keys or [] if isinstance(k, dict) and isinstance(k.get("sha256"), str)]


def add_key(path: Path, name: str) -> str:
    """Create a key named ``name``, store its SHA-256 in ``path`` and return the key (shown once)."""
    key = secrets.token_urlsafe(32)
    keys = _load_keys(path)
    keys.append({"name": name, "sha256": _sha256(key), "created": utcnow().isoformat(timespec="seconds")})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"keys": keys}, fh, ensure_ascii=False, indent=2)
    os.replace(tmp, path)
    return key


def key_names(path: Path) -> list[str]:
    """Names of the keys stored in ``path`` (for ``pcrm open311 keys list``)."""
    return [str(k.get("name", "")) for k in _load_keys(path)]


def valid_key(key: str | None, settings: Any) -> bool:
    """Whether ``key`` is one of the stored (hashed) or environment keys; constant-time compares."""
    if not key or len(key) > 512:
        return False
    digest = _sha256(key)
    # The key settings are read now, not at start: an operator adds a key without a restart.
    env = get_settings()
    allowed = [k["sha256"] for k in _load_keys(keys_path(env if env.open311_keys_file else settings))]
    for entry in env.open311_api_keys.split(","):
        entry = entry.strip()
        if entry:
            allowed.append(entry[7:].lower() if entry.startswith("sha256:") else _sha256(entry))
    ok = False
    for h in allowed:
        ok |= hmac.compare_digest(digest, h)
    return ok


# ---------------------------------------------------------------------------- rendering

def _tz(knowledge: Knowledge) -> ZoneInfo:
    return knowledge.municipality.municipality.tz


def _iso(value: datetime | None, tz: ZoneInfo) -> str | None:
    return None if value is None else as_utc(value).astimezone(tz).isoformat(timespec="seconds")


def _xml_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _XML_INVALID.sub("", str(value))


def _xml_fill(parent: ET.Element, data: dict[str, Any]) -> None:
    for key, value in data.items():
        child = ET.SubElement(parent, key)
        if isinstance(value, list):
            singular = {"attributes": "attribute", "values": "value"}.get(key, "item")
            for item in value:
                _xml_fill(ET.SubElement(child, singular), item)
        elif isinstance(value, dict):
            _xml_fill(child, value)
        else:
            child.text = _xml_value(value)


def _xml(root_tag: str, item_tag: str | None, data: list[dict[str, Any]] | dict[str, Any]) -> str:
    root = ET.Element(root_tag)
    if isinstance(data, dict):
        _xml_fill(root, data)
    else:
        for row in data:
            _xml_fill(ET.SubElement(root, item_tag or "item"), row)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


def _respond(fmt: str, root_tag: str, item_tag: str | None, data: Any, status: int = 200) -> Response:
    if fmt == "xml":
        return Response(_xml(root_tag, item_tag, data), status_code=status,
                        media_type="application/xml; charset=utf-8")
    return JSONResponse(data, status_code=status, media_type="application/json; charset=utf-8")


def _error(fmt: str, status: int, description: str) -> Response:
    return _respond(fmt if fmt in FORMATS else "json", "errors", "error",
                    [{"code": status, "description": description}], status)


def _split(name: str) -> tuple[str, str]:
    """``"waste.pothole.json"`` → (``"waste.pothole"``, ``"json"``); unknown formats raise 404."""
    stem, dot, fmt = name.rpartition(".")
    fmt = fmt.lower()
    if not dot or fmt not in FORMATS:
        raise Open311Error(404, "unknown format: use .json or .xml")
    return stem, fmt


def _lang(request: Request) -> str:
    return "en" if request.query_params.get("lang", "").lower().startswith("en") else "ko"


def _hours(h: float) -> str:
    return str(int(h)) if float(h).is_integer() else f"{h:g}"


def _notice(knowledge: Knowledge, svc: Service | None, department: str, lang: str) -> str:
    dept = knowledge.department_name(department, lang)
    if svc is None:
        return f"Handled by {dept}" if lang == "en" else f"{dept} 담당"
    if lang == "en":
        return f"Handled by {dept}; target time {_hours(svc.expected_hours)} hours"
    return f"{dept} 담당 · 목표 처리 시간 {_hours(svc.expected_hours)}시간"


def _service_json(knowledge: Knowledge, svc: Service, lang: str) -> dict[str, Any]:
    dept = knowledge.departments.get(svc.department, {})
    keywords = [svc.ko, svc.en, str(dept.get("ko", "")), str(dept.get("en", ""))]
    if lang == "en":
        description = (f"{svc.en} — handled by {knowledge.department_name(svc.department, 'en')}, "
                       f"target time {_hours(svc.expected_hours)} hours")
    else:
        description = (f"{svc.ko} — {knowledge.department_name(svc.department, 'ko')} 처리, "
                       f"목표 처리 시간 {_hours(svc.expected_hours)}시간")
    return {
        "service_code": svc.code,
        "service_name": svc.name(lang),
        "description": description,
        "metadata": bool(_attributes(svc, lang)),
        "type": "realtime",
        "keywords": ", ".join(k for k in keywords if k),
        "group": svc.department,
    }


def _attributes(svc: Service, lang: str) -> list[dict[str, Any]]:
    out = []
    for slot in svc.slots:
        spec = _ATTRIBUTES.get(slot)
        if spec is None:
            continue
        out.append({
            "variable": True,
            "code": slot,
            "datatype": spec["datatype"],
            "required": False,
            "datatype_description": "",
            "order": len(out) + 1,
            "description": spec["en" if lang == "en" else "ko"],
            "values": [],
        })
    return out


def _media(settings: Any, url: str | None) -> str | None:
    """Our own file links as short-lived signed URLs; a URL a city system posted, as it is."""
    if not url:
        return None
    from bot.media_access import signed_url

    ours = settings.pcrm_public_url.rstrip("/") + "/"
    return signed_url(settings, url) if url.startswith(ours) else url


def _approx(value: float | None) -> float | None:
    return None if value is None else round(value, PUBLIC_COORD_DECIMALS)


def _request_json(knowledge: Knowledge, row: ServiceRequest, lang: str, tz: ZoneInfo,
                  keyed: bool = False, settings: Any = None) -> dict[str, Any]:
    """One request: the full record for a key holder, the public view otherwise (module docstring)."""
    svc = knowledge.services.get(row.service_code)
    published = keyed or bool(row.public_consent)
    full = not keyed  # public output: every digit of a personal number starred

    def masked(text: str | None) -> str | None:
        return mask_pii(text, full=full) if text else None

    return {
        "service_request_id": row.service_request_id,
        "status": row.status,
        "status_notes": masked(row.status_notes),
        "service_name": svc.name(lang) if svc else row.service_code,
        "service_code": row.service_code,
        "description": (masked(row.description) or "") if published else "",
        "agency_responsible": row.agency_responsible,
        "service_notice": _notice(knowledge, svc, row.agency_responsible, lang),
        "requested_datetime": _iso(row.requested_datetime, tz),
        "updated_datetime": _iso(row.updated_datetime, tz),
        "expected_datetime": _iso(row.expected_datetime, tz),
        "address": masked(row.address_string) if published else None,
        "address_id": None,
        "zipcode": None,
        "lat": row.lat if keyed else _approx(row.lat),
        "long": row.long if keyed else _approx(row.long),
        "media_url": _media(settings, row.media_url) if keyed and settings is not None else None,
    }


def _keyed(request: Request) -> bool:
    """Whether a GET carries a valid key in ``X-API-Key`` (never read from the query string)."""
    return valid_key(request.headers.get(KEY_HEADER), request.app.state.settings)


# ---------------------------------------------------------------------------- parsing

_SPACE_OFFSET = re.compile(r"^(.*\d) (\d{2}:?\d{2})$")


def parse_datetime(raw: str, tz: ZoneInfo) -> datetime:
    """A W3C/ISO 8601 datetime (or date); naive values are municipality time. Raises Open311Error."""
    text = raw.strip()
    # An unencoded "+09:00" in a query string arrives as " 09:00".
    text = _SPACE_OFFSET.sub(r"\1+\2", text)
    try:
        if len(text) > 40:
            raise ValueError(text)
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz)
        return as_utc(value)
    except (ValueError, OverflowError, TypeError) as exc:
        raise Open311Error(400, f"invalid datetime {raw[:40]!r}: use W3C format, e.g. "
                                "2026-01-01T00:00:00+09:00") from exc


def _float(value: Any, name: str, bound: float) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError) as exc:
        raise Open311Error(400, f"{name} must be a number") from exc
    if not math.isfinite(f) or abs(f) > bound:
        raise Open311Error(400, f"{name} out of range")
    return f


async def _body(request: Request) -> dict[str, str]:
    """The POST arguments (form or JSON), plus ``api_key`` from the ``X-API-Key`` header if given there
    (a key in the query string is ignored: access logs keep query strings)."""
    ctype = request.headers.get("content-type", "").lower()
    data: dict[str, str] = {}
    if "json" in ctype:
        try:
            doc = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            raise Open311Error(400, "malformed JSON body") from exc
        if not isinstance(doc, dict):
            raise Open311Error(400, "the JSON body must be an object")
        for k, v in doc.items():
            if isinstance(v, dict) and k == "attribute":
                data.update({f"attribute[{ak}]": str(av) for ak, av in v.items() if av is not None})
            elif v is not None and not isinstance(v, (dict, list)):
                data[str(k)] = str(v)
    else:
        try:
            form = await request.form()
        except Exception as exc:  # noqa: BLE001 - any multipart parse failure is the client's
            raise Open311Error(400, "malformed form body") from exc
        for k, v in form.multi_items():
            if isinstance(v, str):
                data[k] = v
    if "api_key" not in data and request.headers.get(KEY_HEADER):
        data["api_key"] = request.headers[KEY_HEADER]
    return data


# ---------------------------------------------------------------------------- routes

def _knowledge(request: Request) -> Knowledge:
    return request.app.state.engine.knowledge


@router.get("/services.{fmt}", summary="Service list")
def services(request: Request, fmt: str) -> Response:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        return _error("json", 404, "unknown format: use .json or .xml")
    k = _knowledge(request)
    lang = _lang(request)
    return _respond(fmt, "services", "service", [_service_json(k, s, lang) for s in k.services.values()])


@router.get("/services/{name}", summary="Service definition")
def service_definition(request: Request, name: str) -> Response:
    try:
        code, fmt = _split(name)
    except Open311Error as err:
        return _error("json", err.status, err.description)
    k = _knowledge(request)
    svc = k.services.get(code)
    if svc is None:
        return _error(fmt, 404, f"unknown service_code {code[:80]!r}")
    data = {"service_code": svc.code, "attributes": _attributes(svc, _lang(request))}
    return _respond(fmt, "service_definition", None, data)


@router.get("/requests.{fmt}", summary="Service requests")
def list_requests(request: Request, fmt: str) -> Response:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        return _error("json", 404, "unknown format: use .json or .xml")
    k = _knowledge(request)
    tz = _tz(k)
    q = request.query_params
    try:
        stmt = select(ServiceRequest)
        ids = [i.strip() for i in q.get("service_request_id", "").split(",") if i.strip()]
        if ids:
            if len(ids) > MAX_RESULTS or not all(TICKET_RE.match(i) for i in ids):
                raise Open311Error(400, "service_request_id must be ticket numbers like 2026-000123")
            stmt = stmt.where(ServiceRequest.service_request_id.in_(ids))
        else:
            codes = [c.strip() for c in q.get("service_code", "").split(",") if c.strip()]
            unknown = [c for c in codes if c not in k.services]
            if unknown:
                raise Open311Error(400, f"unknown service_code {unknown[0][:80]!r}")
            if codes:
                stmt = stmt.where(ServiceRequest.service_code.in_(codes))
            statuses = [s.strip().lower() for s in q.get("status", "").split(",") if s.strip()]
            if any(s not in ("open", "closed") for s in statuses):
                raise Open311Error(400, "status must be open or closed")
            if statuses:
                stmt = stmt.where(ServiceRequest.status.in_(statuses))
            start = parse_datetime(q["start_date"], tz) if q.get("start_date") else None
            end = parse_datetime(q["end_date"], tz) if q.get("end_date") else None
            try:
                if start is None and end is None:
                    end = utcnow()
                    start = end - MAX_SPAN
                elif start is None:
                    start = end - MAX_SPAN  # type: ignore[operator]
                elif end is None:
                    end = start + MAX_SPAN
            except OverflowError as exc:
                raise Open311Error(400, "date out of range") from exc
            assert start is not None and end is not None
            if start > end:
                raise Open311Error(400, "start_date is after end_date")
            if end - start > MAX_SPAN:
                raise Open311Error(400, "start_date and end_date may not span more than 90 days")
            stmt = stmt.where(ServiceRequest.requested_datetime >= start,
                              ServiceRequest.requested_datetime <= end)
    except Open311Error as err:
        return _error(fmt, err.status, err.description)
    stmt = stmt.order_by(ServiceRequest.requested_datetime.desc(), ServiceRequest.id.desc()).limit(MAX_RESULTS)
    lang = _lang(request)
    keyed = _keyed(request)
    with request.app.state.sessions() as session:
        rows = [_request_json(k, r, lang, tz, keyed, request.app.state.settings) for r in session.scalars(stmt)]
    return _respond(fmt, "service_requests", "request", rows)


@router.post("/requests.{fmt}", summary="Create a service request")
async def create_request(request: Request, fmt: str) -> Response:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        return _error("json", 404, "unknown format: use .json or .xml")
    k = _knowledge(request)
    try:
        data = await _body(request)
        if not valid_key(data.get("api_key"), request.app.state.settings):
            raise Open311Error(403, "api_key missing or invalid")
        code = data.get("service_code", "").strip()
        if not code:
            raise Open311Error(400, "service_code is required")
        svc = k.services.get(code)
        if svc is None:
            raise Open311Error(404, f"unknown service_code {code[:80]!r}")
        lat_raw, long_raw = data.get("lat", "").strip(), data.get("long", "").strip()
        lat = _float(lat_raw, "lat", 90) if lat_raw else None
        lon = _float(long_raw, "long", 180) if long_raw else None
        if (lat is None) != (lon is None):
            raise Open311Error(400, "lat and long must be given together")
        address = (data.get("address_string") or data.get("attribute[location]") or "").strip() or None
        if lat is None and address is None:
            raise Open311Error(400, "a location is required: lat and long, or address_string")
        description = (data.get("description") or data.get("attribute[description]") or "").strip()
        if len(description) > MAX_DESCRIPTION or len(address or "") > 1000:
            raise Open311Error(400, f"description is limited to {MAX_DESCRIPTION} characters")
        media_url = (data.get("media_url") or "").strip() or None
        if media_url and (len(media_url) > 2000 or not re.match(r"^https?://[^\s]+$", media_url)):
            raise Open311Error(400, "media_url must be an http(s) URL")
        when = (data.get("attribute[when]") or "").strip()[:128] or None
        if any(_CONTROL.search(v or "") for v in (description, address, when, media_url)):
            raise Open311Error(400, "text fields must not contain control characters")
    except Open311Error as err:
        return _error(fmt, err.status, err.description)
    lang = "en" if (data.get("lang") or request.query_params.get("lang", "")).lower().startswith("en") else "ko"
    if lat is None and address:  # issue 20: coordinates for the map from the district gazetteer (offline)
        from bot.geo import gazetteer

        found = gazetteer().forward(address)
        lat, lon = (found.lat, found.long) if found is not None else (None, None)
    draft = RequestDraft(
        service_code=svc.code,
        department=svc.department,
        description=description,
        address_string=address,
        lat=lat,
        long=lon,
        when=when,
        media_url=media_url,
        consent=False,
        channel=CHANNEL,
        sender_id="",
        lang=lang,
        expected_hours=svc.expected_hours,
    )
    rec = request.app.state.engine.requests.open(draft)
    body = [{"service_request_id": rec.ticket,
             "service_notice": _notice(k, svc, svc.department, lang),
             "account_id": None}]
    return _respond(fmt, "service_requests", "request", body, status=201)


def _one(request: Request, name: str) -> tuple[str, str, ServiceRequest | None]:
    ticket, fmt = _split(name)
    if not TICKET_RE.match(ticket):
        return ticket, fmt, None
    with request.app.state.sessions() as session:
        row = session.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == ticket)).first()
    return ticket, fmt, row


@router.get("/requests/{name}", summary="One service request")
def get_request(request: Request, name: str) -> Response:
    try:
        ticket, fmt, row = _one(request, name)
    except Open311Error as err:
        return _error("json", err.status, err.description)
    if row is None:
        return _error(fmt, 404, f"no service request {ticket[:40]!r}")
    k = _knowledge(request)
    return _respond(fmt, "service_requests", "request",
                    [_request_json(k, row, _lang(request), _tz(k), _keyed(request), request.app.state.settings)])


@router.get("/tokens/{name}", summary="Service request id from a token")
def get_token(request: Request, name: str) -> Response:
    try:
        ticket, fmt, row = _one(request, name)
    except Open311Error as err:
        return _error("json", err.status, err.description)
    if row is None:
        return _error(fmt, 404, f"no token {ticket[:40]!r}")
    return _respond(fmt, "service_requests", "request", [{"service_request_id": ticket, "token": ticket}])
