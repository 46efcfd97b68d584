"""Telegram channel on python-telegram-bot 22: ``POST /webhooks/telegram``.

Telegram posts one ``Update`` per request with the secret given at
``setWebhook`` in ``X-Telegram-Bot-Api-Secret-Token``. An update becomes one
:class:`Message` (text, shared location, photo, own contact, button press or a
command), goes through the channel port (the inbox), and the replies are sent with PTB's
``Bot`` before the webhook answers ``{"ok": true}``.

``update_id`` is the delivery id: a redelivered update is stored once and its
replies are not sent twice. Sending respects ``429 retry_after`` (bounded) and a
``403`` (the resident blocked the bot) marks the identity unreachable.

``pcrm telegram set-webhook`` registers the webhook; ``pcrm telegram poll``
feeds ``getUpdates`` through the same path for development without a public URL.

python-telegram-bot (≈ 0.2 CPU s to import) is imported where it is used, so a deployment
without Telegram never loads it; ``pcrm serve`` imports it before forking when a token is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import mimetypes
import re
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from bot.messages import Attachment, Message, Reply, Turn
from bot.ports import ChannelPort, Reachability
from channels.base import ChannelAdapter

if TYPE_CHECKING:
    from telegram import Bot, Update
    from telegram.error import RetryAfter

    from bot.settings import Settings

log = logging.getLogger("pcrm.channels.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_TEXT = 4096  # Bot API limit of one message
MAX_CALLBACK_BYTES = 64  # Bot API limit of callback_data
_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

#: Buttons of the reply keyboard shown when the bot asks where something is.
_KEYBOARD = {
    "ko": ("📍 현재 위치 보내기", "📞 내 연락처 공유"),
    "en": ("📍 Send my location", "📞 Share my contact"),
}


class _Blocked(Exception):
    """The resident blocked the bot (403): stop sending to them."""


class _Bounded(OrderedDict):
    """An insertion-ordered dict that forgets its oldest keys beyond ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def _lang(code: str | None) -> str | None:
    if not code:
        return None
    return "ko" if code.lower().startswith("ko") else "en"


def _retry_seconds(exc: RetryAfter) -> float:
    """``RetryAfter.retry_after`` in seconds (an int today, a timedelta with PTB_TIMEDELTA=true)."""
    from telegram.warnings import PTBDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramChannel(ChannelAdapter):
    name = "telegram"

    #: At most this many retries after a 429, each waiting at most ``max_retry_wait`` seconds.
    max_retries = 3
    max_retry_wait = 30.0

    def __init__(self, inbox: ChannelPort, settings: Settings,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 file_access: Callable[[Request, str], int] | None = None) -> None:
        super().__init__(inbox, settings)
        self._sleep = sleep
        #: Who may fetch a resident's file: the web app's rule (staff of the owning department, or a
        #: signed URL: bot/media_access.py), given by whoever mounts the channel. None: nobody (401).
        self.file_access = file_access
        self._bot: Bot | None = None
        self._bot_lock = asyncio.Lock()
        self._callbacks: _Bounded = _Bounded(20000)  # short callback id -> long payload
        self._delivered: _Bounded = _Bounded(20000)  # update ids whose replies went out

    # --- the Bot ------------------------------------------------------------------------------
    def make_bot(self) -> Bot:
        """A PTB Bot on ``TELEGRAM_API_BASE_URL`` (a fake Bot API in tests, a proxy, or Telegram)."""
        token = self.settings.telegram_bot_token
        if not token:
            raise RuntimeError("TELEGRAM_BOT_TOKEN is not set")
        from telegram import Bot
        from telegram.request import HTTPXRequest

        base = self.settings.telegram_api_base_url.rstrip("/")
        return Bot(token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot",
                   request=HTTPXRequest(connection_pool_size=32, read_timeout=15.0, connect_timeout=5.0))

    async def bot(self) -> Bot:
        """The adapter's Bot, created and initialised (``getMe``) on first use."""
        if self._bot is None:
            async with self._bot_lock:
                if self._bot is None:
                    bot = self.make_bot()
                    await bot.initialize()
                    self._bot = bot
        return self._bot

    # --- inbound ------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        r = APIRouter(tags=["channels"])

        @r.post("/webhooks/telegram", summary="Telegram Bot API webhook")
        async def webhook(request: Request) -> JSONResponse:
            expected = self.settings.telegram_webhook_secret or ""
            given = request.headers.get(SECRET_HEADER, "")
            if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
                return JSONResponse({"ok": False, "detail": "bad or missing secret token"}, status_code=403)
            if not self.settings.telegram_bot_token:
                # Not configured here: the route does not exist for this deployment (no 5xx to fuzzers).
                return JSONResponse({"ok": False, "detail": "Telegram channel not configured (TELEGRAM_BOT_TOKEN)"},
                                    status_code=404)
            try:
                data = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
                return JSONResponse({"ok": False, "detail": "body is not JSON"}, status_code=400)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                return JSONResponse({"ok": False, "detail": "not a Telegram Update: no integer update_id"},
                                    status_code=400)
            from telegram import Update

            try:
                upd = Update.de_json(data, await self.bot())
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                return JSONResponse({"ok": False, "detail": f"malformed Update: {exc}"}, status_code=400)
            await self.process_update(upd)
            return JSONResponse({"ok": True})

        @r.get("/webhooks/telegram/file/{file_id}", summary="A file a resident sent (staff of its department, "
               "or a signed URL)", responses={401: {"description": "login required"},
                                              403: {"description": "another department's file"}})
        async def file(request: Request, file_id: str) -> Response:
            # Proxied rather than redirected: Telegram's file URL contains the bot token.
            if not _FILE_ID.match(file_id):
                raise HTTPException(404, "no such file")
            allowed = await run_in_threadpool(self.file_access, request, file_id) \
                if self.file_access is not None else 401
            if allowed != 200:
                raise HTTPException(allowed, "login required" if allowed == 401 else "another department's file")
            if not self.settings.telegram_bot_token:
                raise HTTPException(404, "Telegram channel not configured (TELEGRAM_BOT_TOKEN)")
            from telegram.error import TelegramError

            try:
                tg_file = await (await self.bot()).get_file(file_id)
                content = bytes(await tg_file.download_as_bytearray())
            except TelegramError as exc:
                raise HTTPException(404, "no such file") from exc
            media = mimetypes.guess_type(tg_file.file_path or "")[0] or "application/octet-stream"
            return Response(content, media_type=media, headers={"Cache-Control": "private, no-store"})

        return r

    async def process_update(self, upd: Update) -> None:
        """One update: to a message, through the inbox, replies out. Used by webhook and polling."""
        from telegram.error import TelegramError

        bot = await self.bot()
        cq = upd.callback_query
        if cq is not None:
            try:
                await bot.answer_callback_query(cq.id)
            except TelegramError:  # an old query (>15 min) can no longer be answered; the press counts
                log.info("could not answer callback query %s", cq.id)
        msg = await self.to_message(upd)
        if msg is None:
            return
        key = msg.message_id
        if msg.metadata.get("command") == "/help":  # answered from the responses, not a dialogue turn
            if key not in self._delivered:
                lang = await run_in_threadpool(self._conversation_lang, msg.sender_id) or msg.lang or "ko"
                if await self._send_replies(msg.sender_id, [Reply(self._render("utter_help", lang))], lang):
                    self._delivered[key] = True
            return
        turn = await self.inbox.receive(msg)
        await self._set_reachable(msg.sender_id, True)  # they wrote: whatever blocked them before, not now
        if turn.label == "duplicate" and (key in self._delivered or not turn.replies):
            return  # the first delivery answered already
        if await self._send_turn(msg.sender_id, turn):
            self._delivered[key] = True

    async def to_message(self, upd: Update) -> Message | None:
        """The channel-neutral message of an update; None for updates we don't handle."""
        cq = upd.callback_query
        tg_msg = upd.message or upd.edited_message
        user = upd.effective_user
        chat = upd.effective_chat
        if cq is not None:
            chat_id = cq.message.chat.id if cq.message is not None else cq.from_user.id
            data = cq.data or ""
            text = self._callbacks.get(data, data)
            return self._message(upd, chat_id, text, user.language_code if user else None)
        if tg_msg is None or chat is None:
            return None
        lang = user.language_code if user else None
        text = (tg_msg.text or tg_msg.caption or "").replace("\x00", "")  # PostgreSQL cannot store NUL
        attachments: list[Attachment] = []
        if tg_msg.location is not None:
            loc = tg_msg.location
            venue = tg_msg.venue
            attachments.append(Attachment(kind="location", lat=loc.latitude, long=loc.longitude,
                                          address=venue.address if venue else None))
        if tg_msg.photo:
            largest = max(tg_msg.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
            url = f"{self.settings.pcrm_public_url.rstrip('/')}/webhooks/telegram/file/{largest.file_id}"
            attachments.append(Attachment(kind="photo", file_id=largest.file_id, url=url))
        contact = tg_msg.contact
        if contact is not None and user is not None and contact.user_id == user.id and contact.phone_number:
            phone = contact.phone_number
            if phone.isdigit():  # Telegram sends international numbers without the '+'
                phone = "+" + phone
            attachments.append(Attachment(kind="contact", phone=phone))
        message = self._message(upd, chat.id, text, lang, attachments)
        if text.startswith("/") and not attachments:
            command = text.split()[0].split("@")[0].lower()
            message.metadata["command"] = command
            message.text = await self._command(command, text, chat.id, _lang(lang))
        return message

    def _message(self, upd: Update, chat_id: int, text: str, lang_code: str | None,
                 attachments: list[Attachment] | None = None) -> Message:
        return Message(channel=self.name, sender_id=str(chat_id), text=text, lang=_lang(lang_code),  # type: ignore[arg-type]
                       attachments=attachments or [], message_id=f"tg:{upd.update_id}",
                       metadata={"update_id": upd.update_id})

    async def _command(self, command: str, text: str, chat_id: int, lang: str | None) -> str:
        """Bot commands as the text the engine understands (/help is answered directly).

        /start greets, /lang toggles the language (the engine switches on "English" /
        "한국어"), /human asks for a person ("/conv.human" is a button payload).
        Unknown commands pass through unchanged.
        """
        if command == "/start":
            return "Hello" if lang == "en" else "안녕하세요"
        if command == "/lang":
            current = await run_in_threadpool(self._conversation_lang, str(chat_id))
            return "한국어" if (current or lang) == "en" else "English"
        if command == "/human":
            return "/conv.human"
        return text

    def _render(self, key: str, lang: str) -> str:
        return self.inbox.say(key, lang)

    def _conversation_lang(self, sender_id: str) -> str | None:
        return self.inbox.conversation_lang(f"{self.name}:{sender_id}")

    # --- outbound -----------------------------------------------------------------------------
    async def send(self, recipient_id: str, replies: list[Reply]) -> bool:
        """Push replies (an agent's answer, a status change). False when not (all) delivered."""
        return await self._send_replies(recipient_id, replies, "ko")

    async def _send_turn(self, chat_id: str, turn: Turn) -> bool:
        return await self._send_replies(chat_id, turn.replies, turn.lang)

    async def _send_replies(self, chat_id: str, replies: list[Reply], lang: str) -> bool:
        try:
            for reply in replies:
                for kwargs in self.render(reply, lang):
                    if not await self._call(chat_id, kwargs):
                        return False
        except _Blocked:
            await self._set_reachable(chat_id, False)
            return False
        return True

    async def _call(self, chat_id: str, kwargs: dict[str, Any]) -> bool:
        """One ``sendMessage``, retrying after 429 as Telegram asks (bounded)."""
        from telegram.error import Forbidden, RetryAfter, TelegramError

        bot = await self.bot()
        for attempt in range(self.max_retries + 1):
            try:
                await bot.send_message(chat_id=int(chat_id), **kwargs)
                return True
            except RetryAfter as exc:
                wait = _retry_seconds(exc)
                if attempt == self.max_retries or wait > self.max_retry_wait:
                    log.warning("telegram flood limit: giving up after %d retries (retry_after=%ss)",
                                attempt, wait)
                    return False
                await self._sleep(wait)
            except Forbidden as exc:
                log.info("telegram chat %s is unreachable: %s", chat_id, exc.message)
                raise _Blocked from exc
            except TelegramError:
                log.exception("telegram sendMessage failed for chat %s", chat_id)
                return False
        return False

    def render(self, reply: Reply, lang: str) -> list[dict[str, Any]]:
        """``sendMessage`` arguments for one reply (several when the text is over 4096 chars)."""
        from telegram import InlineKeyboardButton, InlineKeyboardMarkup, KeyboardButton, ReplyKeyboardMarkup

        text = reply.text or " "
        if reply.hints.get("emergency"):
            text = "🚨 " + text
        chunks = [text[i:i + MAX_TEXT] for i in range(0, len(text), MAX_TEXT)]
        markup: Any = None
        if reply.buttons:
            markup = InlineKeyboardMarkup(
                [[InlineKeyboardButton(b.title[:64], callback_data=self._callback_data(b.payload))]
                 for b in reply.buttons])
        elif reply.hints.get("request_location"):
            loc, contact = _KEYBOARD["en" if lang == "en" else "ko"]
            markup = ReplyKeyboardMarkup([[KeyboardButton(loc, request_location=True)],
                                          [KeyboardButton(contact, request_contact=True)]],
                                         resize_keyboard=True, one_time_keyboard=True)
        elif isinstance(reply.hints.get("link"), str) and reply.hints["link"].startswith("https://"):
            markup = InlineKeyboardMarkup([[InlineKeyboardButton("🔗", url=reply.hints["link"])]])
        out: list[dict[str, Any]] = [{"text": c} for c in chunks]
        if markup is not None:
            out[-1]["reply_markup"] = markup
        return out

    def _callback_data(self, payload: str) -> str:
        """The payload itself when it fits 64 bytes, else a short id remembered in memory."""
        if len(payload.encode()) <= MAX_CALLBACK_BYTES:
            return payload
        short = "cb:" + hashlib.sha256(payload.encode()).hexdigest()[:24]
        self._callbacks[short] = payload
        return short

    # --- reachability -------------------------------------------------------------------------
    async def _set_reachable(self, chat_id: str, reachable: bool) -> None:
        try:
            await self.inbox.note(Reachability(self.name, chat_id, reachable))
        except Exception:  # noqa: BLE001 - reachability is advisory; never fail a delivery over it
            log.exception("could not update reachability of a telegram identity")


# --- command line ---------------------------------------------------------------------------------

async def set_webhook(settings: Settings) -> str:
    """Register ``PCRM_PUBLIC_URL/webhooks/telegram`` with the secret token; returns the URL."""
    if not settings.telegram_webhook_secret:
        raise RuntimeError("TELEGRAM_WEBHOOK_SECRET is not set")
    url = f"{settings.pcrm_public_url.rstrip('/')}/webhooks/telegram"
    adapter = TelegramChannel(_NoInbox(), settings)  # type: ignore[arg-type]
    async with adapter.make_bot() as bot:
        await bot.set_webhook(url, secret_token=settings.telegram_webhook_secret,
                              allowed_updates=["message", "edited_message", "callback_query"])
    return url


async def poll(adapter: TelegramChannel, stop: asyncio.Event | None = None, timeout: int = 30) -> None:
    """Long polling (``getUpdates``) through the same parse → inbox → send path as the webhook."""
    from telegram.error import RetryAfter, TelegramError

    bot = await adapter.bot()
    await bot.delete_webhook()
    offset: int | None = None
    while stop is None or not stop.is_set():
        try:
            updates = await bot.get_updates(offset=offset, timeout=timeout,
                                            allowed_updates=["message", "edited_message", "callback_query"])
        except RetryAfter as exc:
            await asyncio.sleep(_retry_seconds(exc))
            continue
        except TelegramError:
            log.exception("getUpdates failed; retrying in 5 s")
            await asyncio.sleep(5)
            continue
        for upd in updates:
            offset = upd.update_id + 1
            try:
                await adapter.process_update(upd)
            except Exception:  # noqa: BLE001 - one bad update must not stop polling
                log.exception("update %s failed", upd.update_id)


class _NoInbox:
    """Stands in for the port where only the Bot API is used (registering the webhook)."""

    async def receive(self, message: Message) -> Turn:  # pragma: no cover - never called
        raise RuntimeError("no inbox")
