"""Field crews: work orders on a mobile page that works offline, and residents told of every step.

FixMyStreet's lesson is that the request must reach whoever fixes the pothole. A crew member
(an agent with role ``field``, logged in at ``/console/login``) opens ``/field/`` on a phone:
an installable PWA (``manifest.webmanifest``, service worker ``sw.js``) that lists their work
orders by priority and distance with directions as text, and takes before/after photos, notes
and status changes. Offline, updates wait in an IndexedDB queue and are sent to
``POST /field/api/sync`` when the phone is back online (idempotent by ``client_id``,
crm_store/work_orders.py). Every update reaches the request's history; ``on_site`` and ``done``
reach the reporter and every subscriber on their own channel, and ``done`` asks them whether it
is really fixed (bot/dialogue/followup.py): "아니요" reopens it with their words.

Staff assign orders with ``POST /field/api/assign`` (console session + CSRF).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from bot.console import auth
from bot.console.auth import ConsoleUser
from bot.geo import distance_m, gazetteer
from bot.media import NAME_RE, PhotoError, decode_data_url, media_dir, store_photo
from bot.messages import Button, Reply
from crm_store import work_orders

if TYPE_CHECKING:
    from bot.dialogue.state import DialogueState

log = logging.getLogger(__name__)
router = APIRouter(tags=["field"])
STATIC = Path(__file__).resolve().parent / "field_static"
CREW_ROLES = ("field", "supervisor", "admin")
MAX_SYNC = 50

_COMPASS = {"ko": ["북쪽", "북동쪽", "동쪽", "남동쪽", "남쪽", "남서쪽", "서쪽", "북서쪽"],
            "en": ["north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"]}


def directions(lat: float | None, long: float | None, to_lat: float | None, to_long: float | None,
               address: str | None, lang: str) -> str:
    """"북동쪽으로 약 350 m · 한빛로 118 (한빛동)": distance and compass direction from the crew's
    position (when known) and the place as an address from the gazetteer (no map service)."""
    place = address or "-"
    if to_lat is not None and to_long is not None:
        g = gazetteer()
        found = g.reverse(to_lat, to_long)
        if found is not None and (not address or g.address_key(address) != found.key):
            place = f"{address} · {found.label(lang)}" if address else found.label(lang)
    if lat is None or long is None or to_lat is None or to_long is None:
        return place
    d = distance_m(lat, long, to_lat, to_long)
    bearing = math.degrees(math.atan2((to_long - long) * math.cos(math.radians(lat)), to_lat - lat)) % 360
    way = _COMPASS[lang][int((bearing + 22.5) // 45) % 8]
    dist = f"{d / 1000:.1f} km" if d >= 1000 else f"{round(d / 10) * 10:.0f} m"
    return f"{way}으로 약 {dist} · {place}" if lang == "ko" else f"about {dist} {way} · {place}"


def crew_user(request: Request) -> ConsoleUser:
    user = auth.require_user(request)
    if user.role not in CREW_ROLES:
        raise HTTPException(status_code=403, detail="field crews only")
    return user


def crew_user_with_csrf(request: Request) -> ConsoleUser:
    user = crew_user(request)
    auth.check_csrf(request, user, request.headers.get(auth.CSRF_HEADER))
    return user


# --- the app's files -------------------------------------------------------------------------------

_FILES = {"app.js": "text/javascript", "app.css": "text/css", "sw.js": "text/javascript",
          "manifest.webmanifest": "application/manifest+json", "icon.svg": "image/svg+xml"}


@router.get("/field", include_in_schema=False)
def field_root() -> RedirectResponse:
    return RedirectResponse("/field/", status_code=307)


@router.get("/field/", include_in_schema=False)
def field_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


@router.get("/field/{name}", include_in_schema=False)
def field_file(name: str) -> FileResponse:
    if name not in _FILES:
        raise HTTPException(status_code=404)
    headers = {"Cache-Control": "no-cache"}
    if name == "sw.js":
        headers["Service-Worker-Allowed"] = "/field/"
    return FileResponse(STATIC / name, media_type=f"{_FILES[name]}; charset=utf-8", headers=headers)


@router.get("/field/media/{name}", include_in_schema=False)
def field_media(request: Request, name: str) -> FileResponse:
    """A stored photo, for staff of the department that owns its request only (residents' photos
    are not public, nor shown to every department); one no request refers to yet, to those who see
    all departments."""
    user = auth.require_user(request)
    path = media_dir(request.app.state.settings) / name
    if not NAME_RE.match(name) or not path.exists():
        raise HTTPException(status_code=404)
    owners = work_orders.media_departments(request.app.state.sessions, name)
    if not (user.sees_all or any(user.can_see(d) for d in owners)):
        raise HTTPException(status_code=403, detail="this photo belongs to another department's request")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


# --- the API ---------------------------------------------------------------------------------------

@router.get("/field/api/me", summary="The crew member and a CSRF token for syncing")
def field_me(request: Request, user: ConsoleUser = Depends(crew_user)) -> Response:
    token, fresh = auth.csrf_token_for(request, user)
    resp = JSONResponse({"username": user.username, "role": user.role, "csrf": token},
                        headers={"Cache-Control": "no-store"})
    if fresh:
        auth.set_cookie(resp, request, auth.CSRF_COOKIE, token)
    return resp


@router.get("/field/api/orders", summary="The crew's open work orders, by priority then distance")
def field_orders(request: Request, lat: float | None = None, long: float | None = None, lang: str = "ko",
                 user: ConsoleUser = Depends(crew_user)) -> JSONResponse:
    lang = "en" if lang.startswith("en") else "ko"
    k = request.app.state.engine.knowledge
    orders = work_orders.crew_orders(request.app.state.sessions, user.username)
    for o in orders:
        svc = k.services.get(o["service_code"])
        o["service"] = svc.name(lang) if svc else o["service_code"]
        o["distance_m"] = (round(distance_m(lat, long, o["lat"], o["long"]))
                           if None not in (lat, long, o["lat"], o["long"]) else None)
        o["directions"] = directions(lat, long, o["lat"], o["long"], o["address"], lang)
    orders.sort(key=lambda o: (-o["priority"], o["distance_m"] if o["distance_m"] is not None else math.inf))
    return JSONResponse({"orders": orders}, headers={"Cache-Control": "no-store"})


class AssignBody(BaseModel):
    ticket: str = Field(max_length=16)
    crew: str = Field(max_length=64)
    priority: int = Field(default=0, ge=0, le=100)


@router.post("/field/api/assign", summary="Hand a request to a field crew (staff)")
def field_assign(request: Request, body: AssignBody,
                 user: ConsoleUser = Depends(auth.api_user_with_csrf)) -> dict[str, Any]:
    if user.role == "field":
        raise HTTPException(status_code=403, detail="crews do not assign work")
    order = work_orders.assign(request.app.state.sessions, body.ticket, body.crew, body.priority, user.username)
    if order is None:
        raise HTTPException(status_code=404, detail="no such request")
    return {"ok": True, "order_id": order.id, "ticket": body.ticket, "crew": body.crew}


class SyncBody(BaseModel):
    updates: list[dict[str, Any]] = Field(max_length=MAX_SYNC)


@router.post("/field/api/sync", summary="Apply the crew app's queued updates (idempotent by client_id)")
async def field_sync(request: Request, body: SyncBody, user: ConsoleUser = Depends(crew_user_with_csrf)
                     ) -> dict[str, Any]:
    settings = request.app.state.settings
    results = []
    for raw in body.updates:
        upd = {k: raw.get(k) for k in ("client_id", "order_id", "status", "note", "photo_kind")}
        photo = raw.get("photo")
        if photo:
            try:
                stored = await run_in_threadpool(store_photo, decode_data_url(str(photo)), media_dir(settings))
            except PhotoError as exc:
                results.append({"client_id": upd["client_id"], "ok": False, "error": str(exc)})
                continue
            upd["photo_url"] = f"{settings.pcrm_public_url.rstrip('/')}/field/media/{stored.name}"
            upd["photo_kind"] = "after" if upd.get("photo_kind") == "after" else "before"
        applied = await run_in_threadpool(work_orders.apply_update, request.app.state.sessions, user.username, upd)
        told = 0
        if applied.ok and applied.notify:
            told = await notify(request.app, applied.ticket or "", applied.status or "", upd.get("note"),
                                applied.notify)
        results.append({"client_id": applied.client_id, "ok": applied.ok, "duplicate": applied.duplicate,
                        "ticket": applied.ticket, "status": applied.status, "notified": told,
                        "error": applied.error})
    return {"results": results}


# --- duplicates, for agents ------------------------------------------------------------------------

def _own_request(request: Request, user: ConsoleUser, ticket: str) -> Any:
    from crm_store.requests import SqlRequestStore

    store = SqlRequestStore(request.app.state.sessions)
    rec = store.get(ticket)
    if rec is None:
        raise HTTPException(status_code=404, detail="no such request")
    if not user.can_see(rec.department):
        raise HTTPException(status_code=403, detail="request of another department")
    return store, rec


def _brief(rec: Any) -> dict[str, Any]:
    return {"ticket": rec.ticket, "service_code": rec.service_code, "sub_status": rec.sub_status,
            "address": rec.address_string, "requested": rec.requested_at.isoformat(timespec="seconds"),
            "reports": 1 + rec.subscribers}


@router.get("/console/api/requests/{ticket}/duplicates", summary="Open requests this one may repeat (to merge)")
def console_duplicates(request: Request, ticket: str, user: ConsoleUser = Depends(auth.require_user)
                       ) -> dict[str, Any]:
    from actions.backend import Backend
    from actions.duplicates import rule_for

    store, rec = _own_request(request, user, ticket)
    rule = rule_for(Backend(request.app.state.engine.knowledge, store), rec.service_code)
    return {"request": _brief(rec), "subscribers": store.subscribers_of(ticket),
            "candidates": [_brief(r) for r in store.duplicates_of(ticket, rule)]}


class MergeBody(BaseModel):
    into: str = Field(max_length=16)


@router.post("/console/api/requests/{ticket}/merge", summary="Merge this request into another (its residents follow)")
def console_merge(request: Request, ticket: str, body: MergeBody,
                  user: ConsoleUser = Depends(auth.api_user_with_csrf)) -> dict[str, Any]:
    store, _rec = _own_request(request, user, ticket)
    merged = store.merge(ticket, body.into, who=user.username)
    if merged is None:
        raise HTTPException(status_code=409, detail="these requests cannot be merged")
    return {"ok": True, "into": _brief(merged)}


@router.post("/console/api/requests/{ticket}/split", summary="Undo a merge: the request stands on its own again")
def console_split(request: Request, ticket: str, user: ConsoleUser = Depends(auth.api_user_with_csrf)
                  ) -> dict[str, Any]:
    store, _rec = _own_request(request, user, ticket)
    rec = store.split(ticket, who=user.username)
    if rec is None:
        raise HTTPException(status_code=409, detail="this request is not merged")
    return {"ok": True, "request": _brief(rec)}


# --- telling residents -----------------------------------------------------------------------------

def _record_out(sessions: Any, key: str, text: str, lang: str) -> None:
    """The update in the resident's conversation history (the widget redraws it, agents read it)."""
    from crm_store.conversations import by_key
    from crm_store.models import Interaction

    with sessions.begin() as s:
        conv = by_key(s, key)
        if conv is not None:
            s.add(Interaction(conversation_id=conv.id, resident_id=conv.resident_id, channel=conv.channel,
                              direction="out", text=text, lang=lang, entities=[], handled_by="bot"))


async def notify(app: Any, ticket: str, status: str, note: str | None, keys: list[str]) -> int:
    """Tell each resident following ``ticket`` of a crew's ``on_site`` or ``done`` on their own
    channel, in their language; ``done`` also leaves their conversation asking "is it fixed?".
    Returns how many were delivered."""
    from bot.dialogue import followup

    engine = app.state.engine
    k = engine.knowledge
    rec = engine.requests.get(ticket)
    if rec is None:
        return 0
    svc = k.services.get(rec.service_code)
    delivered = 0
    for key in keys:
        channel, _, sender = key.partition(":")

        def prepare(state: DialogueState) -> tuple[str, str, bool]:
            lang = state.lang or "ko"
            values = {"ticket": ticket, "service": svc.name(lang) if svc else rec.service_code,
                      "department": k.department_name(rec.department, lang),
                      "note": f" ({note})" if note else ""}
            if status != "done":
                return k.render("utter_field_on_site", lang, **values), lang, False
            if state.handed_off or (state.active_form and state.requested_slot not in (
                    followup.FIXED_SLOT, followup.WHY_SLOT)):
                # Busy with an agent or another report: told, not asked (their form is not thrown away).
                return k.render("utter_field_done", lang, **values), lang, False
            followup.prepare(state, ticket, rec.service_code, list(svc.slots) if svc else [])
            return k.render("utter_field_done_ask_fixed", lang, **values), lang, True

        # Under the conversation's lock, saved through the state store only if changed (bot/inbox_port.py).
        text, lang, asking = await app.state.inbox.amend(key, prepare)
        await run_in_threadpool(_record_out, app.state.sessions, key, text, lang)
        adapter = app.state.channels.get(channel)
        buttons = ([Button(k.render("btn_yes", lang), k.render("btn_yes", lang)),
                    Button(k.render("btn_no", lang), k.render("btn_no", lang))] if asking else [])
        try:
            if adapter is not None and await adapter.send(sender, [Reply(text, buttons=buttons)]):
                delivered += 1
        except Exception:  # noqa: BLE001 - one channel failing must not stop the others
            log.exception("field update for %s not delivered on %s", ticket, channel)
    return delivered
