"""Web chat channel: a WebSocket for the embeddable widget, its history and its files.

Routes:

* ``WS  /webchat/ws?lang=ko|en`` with the session key in ``Sec-WebSocket-Protocol``
  (``pcrm-webchat, pcrm-key.<key>``; :mod:`bot.webchat_keys`) – the conversation.  Client frames
  ``{"type": "message", "text": "...", "id"?: "..."}`` and
  ``{"type": "location", "lat": .., "long": .., "address"?: "..."}``; server frames
  ``{"type": "typing"}``, then one ``{"type": "bot", "text", "buttons", "hints"}`` per
  reply, ``{"type": "agent", "text"}`` when a person answers from the console, and
  ``{"type": "error", "reason"}`` for a frame it could not use (the socket stays open).
* ``GET /webchat/history`` with ``X-Webchat-Key: <key>`` – the last 50 messages of that
  session's conversation, so the widget can redraw after a reload.
* ``GET /webchat/widget.js`` and ``/webchat/widget.css`` – the widget (one script tag);
  ``/webchat/home.css`` – the look of the demo home page (``GET /``, :mod:`bot.web.home`).

The session id is the browser's identity of the resident (``sender_id``), so the
dialogue state (key ``webchat:<session>``) survives reconnects and reloads. It is a digest of
the key the widget keeps, so only the browser holding the key can open the conversation, read
its history or link it to a phone number; a session id seen in a log or the console cannot.  Pushes
(agent answers, :meth:`WebChatChannel.send`) travel over the live topic
``conv:webchat:<session>``; every socket of that session forwards them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Header, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect, WebSocketState

from bot.messages import Attachment, Message, Reply, new_id
from bot.ports import ChannelPort
from bot.ratelimit import RateLimited
from bot.security_headers import json_too_deep
from bot.webchat_keys import KEY_HEADER, SUBPROTOCOL, key_from_protocols, session_of
from channels.base import ChannelAdapter

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger("pcrm.webchat")

STATIC = Path(__file__).resolve().parent / "static"
SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
SESSION_RULE = "send the session key (Sec-WebSocket-Protocol pcrm-key.<key>, or the X-Webchat-Key header)"
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
MAX_TEXT = 5000
MAX_FRAME_CHARS = 64 * 1024
HISTORY_LIMIT = 50
CLOSE_BAD_REQUEST = 4400
#: Payload types of the live topic that are forwarded to the browser.
FORWARDED = {"agent", "bot"}


def topic_of(session: str) -> str:
    """Live topic of one web chat session."""
    return f"conv:webchat:{session}"


def bot_frame(reply: Reply, reply_to: str | None = None) -> dict[str, Any]:
    """A reply as the widget draws it."""
    frame: dict[str, Any] = {
        "type": "bot",
        "text": reply.text,
        "buttons": [{"title": b.title, "payload": b.payload} for b in reply.buttons],
        "hints": dict(reply.hints),
    }
    if reply_to:
        frame["reply_to"] = reply_to
    return frame


def _push_frame(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A live-topic payload as a socket frame, keeping only the fields the widget knows."""
    kind = payload.get("type")
    if kind not in FORWARDED or not isinstance(payload.get("text"), str):
        return None
    frame: dict[str, Any] = {"type": kind, "text": payload["text"]}
    if kind == "bot":
        buttons = payload.get("buttons") or []
        frame["buttons"] = [{"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))}
                            for b in buttons if isinstance(b, dict)]
        frame["hints"] = payload.get("hints") if isinstance(payload.get("hints"), dict) else {}
    elif isinstance(payload.get("name"), str):
        frame["name"] = payload["name"][:64]
    return frame


class FrameError(ValueError):
    """A client frame the channel cannot use; its message goes back as the error reason."""


def _number(value: Any, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise FrameError(f"{what} must be a number between {low:g} and {high:g}")
    return float(value)


class WebChatChannel(ChannelAdapter):
    """The browser widget's channel."""

    name = "webchat"

    def __init__(self, inbox: ChannelPort, settings: Settings) -> None:
        super().__init__(inbox, settings)

    # --- frames -> messages ------------------------------------------------------------------
    def parse_frame(self, raw: str, session: str, lang: str | None) -> Message:
        """One client frame as a :class:`Message`; :class:`FrameError` when it is malformed."""
        if len(raw) > MAX_FRAME_CHARS:
            raise FrameError("frame too large")
        if json_too_deep(raw.encode("utf-8", "surrogatepass")):  # json.loads would recurse into it
            raise FrameError("JSON nested too deeply")
        try:
            data = json.loads(raw)
        except ValueError:
            raise FrameError("malformed JSON") from None
        if not isinstance(data, dict):
            raise FrameError("a frame must be a JSON object")
        kind = data.get("type")
        frame_lang = data.get("lang")
        if frame_lang is not None:
            if frame_lang not in ("ko", "en"):
                raise FrameError("lang must be 'ko' or 'en'")
            lang = frame_lang
        client_id = data.get("id")
        if client_id is not None and (not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id)):
            raise FrameError("id must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'")
        # Delivery ids are unique per channel, so a client's id is namespaced by its session.
        message_id = f"{session}:{client_id}" if client_id else new_id()
        if kind == "message":
            text = data.get("text")
            if not isinstance(text, str):
                raise FrameError("text must be a string")
            if len(text) > MAX_TEXT:
                raise FrameError(f"text longer than {MAX_TEXT} characters")
            if not text.strip():
                raise FrameError("text is empty")
            if "\x00" in text:  # PostgreSQL text cannot hold it
                raise FrameError("text must not contain NUL (U+0000) characters")
            return Message(channel=self.name, sender_id=session, text=text, lang=lang,  # type: ignore[arg-type]
                           message_id=message_id)
        if kind == "location":
            lat = _number(data.get("lat"), -90, 90, "lat")
            long = _number(data.get("long"), -180, 180, "long")
            address = data.get("address")
            if address is not None and (not isinstance(address, str) or len(address) > 300):
                raise FrameError("address must be a string of at most 300 characters")
            att = Attachment(kind="location", lat=lat, long=long, address=address or None)
            return Message(channel=self.name, sender_id=session, text="", lang=lang,  # type: ignore[arg-type]
                           attachments=[att], message_id=message_id)
        raise FrameError("type must be 'message' or 'location'")

    # --- pushes ------------------------------------------------------------------------------
    async def send(self, recipient_id: str, replies: list[Reply]) -> bool:
        """Push replies to every open socket of session ``recipient_id``."""
        if not SESSION_RE.match(recipient_id or ""):
            return False
        for reply in replies:
            await self.inbox.publish(topic_of(recipient_id), bot_frame(reply))
        return True

    # --- routes ------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        r = APIRouter(tags=["webchat"])

        @r.websocket("/webchat/ws")
        async def socket(ws: WebSocket) -> None:
            await self._serve_socket(ws)

        @r.get("/webchat/history", summary="Last messages of a web chat session (for redraw after reload)")
        async def history(request: Request,
                          x_webchat_key: str = Header("", max_length=100,
                                                      description="The session key the widget keeps")) -> JSONResponse:
            headers = {"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"}
            try:
                session = session_of(x_webchat_key)
            except ValueError:
                return JSONResponse({"detail": SESSION_RULE}, status_code=400, headers=headers)
            messages = await run_in_threadpool(self.inbox.history, f"{self.name}:{session}", HISTORY_LIMIT)
            return JSONResponse({"session": session, "messages": messages}, headers=headers)

        @r.options("/webchat/history", include_in_schema=False)
        async def history_preflight() -> Response:
            return Response(status_code=204, headers={
                "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET",
                "Access-Control-Allow-Headers": KEY_HEADER, "Access-Control-Max-Age": "600"})

        @r.get("/webchat/widget.js", include_in_schema=False)
        async def widget_js() -> FileResponse:
            return FileResponse(STATIC / "widget.js", media_type="text/javascript; charset=utf-8",
                                headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"})

        @r.get("/webchat/home.css", include_in_schema=False)
        async def home_css() -> FileResponse:
            return FileResponse(STATIC / "home.css", media_type="text/css; charset=utf-8",
                                headers={"Cache-Control": "no-cache"})

        @r.get("/webchat/widget.css", include_in_schema=False)
        async def widget_css() -> FileResponse:
            return FileResponse(STATIC / "widget.css", media_type="text/css; charset=utf-8",
                                headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"})

        return r

    async def _serve_socket(self, ws: WebSocket) -> None:
        offered = ws.headers.get("sec-websocket-protocol")
        lang_param = ws.query_params.get("lang")
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in (offered or "") else None)
        try:
            session = session_of(key_from_protocols(offered) or "")
        except ValueError:  # a session id alone (old widgets, someone else's id) opens nothing
            await ws.close(code=CLOSE_BAD_REQUEST, reason=SESSION_RULE[:120])
            return
        if lang_param not in (None, "", "ko", "en"):
            await ws.close(code=CLOSE_BAD_REQUEST, reason="lang must be 'ko' or 'en'")
            return
        lang = lang_param or None
        send_lock = asyncio.Lock()

        async def emit(frame: dict[str, Any]) -> None:
            async with send_lock:
                if ws.client_state == WebSocketState.CONNECTED:
                    await ws.send_text(json.dumps(frame, ensure_ascii=False))

        async with self.inbox.subscribe(topic_of(session)) as stream:
            forwarder = asyncio.create_task(self._forward(stream, emit))
            try:
                await self._read_loop(ws, session, lang, emit)
            except WebSocketDisconnect:
                pass
            finally:
                forwarder.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await forwarder

    async def _forward(self, stream: Any, emit: Any) -> None:
        """Live-topic payloads (agent answers, pushes) to this socket."""
        try:
            async for _topic, payload in stream:
                frame = _push_frame(payload) if isinstance(payload, dict) else None
                if frame is not None:
                    await emit(frame)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a dead socket or a broken bus ends only the forwarding
            log.debug("web chat forwarding stopped", exc_info=True)

    async def _read_loop(self, ws: WebSocket, session: str, lang: str | None, emit: Any) -> None:
        while True:
            event = await ws.receive()
            if event["type"] == "websocket.disconnect":
                return
            raw = event.get("text")
            if raw is None:
                await emit({"type": "error", "reason": "binary frames are not supported; send JSON text"})
                continue
            try:
                message = self.parse_frame(raw, session, lang)
            except FrameError as exc:
                await emit({"type": "error", "reason": str(exc)})
                continue
            if message.lang:
                lang = message.lang
            client_id = message.message_id.split(":", 1)[1] if ":" in message.message_id else None
            await emit({"type": "typing", **({"id": client_id} if client_id else {})})
            try:
                turn = await self.inbox.receive(message)
            except RateLimited:  # a polite "잠시 후 다시" instead of a 429
                text = self.inbox.say("utter_rate_limited", lang or "ko")
                await emit(bot_frame(Reply(text, hints={"rate_limited": True}), client_id))
                continue
            except Exception:  # noqa: BLE001 - the engine already apologises; this is the last net
                log.exception("web chat turn failed")
                await emit({"type": "error", "reason": "internal error; please try again"})
                continue
            for reply in turn.replies:
                await emit(bot_frame(reply, client_id))
