"""Twilio SMS channel: ``POST /webhooks/twilio/sms`` in, TwiML ``<Message>`` out.

Inbound
    Twilio posts the form (``From``, ``Body``, ``MessageSid``, ``NumMedia``/``MediaUrlN``)
    signed with ``X-Twilio-Signature``; forged or unsigned requests get 403. The
    message goes through the channel port (:mod:`bot.ports`, the inbox) like every channel's, with
    ``message_id = MessageSid`` so a retried delivery is recorded once and answered
    the same way. Pictures sent by MMS become ``photo`` attachments.

Rendering
    SMS is paid per 70-character UCS-2 segment, so replies are kept short: they
    are split at sentence boundaries into at most 3 messages of at most 140
    characters (2 segments each). When that is not enough the rest is cut and the
    last message links to ``PCRM_PUBLIC_URL`` (or the reply's ``link`` hint).
    Buttons become numbered lines ("1. 예"); answering "1" sends the first
    button's payload. *Choice:* the buttons last shown to each number are kept in
    a small in-process cache in the adapter (bounded, 30-minute lifetime) rather
    than re-derived from the store, because stored interactions keep only reply
    texts. With several workers a digit can land on a worker that did not send the
    menu; it then goes to the engine as typed ("1"/"2" still mean yes/no there).

Opt-out
    ``STOP``/``수신거부`` (and Twilio's other opt-out words), ``START``/``수신동의`` and
    ``HELP``/``도움말`` are handled here, without the engine: they are reported to the port
    as a :class:`~bot.ports.ContactKeyword` (its writer sets or clears the resident's SMS
    opt-out, keeps both messages as system interactions plus an audit row), and answered
    with ``utter_opt_out_done``/``utter_opt_in_done``/``utter_help``. Twilio's Advanced
    Opt-Out ``OptOutType`` parameter counts too.
    ``CANCEL`` and ``YES`` are deliberately not keywords: inside a form they mean
    "cancel the report" and "confirm". A message from an opted-out number is still
    answered in the reply to that message (the resident started the exchange); the
    opt-out stops everything the centre *initiates* (:meth:`TwilioSmsChannel.send`,
    one-time codes).

Outbound
    :class:`SmsSender` sends through Twilio's REST client (``messages.create`` with a
    status callback). ``TWILIO_API_BASE_URL`` points the real client at another
    host (a local fake API in tests, or a proxy) by rewriting the scheme and host
    of each request in a :class:`TwilioHttpClient` subclass: Twilio 9 builds every
    domain URL (``https://api.twilio.com``…) itself, and the HTTP client is the
    supported injection point (``Client(..., http_client=...)``).

Delivery status
    ``POST /webhooks/twilio/sms/status`` (signed), reported to the port as a
    :class:`~bot.ports.DeliveryStatus` (stored as an audit row, see
    :mod:`crm_store.channel_events`). What Twilio's codes mean is decided here: 21610
    (the recipient unsubscribed at the carrier) is ``opted_out``; 30005/30006 (unknown
    number, landline) are ``unreachable``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from twilio.http.http_client import TwilioHttpClient
from twilio.twiml.messaging_response import MessagingResponse

from bot.masking import mask_pii
from bot.messages import Attachment, Button, Message, Reply
from bot.phones import normalize_phone
from bot.ports import ChannelPort, ContactKeyword, Delivery, DeliveryStatus
from bot.settings import Settings
from channels.base import ChannelAdapter
from channels.twilio_signature import check_signature, first, form_params, public_url

log = logging.getLogger("pcrm.channels.twilio_sms")

CHANNEL = "twilio_sms"
SMS_PATH = "/webhooks/twilio/sms"
STATUS_PATH = "/webhooks/twilio/sms/status"

#: Characters per message: two UCS-2 segments (Korean text is never GSM-7).
SMS_LIMIT = 140
MAX_PARTS = 3

_STOP = {"stop", "stopall", "unsubscribe", "end", "quit", "수신거부", "수신 거부", "문자거부", "문자 거부"}
_START = {"start", "unstop", "수신동의", "수신 동의", "수신허용", "수신 허용"}
_HELP = {"help", "info", "도움말", "도움"}
_KEYWORD_RESPONSE = {"stop": "utter_opt_out_done", "start": "utter_opt_in_done", "help": "utter_help"}

#: Twilio errors that say the number can never receive SMS from us.
_UNREACHABLE_ERRORS = {"30005", "30006"}
_UNSUBSCRIBED_ERROR = "21610"

_HANGUL = re.compile("[\uac00-\ud7a3]")
_SENTENCE_END = re.compile(r"(?<=[.!?。…])\s+")
_CHOICE = re.compile(r"^\s*(\d{1,2})\s*(번|\.|\))?\s*$")


# --- rendering ---------------------------------------------------------------------------------

def keyword_of(body: str, opt_out_type: str = "") -> str | None:
    """``"stop"``, ``"start"``, ``"help"`` or ``None`` for an SMS body."""
    if opt_out_type.strip().lower() in _KEYWORD_RESPONSE:
        return opt_out_type.strip().lower()
    word = re.sub(r"[\s.!?~]+$", "", body.strip()).lower()
    if word in _STOP:
        return "stop"
    if word in _START:
        return "start"
    if word in _HELP:
        return "help"
    return None


def _hard_split(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, at spaces where possible."""
    out = []
    while len(text) > limit:
        cut = text.rfind(" ", 0, limit + 1)
        if cut < limit // 2:
            cut = limit
        out.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        out.append(text)
    return out


def _pieces(text: str, limit: int) -> list[tuple[str, str]]:
    """Sentences of ``text`` as (piece, separator-before-it), each at most ``limit`` long."""
    out: list[tuple[str, str]] = []
    for li, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        for si, sentence in enumerate(_SENTENCE_END.split(line)):
            for pi, piece in enumerate(_hard_split(sentence.strip(), limit)):
                out.append((piece, "\n" if (si == 0 and pi == 0 and li > 0) else " "))
    if out:
        out[0] = (out[0][0], "\n")
    return out


def _pack(pieces: list[tuple[str, str]], limit: int) -> list[str]:
    parts: list[str] = []
    cur = ""
    for text, sep in pieces:
        if not cur:
            cur = text
        elif len(cur) + len(sep) + len(text) <= limit:
            cur += sep + text
        else:
            parts.append(cur)
            cur = text
    if cur:
        parts.append(cur)
    return parts


def render_sms(replies: list[Reply], link: str, limit: int = SMS_LIMIT,
               max_parts: int = MAX_PARTS) -> tuple[list[str], list[Button]]:
    """SMS bodies for ``replies`` and the buttons they offer, in the order numbered.

    At most ``max_parts`` bodies of at most ``limit`` characters; numbered options
    are never cut off, sentences are dropped from the end instead and replaced by
    a "details" link.
    """
    text_pieces: list[tuple[str, str]] = []
    buttons: list[Button] = []
    for reply in replies:
        text_pieces += _pieces(reply.text, limit)
        buttons += reply.buttons
        link = reply.hints.get("link") or link
    options = [(p, "\n") for i, b in enumerate(buttons, 1) for p in _hard_split(f"{i}. {b.title}", limit)]
    parts = _pack(text_pieces + options, limit)
    if len(parts) <= max_parts:
        return parts, buttons
    korean = any(_HANGUL.search(r.text) for r in replies)
    more = [(p, "\n") for p in _hard_split(f"{'자세히' if korean else 'More'}: {link}", limit)]
    kept = list(text_pieces)
    while len(kept) > 1:
        kept.pop()
        last, sep = kept[-1]
        trimmed = [*kept[:-1], (last[: limit - 2] + " …", sep)]
        parts = _pack([*trimmed, *more, *options], limit)
        if len(parts) <= max_parts:
            return parts, buttons
    return _pack([*more, *options], limit)[:max_parts], buttons


def twiml(parts: list[str]) -> Response:
    """A TwiML ``<Response>`` with one ``<Message>`` per part (empty: no answer)."""
    resp = MessagingResponse()
    for part in parts:
        resp.message(part)
    return Response(content=str(resp), media_type="application/xml")


class _ButtonMemory:
    """The buttons last offered to each number, so "1" can pick the first one."""

    def __init__(self, size: int = 10000, ttl: float = 1800.0) -> None:
        self._data: OrderedDict[str, tuple[float, list[Button]]] = OrderedDict()
        self._size, self._ttl = size, ttl
        self._lock = threading.Lock()

    def put(self, sender: str, buttons: list[Button]) -> None:
        with self._lock:
            self._data.pop(sender, None)
            if buttons:
                self._data[sender] = (time.monotonic(), list(buttons))
                while len(self._data) > self._size:
                    self._data.popitem(last=False)

    def choose(self, sender: str, body: str) -> str | None:
        """The payload of the button numbered ``body``, if ``body`` is such a number."""
        m = _CHOICE.match(body)
        if not m:
            return None
        with self._lock:
            entry = self._data.get(sender)
        if entry is None or time.monotonic() - entry[0] > self._ttl:
            return None
        index = int(m.group(1)) - 1
        buttons = entry[1]
        return buttons[index].payload if 0 <= index < len(buttons) else None


# --- outbound ----------------------------------------------------------------------------------

class BaseUrlHttpClient(TwilioHttpClient):
    """Twilio's HTTP client, sending every API call to ``base_url`` instead of ``*.twilio.com``.

    The path (``/2010-04-01/Accounts/AC…/Messages.json``) is kept, so a fake or a
    proxy sees exactly what Twilio would.
    """

    def __init__(self, base_url: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.base = urlsplit(base_url.rstrip("/"))

    def request(self, method: str, url: str, *args: Any, **kw: Any):  # noqa: ANN201 - Twilio's Response
        u = urlsplit(url)
        url = urlunsplit((self.base.scheme, self.base.netloc, self.base.path + u.path, u.query, u.fragment))
        return super().request(method, url, *args, **kw)


def make_twilio_client(settings: Settings):  # noqa: ANN201 - twilio.rest.Client
    """Twilio's REST client from settings (``TWILIO_API_BASE_URL`` redirects it)."""
    from twilio.rest import Client

    http = BaseUrlHttpClient(settings.twilio_api_base_url, timeout=10) if settings.twilio_api_base_url \
        else TwilioHttpClient(timeout=10)
    return Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http)


class SmsSender:
    """Sends SMS the centre initiates (agent answers, status news, one-time codes).

    Never to a number whose resident opted out or whose SMS identity is known dead (the port
    knows; without one, e.g. a command-line tool, nothing is blocked). ``send_sms`` is the
    send-SMS interface the web chat's phone verification uses.
    """

    def __init__(self, settings: Settings, port: ChannelPort | None = None, client: Any = None) -> None:
        self.settings = settings
        self.port = port
        self._client = client
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        s = self.settings
        return bool(s.twilio_account_sid and s.twilio_auth_token and s.twilio_from_number)

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = make_twilio_client(self.settings)
            return self._client

    async def send_sms(self, to: str, body: str) -> bool:
        """Send one SMS; False when not configured, opted out, unreachable or refused."""
        return await self.send_parts(to, [body])

    async def send_parts(self, to: str, bodies: list[str]) -> bool:
        return await run_in_threadpool(self._send_sync, to, bodies)

    def _send_sync(self, to: str, bodies: list[str]) -> bool:
        if not self.configured:
            log.warning("twilio SMS not configured (TWILIO_ACCOUNT_SID/AUTH_TOKEN/FROM_NUMBER); not sending")
            return False
        try:
            e164 = normalize_phone(to)
        except ValueError:
            log.warning("not sending SMS to a non-phone recipient %s", mask_pii(to))
            return False
        if not bodies or self.blocked(e164):
            return False
        from twilio.base.exceptions import TwilioException

        callback = public_url(self.settings, STATUS_PATH)
        try:
            for body in bodies:
                self.client.messages.create(to=e164, from_=self.settings.twilio_from_number, body=body,
                                            status_callback=callback)
        except TwilioException as exc:
            log.warning("twilio refused an SMS to %s: %s", mask_pii(e164), exc)
            return False
        except OSError as exc:  # requests' connection errors are OSErrors
            log.warning("twilio API unreachable: %s", exc)
            return False
        return True

    def blocked(self, e164: str) -> bool:
        """Whether we must not text ``e164``: its resident opted out, or the number is dead."""
        return self.port is not None and not self.port.may_contact(CHANNEL, e164)


def make_sms_sender(settings: Settings, port: ChannelPort | None = None) -> SmsSender:
    """An :class:`SmsSender` for code outside the adapter (e.g. phone verification)."""
    return SmsSender(settings, port)


# --- the adapter -------------------------------------------------------------------------------

class TwilioSmsChannel(ChannelAdapter):
    name = CHANNEL

    def __init__(self, inbox: ChannelPort, settings: Settings, sender: SmsSender | None = None) -> None:
        super().__init__(inbox, settings)
        self.sender = sender or SmsSender(settings, inbox)
        self.buttons = _ButtonMemory()

    @property
    def details_link(self) -> str:
        return self.settings.pcrm_public_url.rstrip("/") + "/"

    async def send(self, recipient_id: str, replies: list[Reply]) -> bool:
        """Text ``replies`` to ``recipient_id`` (never to an opted-out number)."""
        parts, buttons = render_sms(replies, self.details_link)
        ok = await self.sender.send_parts(recipient_id, parts)
        if ok:
            try:
                self.buttons.put(normalize_phone(recipient_id), buttons)
            except ValueError:
                pass
        return ok

    def router(self) -> APIRouter:
        r = APIRouter(tags=["channels"])

        @r.post(SMS_PATH, summary="Twilio inbound SMS webhook (TwiML reply)",
                response_class=Response, responses={200: {"content": {"application/xml": {}}}})
        async def inbound(request: Request) -> Response:
            params = await form_params(request)
            denied = check_signature(self.settings, request, params)
            if denied is not None:
                return denied
            missing = [k for k in ("From", "MessageSid") if not first(params, k)]
            if "Body" not in params:
                missing.append("Body")
            if missing:
                return JSONResponse({"detail": f"missing {', '.join(missing)}"}, status_code=400)
            try:
                sender = normalize_phone(first(params, "From"))
            except ValueError:
                return JSONResponse({"detail": "From is not a phone number"}, status_code=400)
            body = first(params, "Body")
            sid = first(params, "MessageSid")

            keyword = keyword_of(body, first(params, "OptOutType"))
            if keyword is not None:
                lang = "ko" if _HANGUL.search(body) else "en"
                text = self.inbox.say(_KEYWORD_RESPONSE[keyword], lang)
                msg = Message(channel=CHANNEL, sender_id=sender, text=body, lang=lang, message_id=sid)
                try:
                    await self.inbox.note(ContactKeyword(msg, keyword, text))  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 - the store is down
                    log.exception("could not record SMS %s of %s", keyword, mask_pii(sender))
                    if keyword != "help":  # never confirm an opt-out/in that was not saved
                        return JSONResponse({"detail": "store unavailable"}, status_code=503)
                self.buttons.put(sender, [])
                return twiml(render_sms([Reply(text)], self.details_link)[0])

            chosen = self.buttons.choose(sender, body)
            metadata: dict[str, Any] = {"sms_body": body} if chosen is not None else {}
            msg = Message(channel=CHANNEL, sender_id=sender, text=chosen if chosen is not None else body,
                          attachments=_media(params), metadata=metadata, message_id=sid)
            turn = await self.inbox.receive(msg)
            parts, buttons = render_sms(turn.replies, self.details_link)
            if turn.label != "duplicate":
                self.buttons.put(sender, buttons)
            return twiml(parts)

        @r.post(STATUS_PATH, summary="Twilio SMS delivery status callback")
        async def status(request: Request) -> Response:
            params = await form_params(request)
            denied = check_signature(self.settings, request, params)
            if denied is not None:
                return denied
            sid, state = first(params, "MessageSid"), first(params, "MessageStatus").lower()
            if not sid or not state:
                return JSONResponse({"detail": "missing MessageSid or MessageStatus"}, status_code=400)
            error = first(params, "ErrorCode")
            await self.inbox.note(DeliveryStatus(CHANNEL, sid, state, reported_by="twilio", error=error,
                                                 recipient=first(params, "To"), outcome=delivery_outcome(error)))
            return Response(status_code=204)

        return r


def delivery_outcome(error: str) -> Delivery:
    """What a Twilio error code says about the recipient (see the module doc)."""
    if error == _UNSUBSCRIBED_ERROR:
        return "opted_out"
    return "unreachable" if error in _UNREACHABLE_ERRORS else "ok"


def _media(params: dict[str, Any]) -> list[Attachment]:
    """MMS pictures as ``photo`` attachments (other media as ``file``)."""
    out = []
    try:
        count = int(first(params, "NumMedia") or 0)
    except ValueError:
        count = 0
    for i in range(min(count, 10)):
        url = first(params, f"MediaUrl{i}")
        if url:
            kind = "photo" if first(params, f"MediaContentType{i}").startswith("image/") else "file"
            out.append(Attachment(kind=kind, url=url))  # type: ignore[arg-type]
    return out
