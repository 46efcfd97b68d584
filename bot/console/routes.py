"""The agent console: queues, the hand-off view, replies, notes, transfers, resolution, 민원 status.

Pages (HTML, redirect to the login page without a session) and a JSON API under
``/console/api`` (401 without a session, 403 when the role or department does not
allow it, 403 on any POST without a valid CSRF token).  Live updates travel over
``WS /console/ws``: the socket subscribes to ``dept:<code>`` for the agent's
departments (every department for supervisors and admins) and, after the client
sends ``{"type": "watch", "handoff_id": N}``, to ``handoff:<N>``.

Design choices:

* **Internal notes** are :class:`~crm_store.models.HandoffNote` rows (at most :data:`MAX_NOTE`
  characters), shown oldest first.  Writing one also writes an :class:`~crm_store.models.AuditLog` row
  (``action="console.note"``, ``target="handoff:<id>"``) that records that a note was written,
  not what it says (notes may hold personal data; erasing a resident deletes them).  They are
  never an :class:`Interaction`, so no channel, history endpoint or transcript can show them
  to the resident.  (Notes written before migration 0003 were audit rows
  ``target="handoff:<id>|<text>"``; the migration copied them into ``handoff_notes``.)
* **Agent replies** are stored with ``record_agent_reply`` and delivered through the
  conversation's channel adapter; on web chat they are published on
  ``conv:webchat:<session>`` as ``{"type": "agent"}`` frames (the widget shows them as a
  person's answer).  Messages the system sends on the agent's behalf (the rating
  question, 민원 status notices) are stored as ``handled_by="bot"`` rows.
* **Phone numbers** are masked (``mask_phone``; message texts with ``mask_pii``) until the
  agent asks to reveal them; every reveal writes an audit row.
* Static files (``/console/static/*``) are public: they hold no data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect, WebSocketState

from bot import security_headers, throttle
from bot.console import assist, auth, passwords
from bot.console import labels as human
from bot.console.auth import ConsoleUser, api_user_with_csrf, require_user
from bot.masking import mask_phone, mask_pii
from bot.messages import Reply
from bot.municipality import Municipality
from bot.phones import PHONE_IDENTITY, is_phone_channel
from bot.ratelimit import RateLimited
from bot.service_requests import CLOSED_SUB_STATUSES, SUB_STATUSES
from bot.web import pages
from crm_store import callbacks as callback_store
from crm_store import handoffs as handoff_store
from crm_store import interactions
from crm_store.models import (
    NOTE_ACTION,
    PRIORITY_EMERGENCY,
    Agent,
    CallbackTask,
    ChannelIdentity,
    Conversation,
    Handoff,
    HandoffNote,
    Interaction,
    Resident,
    ServiceRequest,
    audit,
)
from crm_store.requests import SqlRequestStore
from crm_store.timeutil import as_utc, utcnow

log = logging.getLogger("pcrm.console")

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
STATIC_FILES = {"console.js": "text/javascript; charset=utf-8"}
#: The app's one policy (no inline script or style); set here too for a page served without the middleware.
CSP = security_headers.CSP
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}
MAX_REPLY = 2000
#: Suggested answers below this NLU score are not shown (an unrelated FAQ misleads more than none).
SUGGEST_MIN_SCORE = 0.2
#: How the voice channel stores a recorded message ("[voicemail] <recording URL>").
VOICEMAIL = "[voicemail] "
#: A transfer's reason is kept as a note starting with this, so the receiving agent reads it.
TRANSFER_PREFIX = "[이관] "
MAX_NOTE = 2000
RESOLUTION_CODES = {
    "answered": "답변 완료",
    "request_opened": "민원 접수",
    "referred": "타 기관 안내",
    "callback_done": "회신 완료",
    "no_response": "주민 응답 없음",
    "duplicate": "중복 문의",
    "other": "기타",
}
STATUS_NAMES = {"received": "접수됨", "assigned": "담당자 배정", "in_progress": "처리 중",
                "resolved": "처리 완료", "rejected": "반려"}
#: Canned responses per department (Korean); every department also gets the general ones.
#: Placeholders: {agent} (the agent's display name), {city}, {department}.
CANNED: dict[str, list[str]] = {
    "general": [
        "안녕하세요, {city} 민원상담실 상담원 {agent}입니다. 무엇을 도와드릴까요?",
        "확인 후 바로 안내해 드리겠습니다. 잠시만 기다려 주세요.",
        "더 궁금하신 점이 있으시면 언제든지 말씀해 주세요. 감사합니다.",
    ],
    "waste": [
        "불편을 드려 죄송합니다. 수거 업체에 바로 전달해 오늘 중으로 수거하도록 하겠습니다.",
        "대형폐기물은 구청 홈페이지에서 신고 후 스티커를 붙여 배출해 주세요.",
    ],
    "roads": ["현장 확인 후 보수 일정을 안내해 드리겠습니다. 정확한 위치를 알려 주시겠어요?"],
    "traffic": ["단속 요원을 현장에 보내겠습니다. 차량 번호와 위치를 알려 주세요."],
    "tax": [
        "납부 내역은 서울시 ETAX에서 확인하실 수 있습니다.",
        "세무과 담당자가 확인 후 연락드리겠습니다. 연락 가능한 시간을 알려 주세요.",
    ],
    "civil": ["정부24(www.gov.kr)에서 온라인으로도 발급받으실 수 있습니다."],
    "welfare": ["주소지 동 주민센터에서 상담받으실 수 있도록 연결해 드리겠습니다."],
    "safety": ["위급한 상황이면 즉시 119 또는 112에 신고해 주세요. 현장에 담당자를 보내겠습니다."],
}

#: English canned replies (for residents writing in English); placeholders as in :data:`CANNED`.
CANNED_EN: dict[str, list[str]] = {
    "general": [
        "Hello, this is {agent} of {city}'s contact centre. How can I help?",
        "Let me check that for you. Please wait a moment.",
        "If there is anything else, just let us know. Thank you.",
    ],
    "waste": ["Sorry for the trouble. We will ask the collector to pick it up today."],
    "roads": ["We will check the site and let you know when it will be repaired. Where exactly is it?"],
    "safety": ["If anyone is in danger, call 119 or 112 now. We are sending someone to the site."],
}

router = APIRouter(prefix="/console", tags=["console"])


# --- helpers -----------------------------------------------------------------------------------

def _render(request: Request, name: str, status_code: int = 200, user: ConsoleUser | None = None,
            **ctx: Any) -> HTMLResponse:
    return pages.staff_page(request, name, user, status_code, PAGE_HEADERS, **ctx)


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)


def _safe_next(value: str | None) -> str:
    if value and value.startswith(("/console", "/supervisor", "/field/")) and "//" not in value and "\\" not in value:
        return value
    return "/console"


def _knowledge(request: Request) -> Any:
    return request.app.state.engine.knowledge


def _municipality(request: Request) -> Municipality:
    return request.app.state.settings.municipality()


def _tz(request: Request) -> ZoneInfo:
    return _municipality(request).municipality.tz


def _departments(request: Request) -> list[dict[str, str]]:
    k = _knowledge(request)
    return [{"code": code, "name": k.department_name(code, "ko")} for code in k.departments]


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def _load_handoff(s: Session, handoff_id: int, user: ConsoleUser) -> Handoff:
    row = s.get(Handoff, handoff_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such hand-off")
    if not user.can_see(row.department):
        raise HTTPException(status_code=403, detail="hand-off of another department")
    return row


def capacity(config: Municipality | Mapping[str, Any]) -> int:
    """How many conversations one agent handles at once (``console.max_active_per_agent``, default 5)."""
    return Municipality.of(config).console.max_active_per_agent


def _check_capacity(s: Session, request: Request, user: ConsoleUser, row: Handoff) -> None:
    """An agent at capacity takes no more, except emergencies (someone must)."""
    if row.priority >= PRIORITY_EMERGENCY:
        return
    active = s.scalar(select(func.count()).select_from(Handoff).where(Handoff.status == "claimed",
                                                                      Handoff.agent_id == user.id)) or 0
    if active >= capacity(_municipality(request)):
        raise HTTPException(status_code=409, detail="at capacity: close a conversation first")


def _check_actionable(row: Handoff, user: ConsoleUser) -> None:
    if row.status == "closed":
        raise HTTPException(status_code=409, detail="hand-off is closed")
    if row.status == "claimed" and row.agent_id != user.id and not user.sees_all:
        raise HTTPException(status_code=409, detail="claimed by another agent")


def _author(row: Interaction) -> str:
    if row.direction == "in":
        return "resident"
    if (row.handled_by or "").startswith("agent:"):
        return "agent"
    return "bot"


def _sla(config: Municipality | Mapping[str, Any]) -> dict[str, int]:
    """Claim targets in seconds (``config.yml`` ``sla.handoff_claim_minutes``)."""
    return Municipality.of(config).sla.claim_seconds()


def _queue_item(h: Handoff, conv: Conversation | None, user: ConsoleUser, k: Any, now: datetime,
                extra: dict[str, Any]) -> dict[str, Any]:
    cb: CallbackTask | None = extra.get("callback")
    last: Interaction | None = extra.get("last_in")
    emergency = h.priority >= PRIORITY_EMERGENCY
    lang = extra.get("lang") or "ko"
    return {
        "id": h.id, "department": h.department, "department_name": k.department_name(h.department, "ko"),
        "priority": h.priority, "emergency": emergency, "reason": h.reason,
        "reason_name": human.reason(h.reason, k), "summary": mask_pii(h.summary or "")[:300],
        "status": h.status, "channel": conv.channel if conv else None,
        "channel_name": human.channel(conv.channel if conv else None),
        "lang": lang, "lang_name": human.lang(lang),
        "queued_at": _iso(h.queued_at), "waiting_s": int((now - as_utc(h.queued_at)).total_seconds()),
        "agent_id": h.agent_id, "agent_name": extra.get("agent_name"), "mine": h.agent_id == user.id,
        "last_message": mask_pii(last.text or "")[:120] if last is not None else "",
        "last_in_at": _iso(last.created_at) if last is not None else None,
        "last_in_id": last.id if last is not None else 0,
        "callback": None if cb is None else {
            "phone": mask_phone(cb.phone) if cb.phone else "", "due_at": _iso(cb.due_at),
            "status": cb.status, "attempts": cb.attempts, "outcome": cb.outcome,
            "outcome_name": human.OUTCOMES.get(cb.outcome or "", "")},
    }


def _queue(sessions: Any, user: ConsoleUser, k: Any) -> list[dict[str, Any]]:
    stmt = (select(Handoff, Conversation).join(Conversation, Conversation.id == Handoff.conversation_id)
            .where(Handoff.status != "closed"))
    if not user.sees_all:
        stmt = stmt.where(Handoff.department.in_(list(user.departments)))
    stmt = stmt.order_by(Handoff.priority.desc(), Handoff.queued_at, Handoff.id)
    now = utcnow()
    with sessions() as s:
        rows = [(h, c) for h, c in s.execute(stmt)]
        extra: dict[int, dict[str, Any]] = {h.id: {} for h, _c in rows}
        if rows:
            hids = [h.id for h, _c in rows]
            cids = [c.id for _h, c in rows]
            for cb in s.scalars(select(CallbackTask).where(CallbackTask.handoff_id.in_(hids))
                                .order_by(CallbackTask.id)):
                extra[cb.handoff_id]["callback"] = cb
            agent_ids = {h.agent_id for h, _c in rows if h.agent_id}
            names = {a.id: _public_name(a.display_name, a.username) for a in s.scalars(
                select(Agent).where(Agent.id.in_(agent_ids)))} if agent_ids else {}
            last_ids = (select(func.max(Interaction.id))
                        .where(Interaction.conversation_id.in_(cids), Interaction.direction == "in")
                        .group_by(Interaction.conversation_id))
            last_by_conv = {r.conversation_id: r for r in s.scalars(
                select(Interaction).where(Interaction.id.in_(last_ids)))}
            for h, c in rows:
                last = last_by_conv.get(c.id)
                extra[h.id]["last_in"] = last
                extra[h.id]["lang"] = last.lang if last is not None else None
                extra[h.id]["agent_name"] = names.get(h.agent_id) if h.agent_id else None
        return [_queue_item(h, c, user, k, now, extra[h.id]) for h, c in rows]


def _public_name(display_name: str | None, username: str) -> str:
    """The name a resident (and other agents) see: the display name, never the login id."""
    return display_name if display_name and display_name != username else "상담원"


def _phones(s: Session, resident_id: int | None) -> list[str]:
    if resident_id is None:
        return []
    rows = s.scalars(select(ChannelIdentity).where(ChannelIdentity.resident_id == resident_id)
                     .order_by(ChannelIdentity.id))
    out: list[str] = []
    for ident in rows:
        if (ident.channel == PHONE_IDENTITY or is_phone_channel(ident.channel)) and ident.external_id not in out:
            out.append(ident.external_id)
    return out


def _shared(e: dict[str, Any]) -> dict[str, Any]:
    """A shared location or photo as the history shows it (a map link for coordinates)."""
    lat, long = e.get("lat"), e.get("long")
    has_point = isinstance(lat, int | float) and isinstance(long, int | float)
    return {"kind": e.get("kind"), "address": e.get("address") or "", "url": e.get("url") or "",
            "point": f"{lat:.5f}, {long:.5f}" if has_point else "",
            "map_url": f"https://map.kakao.com/link/map/{lat},{long}" if has_point else ""}


def _notes(s: Session, handoff_id: int) -> list[dict[str, Any]]:
    rows = s.scalars(select(HandoffNote).where(HandoffNote.handoff_id == handoff_id)
                     .order_by(HandoffNote.created_at, HandoffNote.id))
    return [{"who": r.who, "at": _iso(r.created_at), "text": r.text} for r in rows]


def _suggestions(engine: Any, text: str, lang: str) -> list[dict[str, str]]:
    """Answers of the FAQ labels the NLU ranks for the resident's last message (best first)."""
    if not text.strip():
        return []
    try:
        parse = engine.parse(text, lang)
    except Exception:  # noqa: BLE001 - suggestions are a convenience
        log.warning("suggestions: parse failed", exc_info=True)
        return []
    k = engine.knowledge
    ranking = list(parse.ranking or []) or [(parse.label, parse.confidence)]
    out: list[dict[str, str]] = []
    for label, score in ranking[:8]:
        label = str(label)
        if label not in k.faq or any(o["label"] == label for o in out):
            continue
        try:
            answer = k.render(f"utter_{label.replace('.', '_')}", lang)
        except KeyError:
            continue
        if float(score) < SUGGEST_MIN_SCORE:
            break  # ranked best first: the rest are weaker still, and unrelated answers are noise
        out.append({"label": label, "title": k.label_name(label, "ko"), "text": answer})
        if len(out) == 3:
            break
    return out


def _detail(request: Request, handoff_id: int, user: ConsoleUser) -> dict[str, Any]:
    app = request.app
    k = _knowledge(request)
    tz = _tz(request)
    with app.state.sessions() as s:
        h = _load_handoff(s, handoff_id, user)
        conv = s.get_one(Conversation, h.conversation_id)
        resident = s.get(Resident, h.resident_id or conv.resident_id) if (h.resident_id or conv.resident_id) \
            else None
        rows = (interactions.history_for_resident(s, resident.id) if resident is not None
                else interactions.transcript(s, conv.id))
        timeline = [{"id": r.id, "at": _iso(r.created_at),
                     "at_local": as_utc(r.created_at).astimezone(tz).strftime("%m-%d %H:%M"),
                     "channel": r.channel, "channel_name": human.channel(r.channel),
                     "direction": r.direction, "author": _author(r),
                     "text": mask_pii(r.text or ""),
                     "label": r.label, "label_name": human.label(r.label, k) if r.direction == "in" else None,
                     "shared": [_shared(e) for e in (r.entities or [])
                                if isinstance(e, dict) and e.get("entity") == "attachment"],
                     "voicemail_url": (r.text or "")[len(VOICEMAIL):].strip()
                     if (r.text or "").startswith(VOICEMAIL) else None,
                     "this_conversation": r.conversation_id == conv.id} for r in rows]
        last_in = next((r.text for r in reversed(rows) if r.direction == "in" and r.conversation_id == conv.id
                        and (r.text or "").strip()), "")
        reqs = []
        if resident is not None:
            req_rows = s.scalars(select(ServiceRequest).where(ServiceRequest.resident_id == resident.id)
                                 .order_by(ServiceRequest.requested_datetime.desc(), ServiceRequest.id.desc()))
            for r in req_rows:
                svc = k.services.get(r.service_code)
                reqs.append({"ticket": r.service_request_id, "service_code": r.service_code,
                             "service_name": svc.name("ko") if svc else r.service_code,
                             "department": r.agency_responsible, "sub_status": r.sub_status,
                             "status_name": STATUS_NAMES.get(r.sub_status, r.sub_status),
                             "status": r.status, "notes": r.status_notes or "",
                             "address": r.address_string or "",
                             "description": r.description or "",
                             "lat": r.lat, "long": r.long, "media_url": r.media_url or "",
                             "map_url": (f"https://map.kakao.com/link/map/{r.service_request_id},{r.lat},{r.long}"
                                         if r.lat is not None and r.long is not None else None),
                             "consent": r.consent, "when": r.reported_when or "",
                             "this_conversation": r.conversation_id == conv.id,
                             "expected": (as_utc(r.expected_datetime).astimezone(tz).strftime("%Y-%m-%d")
                                          if r.expected_datetime else None),
                             "requested": as_utc(r.requested_datetime).astimezone(tz).strftime("%Y-%m-%d %H:%M"),
                             "can_update": user.can_see(r.agency_responsible)
                             and r.sub_status not in CLOSED_SUB_STATUSES})
        phones = _phones(s, resident.id if resident else None)
        channels = []
        if resident is not None:
            channels = sorted({i.channel for i in s.scalars(select(ChannelIdentity).where(
                ChannelIdentity.resident_id == resident.id)) if i.channel != PHONE_IDENTITY})
        lang = (resident.preferred_lang if resident else None) or "ko"
        last_lang = next((r.lang for r in reversed(rows) if r.direction == "in" and r.lang), None)
        lang = last_lang or lang
        cb = callback_store.for_handoff(s, h.id)
        transfer = s.scalars(select(HandoffNote).where(HandoffNote.handoff_id == h.id,
                                                       HandoffNote.text.like(f"{TRANSFER_PREFIX}%"))
                             .order_by(HandoffNote.id.desc())).first()
        agent = s.get(Agent, h.agent_id) if h.agent_id else None
        data = {
            "callback": None if cb is None else {
                "id": cb.id, "phone": mask_phone(cb.phone) if cb.phone else "", "has_phone": bool(cb.phone),
                "message": mask_pii(cb.message or ""), "status": cb.status, "attempts": cb.attempts,
                "outcome": cb.outcome, "outcome_name": human.OUTCOMES.get(cb.outcome or "", ""),
                "due_at": _iso(cb.due_at), "due_local": as_utc(cb.due_at).astimezone(tz).strftime("%m-%d %H:%M"),
                "outcomes": [{"code": c, "name": n} for c, n in human.OUTCOMES.items()]},
            "transfer": None if transfer is None else {"who": transfer.who, "text": transfer.text,
                                                       "at": _iso(transfer.created_at)},
            "handoff": {"id": h.id, "department": h.department, "reason_name": human.reason(h.reason, k),
                        "agent_name": _public_name(agent.display_name, agent.username) if agent else None,
                        "department_name": k.department_name(h.department, "ko"),
                        "priority": h.priority, "reason": h.reason, "summary": mask_pii(h.summary or ""),
                        "status": h.status, "queued_at": _iso(h.queued_at), "claimed_at": _iso(h.claimed_at),
                        "closed_at": _iso(h.closed_at), "agent_id": h.agent_id, "mine": h.agent_id == user.id,
                        "resolution_code": h.resolution_code},
            "conversation": {"id": conv.id, "channel": conv.channel, "channel_name": human.channel(conv.channel)},
            "resident": None if resident is None else {
                "id": resident.id, "preferred_lang": resident.preferred_lang, "lang": lang,
                "lang_name": human.lang(lang),
                "phones": [mask_phone(p) for p in phones], "has_phone": bool(phones),
                "channels": channels, "needs_tags": list(resident.needs_tags or []),
                "contact_consent": resident.contact_consent, "sms_opt_out": resident.sms_opt_out,
                "age_band": resident.age_band},
            "timeline": timeline,
            "requests": reqs,
            "notes": _notes(s, h.id),
        }
    recent = " ".join(m["text"] for m in data["timeline"][-12:]
                      if m["author"] == "resident" and m["this_conversation"])[-400:]
    data["suggestions"] = _suggestions(app.state.engine, last_in, lang)
    if recent and recent != last_in:  # the resident's recent words together, when the last says little
        for extra in _suggestions(app.state.engine, recent, lang):
            if all(x["label"] != extra["label"] for x in data["suggestions"]) and len(data["suggestions"]) < 4:
                data["suggestions"].append(extra)
    with app.state.sessions() as s:
        data["similar"] = assist.similar_replies(s, data["conversation"]["id"], recent or last_in)
    data["assist_summary"] = assist.paragraph(data)
    data["canned"] = _canned(h.department, lang, k, data["handoff"]["agent_name"] or user.name)
    data["departments"] = _departments(request)
    data["resolution_codes"] = [{"code": c, "name": n} for c, n in RESOLUTION_CODES.items()]
    data["statuses"] = [{"code": c, "name": STATUS_NAMES[c]} for c in SUB_STATUSES]
    return data


def _canned(department: str, lang: str, k: Any, agent: str) -> list[dict[str, str]]:
    """Canned replies in the resident's language (Korean otherwise), placeholders ({agent}, {city},
    {department}) filled, the department's own first."""
    table = CANNED_EN if lang == "en" else CANNED
    city = k.municipality.municipality.name.get(lang)
    texts = [*table.get(department, []), *table["general"]] if department != "general" else list(table["general"])
    values = {"agent": agent, "city": city, "department": k.department_name(department, lang)}
    return [{"text": t.format_map(values), "lang": "en" if lang == "en" else "ko"} for t in texts]


async def _deliver(request: Request, conv_key: str, channel: str, replies: list[Reply],
                   agent_name: str | None = None) -> bool:
    """Send ``replies`` to the resident on their channel; agent answers on web chat as ``agent`` frames."""
    app = request.app
    sender_id = conv_key[len(channel) + 1:] if conv_key.startswith(f"{channel}:") else conv_key
    if agent_name is not None and channel == "webchat":
        for r in replies:
            await app.state.live.publish(f"conv:webchat:{sender_id}",
                                         {"type": "agent", "text": r.text, "name": agent_name})
        return True
    adapter = app.state.channels.get(channel)
    if adapter is None:
        return False
    try:
        return bool(await adapter.send(sender_id, replies))
    except Exception:  # noqa: BLE001 - the message is stored; the agent sees "not delivered"
        log.exception("delivery on %s failed", channel)
        return False


def _record_out(sessions: Any, conversation_id: int, texts: list[str], handled_by: str = "bot",
                lang: str | None = None) -> None:
    with sessions.begin() as s:
        conv = s.get_one(Conversation, conversation_id)
        for text in texts:
            s.add(Interaction(conversation_id=conv.id, resident_id=conv.resident_id, channel=conv.channel,
                              direction="out", text=text, lang=lang, entities=[], handled_by=handled_by))


def _conversation_lang(request: Request, conversation_key: str) -> str:
    """The conversation's language as the dialogue keeps it (what the bot's own answers use)."""
    return request.app.state.engine.states.load(conversation_key).lang or "ko"


async def _tell_resident(request: Request, handoff_id: int, key: str, take_over: str | None = None,
                         department: str | None = None, **values: Any) -> bool:
    """Say ``key`` (nlu_data/responses.yml) to the hand-off's resident on their channel, store it as
    the bot's message, and with ``take_over`` keep the conversation with people (that department)."""
    app = request.app
    k = _knowledge(request)

    def load() -> tuple[str, str, int]:
        with app.state.sessions() as s:
            row = s.get_one(Handoff, handoff_id)
            conv = s.get_one(Conversation, row.conversation_id)
            return conv.key, conv.channel, conv.id

    conv_key, channel, conv_id = await run_in_threadpool(load)
    lang = await run_in_threadpool(_conversation_lang, request, conv_key)
    if department is not None:
        values["department"] = k.department_name(department, lang)
    if take_over is not None:
        await app.state.inbox.take_over(conv_key, take_over)  # under the conversation's lock
    text = k.render(key, lang, **values)
    await run_in_threadpool(_record_out, app.state.sessions, conv_id, [text], "bot", lang)
    delivered = await _deliver(request, conv_key, channel, [Reply(text)])
    await _publish(request, [f"handoff:{handoff_id}"], {"type": "system", "handoff_id": handoff_id, "text": text})
    return delivered


async def _agent_joined(request: Request, row: Handoff, user: ConsoleUser) -> None:
    """A person took the hand-off: the bot steps aside and the resident is told who answers."""
    name = _public_name(user.display_name, user.username)

    def key_of() -> str:
        with request.app.state.sessions() as s:
            return s.get_one(Conversation, row.conversation_id).key

    lang = await run_in_threadpool(_conversation_lang, request, await run_in_threadpool(key_of))
    if lang == "en":
        agent = f"{name}, an agent," if name != "상담원" else "An agent"
    else:
        agent = f"상담원 {name}님과" if name != "상담원" else "상담원과"
    await _tell_resident(request, row.id, "utter_agent_joined", take_over=row.department, agent=agent)


async def _publish(request: Request, topics: list[str], payload: dict[str, Any]) -> None:
    for t in topics:
        await request.app.state.live.publish(t, payload)


# --- request bodies ------------------------------------------------------------------------------

class TextBody(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_REPLY)


class NoteBody(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_NOTE)


class TransferBody(BaseModel):
    department: str = Field(min_length=1, max_length=32)
    reason: str = Field(min_length=1, max_length=200)


class ResolveBody(BaseModel):
    resolution_code: str = Field(min_length=1, max_length=64)


class StatusBody(BaseModel):
    status: str
    note: str | None = Field(default=None, max_length=1000)
    expected: str | None = Field(default=None, max_length=40, description="ISO date or datetime")


# --- login / logout ----------------------------------------------------------------------------

@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request, next: str | None = None) -> Response:  # noqa: A002
    user = await run_in_threadpool(auth.current_user, request)
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _render(request, "login.html", next=_safe_next(next), error=None, title="상담원 로그인")


@router.post("/login", include_in_schema=False)
async def login(request: Request, username: str = Form("", max_length=64), password: str = Form("", max_length=256),
                csrf_token: str = Form(""), next: str = Form("/console")) -> Response:  # noqa: A002
    auth.check_csrf(request, None, csrf_token)
    sessions = request.app.state.sessions
    ip = throttle.client_ip(request)
    lim = throttle.limiter(request.app)
    try:  # locked out: refused before the password is even checked, the right one too
        throttle.login_blocked(lim, username, ip)
        agent = await passwords.run_bounded(auth.authenticate, sessions, username, password)
    except (RateLimited, passwords.HashingBusy) as exc:
        await run_in_threadpool(_audit, sessions, username, "console.login_locked", ip)
        wait = exc.retry_after if isinstance(exc, RateLimited) else 5
        resp = _render(request, "login.html", status_code=429 if isinstance(exc, RateLimited) else 503,
                       next=_safe_next(next), username=username, title="상담원 로그인",
                       error="로그인 시도가 너무 많습니다. 잠시 후 다시 시도해 주세요. "
                             "(Too many attempts; try again later.)")
        resp.headers["Retry-After"] = str(wait)
        return resp
    if agent is None:
        throttle.login_failed(lim, username, ip)
        await run_in_threadpool(_audit, sessions, username, "console.login_failed", ip)
        return _render(request, "login.html", status_code=401, next=_safe_next(next), username=username,
                       error="아이디 또는 비밀번호가 올바르지 않습니다.", title="상담원 로그인")
    resp = RedirectResponse(_safe_next(next), status_code=303)
    token = await run_in_threadpool(auth.session_cookie_value, request, agent)
    user = await run_in_threadpool(auth.user_from_cookies, request, token)
    auth.set_cookie(resp, request, auth.SESSION_COOKIE, token)
    auth.set_cookie(resp, request, auth.CSRF_COOKIE, auth.new_csrf_token(request, user))
    await run_in_threadpool(_audit, sessions, agent.username, "console.login", ip, f"agent:{agent.id}")
    return resp


def _audit(sessions: Any, who: str, action: str, ip: str, target: str | None = None) -> None:
    """An audit row of a login event: who tried (as typed, cut to 64), from which client address."""
    with sessions.begin() as s:
        s.add(audit((who or "-")[:64], action, (target or f"client:{ip}")[:255]))


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, csrf_token: str = Form("")) -> Response:
    user = await run_in_threadpool(auth.current_user, request)
    auth.check_csrf(request, user, csrf_token)
    # The server forgets the session: the cookie is dead even if someone kept a copy.
    await run_in_threadpool(auth.end_session, request.app.state.sessions, request.cookies.get(auth.SESSION_COOKIE))
    if user is not None:
        await run_in_threadpool(_audit, request.app.state.sessions, user.username, "console.logout",
                                throttle.client_ip(request), f"agent:{user.id}")
    resp = RedirectResponse("/console/login", status_code=303)
    for path in (auth.COOKIE_PATH, "/console"):  # "/console": cookies of older versions
        resp.delete_cookie(auth.SESSION_COOKIE, path=path)
        resp.delete_cookie(auth.CSRF_COOKIE, path=path)
    return resp


# --- pages -------------------------------------------------------------------------------------

async def page_user(request: Request) -> ConsoleUser:
    """Dependency of the console's pages: the logged-in agent; a browser without a session is
    sent to the login page (and back here after it) instead of the page."""
    user = await run_in_threadpool(auth.current_user, request)
    if user is None:
        raise pages.PageResponse(_login_redirect(request))
    return user


@router.get("", response_class=HTMLResponse, include_in_schema=False)
async def queue_page(request: Request, user: ConsoleUser = Depends(page_user)) -> Response:
    items = await run_in_threadpool(_queue, request.app.state.sessions, user, _knowledge(request))
    depts = [d for d in _departments(request) if user.sees_all or d["code"] in user.departments]
    enabled = _municipality(request).enabled_channels
    return _render(request, "queue.html", user=user, items=items, title="상담 대기열",
                   sla=_sla(_municipality(request)), departments=depts,
                   channels=[(c, human.channel(c)) for c in enabled],
                   langs=[(c, human.lang(c)) for c in ("ko", "en")])


@router.get("/handoffs/{handoff_id}", response_class=HTMLResponse, include_in_schema=False)
async def handoff_page(request: Request, handoff_id: int, user: ConsoleUser = Depends(page_user)) -> Response:
    try:
        data = await run_in_threadpool(_detail, request, handoff_id, user)
    except HTTPException as exc:
        message = "이 상담을 볼 권한이 없습니다." if exc.status_code == 403 else "상담을 찾을 수 없습니다."
        return _render(request, "error.html", status_code=exc.status_code, user=user, title="접근할 수 없음",
                       message=message)
    return _render(request, "handoff.html", user=user, d=data, title=f"상담 #{handoff_id}")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    if name == "console.css":  # the console's stylesheet became the app's (bot/web/static/pcrm.css)
        return pages.stylesheet_response()
    if name not in STATIC_FILES:
        raise HTTPException(status_code=404)
    return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


# --- JSON API ----------------------------------------------------------------------------------

@router.get("/api/me", summary="The logged-in agent")
async def me(request: Request, user: ConsoleUser = Depends(require_user)) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "role": user.role, "departments": list(user.departments),
            "display_name": user.name, "capacity": capacity(_municipality(request))}


@router.get("/api/queue", summary="Open hand-offs of the agent's departments, most urgent and oldest first")
async def api_queue(request: Request, user: ConsoleUser = Depends(require_user)) -> dict[str, Any]:
    items = await run_in_threadpool(_queue, request.app.state.sessions, user, _knowledge(request))
    return {"items": items, "sla": _sla(_municipality(request))}


@router.get("/api/search", summary="Past conversations with these words (90 days, own departments)")
async def api_search(request: Request, q: str = "", user: ConsoleUser = Depends(require_user)) -> dict[str, Any]:
    words = q.strip()
    if len(words) < 2:
        raise HTTPException(status_code=422, detail="at least 2 characters")
    k = _knowledge(request)
    tz = _tz(request)

    def run() -> list[dict[str, Any]]:
        like = "%" + words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        since = utcnow() - timedelta(days=90)
        with request.app.state.sessions() as s:
            hits = s.execute(select(Interaction.conversation_id, func.max(Interaction.id))
                             .where(Interaction.created_at >= since, Interaction.direction == "in",
                                    Interaction.text.ilike(like, escape="\\"))
                             .group_by(Interaction.conversation_id)
                             .order_by(func.max(Interaction.id).desc()).limit(100)).all()
            out: list[dict[str, Any]] = []
            for cid, iid in hits:
                h = s.scalars(select(Handoff).where(Handoff.conversation_id == cid)
                              .order_by(Handoff.id.desc())).first()
                if h is None or not user.can_see(h.department):
                    continue
                msg = s.get_one(Interaction, iid)
                out.append({"handoff_id": h.id, "conversation_id": cid, "status": h.status,
                            "department_name": k.department_name(h.department, "ko"),
                            "channel_name": human.channel(msg.channel), "text": mask_pii(msg.text or "")[:160],
                            "at_local": as_utc(msg.created_at).astimezone(tz).strftime("%m-%d %H:%M")})
                if len(out) == 20:
                    break
            return out

    return {"items": await run_in_threadpool(run)}


@router.get("/api/handoffs/{handoff_id}", summary="One hand-off: summary, resident, timeline, suggestions")
async def api_handoff(request: Request, handoff_id: int, user: ConsoleUser = Depends(require_user)) -> dict[str, Any]:
    return await run_in_threadpool(_detail, request, handoff_id, user)


@router.post("/api/handoffs/{handoff_id}/claim", summary="Take a queued hand-off")
async def api_claim(request: Request, handoff_id: int,
                    user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    def run() -> tuple[Handoff, bool]:
        with request.app.state.sessions.begin() as s:
            row = _load_handoff(s, handoff_id, user)
            if row.status == "claimed" and row.agent_id == user.id:
                s.expunge(row)
                return row, False
            _check_capacity(s, request, user, row)
            claimed = handoff_store.claim(s, handoff_id, user.id)
            if claimed is None:
                raise HTTPException(status_code=409, detail="already claimed or closed")
            s.add(audit(user.username, "console.claim", f"handoff:{handoff_id}"))
            s.expunge(claimed)
            return claimed, True

    row, fresh = await run_in_threadpool(run)
    if fresh:
        await _agent_joined(request, row, user)
    payload = {"type": "claimed", "handoff_id": handoff_id, "agent": user.name, "agent_id": user.id}
    await _publish(request, [f"dept:{row.department}", f"handoff:{handoff_id}"], payload)
    return {"ok": True, "status": "claimed", "agent_id": user.id}


@router.post("/api/handoffs/{handoff_id}/reply", summary="Answer the resident on their channel")
async def api_reply(request: Request, handoff_id: int, body: TextBody,
                    user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    text = body.text.strip()
    if not text:
        raise HTTPException(status_code=422, detail="empty reply")

    def take() -> Handoff | None:
        with request.app.state.sessions.begin() as s:
            row = _load_handoff(s, handoff_id, user)
            _check_actionable(row, user)
            if row.status != "queued":
                return None
            # Answering a waiting resident takes the hand-off (and the resident is told who answers).
            _check_capacity(s, request, user, row)
            claimed = handoff_store.claim(s, handoff_id, user.id)
            if claimed is None:
                raise HTTPException(status_code=409, detail="claimed by another agent")
            s.add(audit(user.username, "console.claim", f"handoff:{handoff_id}"))
            s.expunge(claimed)
            return claimed

    taken = await run_in_threadpool(take)
    if taken is not None:
        await _agent_joined(request, taken, user)

    def run() -> tuple[str, str, str, int]:
        with request.app.state.sessions.begin() as s:
            row = _load_handoff(s, handoff_id, user)
            _check_actionable(row, user)
            conv = s.get_one(Conversation, row.conversation_id)
            out = interactions.record_agent_reply(s, conv, user.id, text)
            return conv.key, conv.channel, row.department, out.id

    key, channel, dept, interaction_id = await run_in_threadpool(run)
    delivered = await _deliver(request, key, channel, [Reply(text)], agent_name=_public_name(user.display_name,
                                                                                             user.username))
    await _publish(request, [f"handoff:{handoff_id}"],
                   {"type": "agent", "handoff_id": handoff_id, "text": text, "name": user.name})
    await _publish(request, [f"dept:{dept}"], {"type": "updated", "handoff_id": handoff_id})
    return {"ok": True, "delivered": delivered, "interaction_id": interaction_id}


@router.post("/api/handoffs/{handoff_id}/note", summary="Internal note (never shown to the resident)")
async def api_note(request: Request, handoff_id: int, body: NoteBody,
                   user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    text = body.text.strip()
    if not text:
        raise HTTPException(status_code=422, detail="empty note")

    def run() -> None:
        with request.app.state.sessions.begin() as s:
            _load_handoff(s, handoff_id, user)
            s.add(HandoffNote(handoff_id=handoff_id, who=user.username, text=text))
            s.add(audit(user.username, NOTE_ACTION, f"handoff:{handoff_id}"))

    await run_in_threadpool(run)
    await _publish(request, [f"handoff:{handoff_id}"],
                   {"type": "note", "handoff_id": handoff_id, "who": user.username, "text": text})
    return {"ok": True}


@router.post("/api/handoffs/{handoff_id}/transfer", summary="Move the hand-off to another department's queue")
async def api_transfer(request: Request, handoff_id: int, body: TransferBody,
                       user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    if body.department not in _knowledge(request).departments:
        raise HTTPException(status_code=422, detail="unknown department")

    def run() -> tuple[str, int]:
        with request.app.state.sessions.begin() as s:
            row = _load_handoff(s, handoff_id, user)
            _check_actionable(row, user)
            old = row.department
            if old == body.department:
                raise HTTPException(status_code=409, detail="already in that department")
            row.department = body.department
            row.status, row.agent_id, row.claimed_at = "queued", None, None
            conv = s.get_one(Conversation, row.conversation_id)
            conv.department = body.department
            k = _knowledge(request)
            s.add(HandoffNote(handoff_id=handoff_id, who=_public_name(user.display_name, user.username),
                              text=f"{TRANSFER_PREFIX}{k.department_name(old, 'ko')} → "
                                   f"{k.department_name(body.department, 'ko')}: {body.reason.strip()}"))
            s.add(audit(user.username, "console.transfer",
                        f"handoff:{handoff_id}|{old}->{body.department}|{body.reason}"[:255]))
            return old, row.priority

    old, priority = await run_in_threadpool(run)
    await _tell_resident(request, handoff_id, "utter_agent_transferred", department=body.department,
                         take_over=body.department)
    await _publish(request, [f"dept:{old}", f"handoff:{handoff_id}"],
                   {"type": "transferred", "handoff_id": handoff_id, "department": body.department})
    await _publish(request, [f"dept:{body.department}"],
                   {"type": "handoff", "handoff_id": handoff_id, "department": body.department,
                    "priority": priority})
    return {"ok": True, "department": body.department}


async def _close(request: Request, handoff_id: int, user: ConsoleUser, code: str, ask_rating: bool) -> dict[str, Any]:
    def run() -> tuple[str, str, int, str]:
        with request.app.state.sessions.begin() as s:
            row = _load_handoff(s, handoff_id, user)
            _check_actionable(row, user)
            handoff_store.close(s, handoff_id, code, agent_id=user.id)
            conv = s.get_one(Conversation, row.conversation_id)
            s.add(audit(user.username, "console.resolve" if ask_rating else "console.handback",
                        f"handoff:{handoff_id}|{code}"))
            return conv.key, conv.channel, conv.id, row.department

    key, channel, conv_id, dept = await run_in_threadpool(run)
    lang = await run_in_threadpool(_conversation_lang, request, key)
    replies: list[Reply] = [Reply(_knowledge(request).render("utter_agent_closed", lang))]
    replies += await request.app.state.inbox.release(key, ask_rating)  # under the conversation's lock
    delivered = True
    if replies:
        await run_in_threadpool(_record_out, request.app.state.sessions, conv_id, [r.text for r in replies])
        delivered = await _deliver(request, key, channel, replies)
    payload = {"type": "closed", "handoff_id": handoff_id, "resolution_code": code}
    await _publish(request, [f"dept:{dept}", f"handoff:{handoff_id}"], payload)
    return {"ok": True, "status": "closed", "resolution_code": code, "delivered": delivered,
            "sent": [r.text for r in replies]}


@router.post("/api/handoffs/{handoff_id}/resolve", summary="Close with a resolution code; the bot asks for a rating")
async def api_resolve(request: Request, handoff_id: int, body: ResolveBody,
                      user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    if body.resolution_code not in RESOLUTION_CODES:
        raise HTTPException(status_code=422, detail=f"resolution_code must be one of {list(RESOLUTION_CODES)}")
    return await _close(request, handoff_id, user, body.resolution_code, ask_rating=True)


@router.post("/api/handoffs/{handoff_id}/handback", summary="Give the conversation back to the bot (no rating)")
async def api_handback(request: Request, handoff_id: int,
                       user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    return await _close(request, handoff_id, user, "handback", ask_rating=False)


@router.post("/api/handoffs/{handoff_id}/reveal", summary="Show the resident's phone number (audited)")
async def api_reveal(request: Request, handoff_id: int,
                     user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    def run() -> list[str]:
        with request.app.state.sessions.begin() as s:
            row = _load_handoff(s, handoff_id, user)
            conv = s.get_one(Conversation, row.conversation_id)
            rid = row.resident_id or conv.resident_id
            phones = _phones(s, rid)
            s.add(audit(user.username, "console.reveal_phone", f"resident:{rid}|handoff:{handoff_id}"))
            return phones

    return {"phones": await run_in_threadpool(run)}


class OutcomeBody(BaseModel):
    outcome: str = Field(min_length=1, max_length=16)


def _callback_of(s: Session, handoff_id: int, user: ConsoleUser) -> tuple[Handoff, CallbackTask]:
    row = _load_handoff(s, handoff_id, user)
    task = callback_store.for_handoff(s, handoff_id)
    if task is None:
        raise HTTPException(status_code=404, detail="no call-back on this hand-off")
    if not user.sees_all and row.agent_id != user.id:
        raise HTTPException(status_code=409, detail="take the hand-off first: the number is for its agent")
    return row, task


@router.post("/api/handoffs/{handoff_id}/callback/reveal", summary="The call-back number in full (audited)")
async def api_callback_reveal(request: Request, handoff_id: int,
                              user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    def run() -> str:
        with request.app.state.sessions.begin() as s:
            _row, task = _callback_of(s, handoff_id, user)
            s.add(audit(user.username, "console.reveal_callback", f"callback:{task.id}|handoff:{handoff_id}"))
            return task.phone

    return {"phone": await run_in_threadpool(run)}


@router.post("/api/handoffs/{handoff_id}/callback/outcome",
             summary="Record a call-back attempt (reached / no_answer / retry); the resident is told")
async def api_callback_outcome(request: Request, handoff_id: int, body: OutcomeBody,
                               user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    if body.outcome not in callback_store.OUTCOMES:
        raise HTTPException(status_code=422, detail=f"outcome must be one of {list(callback_store.OUTCOMES)}")

    def run() -> tuple[str, dict[str, Any]]:
        with request.app.state.sessions.begin() as s:
            row, task = _callback_of(s, handoff_id, user)
            if row.status == "closed":
                raise HTTPException(status_code=409, detail="hand-off is closed")
            if task.status == "done":
                raise HTTPException(status_code=409, detail="call-back already done")
            callback_store.attempt(s, task, body.outcome, user.id)
            s.add(audit(user.username, "console.callback_attempt", f"callback:{task.id}|{body.outcome}"))
            return row.department, {"status": task.status, "attempts": task.attempts, "outcome": task.outcome,
                                    "outcome_name": human.OUTCOMES[body.outcome]}

    dept, result = await run_in_threadpool(run)
    key = "utter_callback_reached" if body.outcome == "reached" else "utter_callback_no_answer"
    told = await _tell_resident(request, handoff_id, key, department=dept)
    await _publish(request, [f"dept:{dept}", f"handoff:{handoff_id}"],
                   {"type": "callback", "handoff_id": handoff_id, **result})
    return {"ok": True, "notified": told, **result}


_ORDER = {"received": 0, "assigned": 1, "in_progress": 2, "resolved": 3, "rejected": 3}


def _parse_expected(value: str | None, tz: ZoneInfo) -> datetime | None:
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(datetime.fromisoformat(value).date(), time(18, 0), tzinfo=tz)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(status_code=422, detail="expected must be an ISO date (YYYY-MM-DD)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


@router.post("/api/requests/{ticket}/status", summary="Move a service request along; the resident is told")
async def api_request_status(request: Request, ticket: str, body: StatusBody,
                             user: ConsoleUser = Depends(api_user_with_csrf)) -> dict[str, Any]:
    if body.status not in SUB_STATUSES:
        raise HTTPException(status_code=422, detail=f"status must be one of {list(SUB_STATUSES)}")
    note = (body.note or "").strip() or None
    if body.status in CLOSED_SUB_STATUSES and not note:
        raise HTTPException(status_code=422, detail="resolving or rejecting needs a note")
    tz = _tz(request)
    expected = _parse_expected(body.expected, tz)
    if expected is not None and expected < utcnow() - timedelta(days=1):
        raise HTTPException(status_code=422, detail="expected date is in the past")
    sessions = request.app.state.sessions

    def check() -> None:
        with sessions() as s:
            row = s.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == ticket)).first()
            if row is None:
                raise HTTPException(status_code=404, detail="no such request")
            if not user.can_see(row.agency_responsible):
                raise HTTPException(status_code=403, detail="request of another department")
            if row.sub_status in CLOSED_SUB_STATUSES or _ORDER[body.status] <= _ORDER[row.sub_status]:
                raise HTTPException(status_code=409, detail=f"cannot move from {row.sub_status} to {body.status}")

    await run_in_threadpool(check)
    rec = await run_in_threadpool(SqlRequestStore(sessions).update_status, ticket, body.status, note, expected)
    if rec is None:
        raise HTTPException(status_code=404, detail="no such request")
    k = _knowledge(request)

    def notice() -> tuple[str | None, str | None, int | None, str]:
        with sessions.begin() as s:
            row = s.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == ticket)).one()
            lang = row.lang or "ko"
            svc = k.services.get(row.service_code)
            text = k.render("utter_status", lang, ticket=row.service_request_id,
                            service=svc.name(lang) if svc else row.service_code,
                            status=k.render(f"status_{row.sub_status}", lang),
                            department=k.department_name(row.agency_responsible, lang),
                            updated=as_utc(row.updated_datetime).astimezone(tz).strftime("%Y-%m-%d %H:%M"),
                            expected=(as_utc(row.expected_datetime).astimezone(tz).strftime("%Y-%m-%d")
                                      if row.expected_datetime else "-"))
            if note:
                text += ("\n- Note: " if lang == "en" else "\n- 안내: ") + note
            s.add(audit(user.username, "console.request_status", f"request:{ticket}|{body.status}"))
            conv = s.get(Conversation, row.conversation_id) if row.conversation_id else None
            if conv is None:
                return None, None, None, text
            s.add(Interaction(conversation_id=conv.id, resident_id=conv.resident_id, channel=conv.channel,
                              direction="out", text=text, lang=lang, entities=[], handled_by="bot"))
            return conv.key, conv.channel, conv.id, text

    key, channel, _conv_id, text = await run_in_threadpool(notice)
    delivered = await _deliver(request, key, channel, [Reply(text)]) if key and channel else False
    return {"ok": True, "ticket": ticket, "sub_status": rec.sub_status, "status": rec.status,
            "notified": delivered, "text": text}


# --- live updates ------------------------------------------------------------------------------

def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    if not origin:
        return True  # non-browser clients; the session cookie still has to be valid
    return urlsplit(origin).netloc == ws.headers.get("host", "")


@router.websocket("/ws")
async def console_socket(ws: WebSocket) -> None:
    user = await run_in_threadpool(auth.user_from_cookies, ws, ws.cookies.get(auth.SESSION_COOKIE))
    if user is None or not _same_origin(ws):
        await ws.close(code=4401 if user is None else 4403)
        return
    await ws.accept()
    live = ws.app.state.live
    lock = asyncio.Lock()
    k = ws.app.state.engine.knowledge
    depts = list(k.departments) if user.sees_all else list(user.departments)

    async def emit(frame: dict[str, Any]) -> None:
        async with lock:
            if ws.client_state == WebSocketState.CONNECTED:
                await ws.send_text(json.dumps(frame, ensure_ascii=False))

    async def pump(topics: list[str]) -> None:
        try:
            async with live.subscribe(*topics) as stream:
                await emit({"type": "ready", "topics": topics})
                async for topic, payload in stream:
                    if not isinstance(payload, dict):
                        continue
                    frame = dict(payload)
                    if isinstance(frame.get("text"), str) and frame.get("type") == "message":
                        frame["text"] = mask_pii(frame["text"])
                    frame["topic"] = topic
                    await emit(frame)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a closed socket ends the pump
            log.debug("console pump stopped", exc_info=True)

    def can_watch(handoff_id: int) -> bool:
        with ws.app.state.sessions() as s:
            row = s.get(Handoff, handoff_id)
            return row is not None and user.can_see(row.department)

    tasks = [asyncio.create_task(pump([f"dept:{d}" for d in depts]))] if depts else []
    watch: asyncio.Task[None] | None = None
    try:
        while True:
            raw = await ws.receive_text()
            try:
                msg = json.loads(raw)
            except ValueError:
                await emit({"type": "error", "reason": "malformed JSON"})
                continue
            if not isinstance(msg, dict) or msg.get("type") != "watch" or not isinstance(msg.get("handoff_id"), int):
                await emit({"type": "error", "reason": "expected {\"type\": \"watch\", \"handoff_id\": N}"})
                continue
            hid = msg["handoff_id"]
            if not await run_in_threadpool(can_watch, hid):
                await emit({"type": "error", "reason": "forbidden", "handoff_id": hid})
                continue
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watch
            watch = asyncio.create_task(pump([f"handoff:{hid}"]))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        for t in [*tasks, *([watch] if watch else [])]:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
