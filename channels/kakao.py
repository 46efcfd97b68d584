"""KakaoTalk channel: a Kakao i Open Builder skill server, ``POST /webhooks/kakao``.

Open Builder posts a *skill request* (``userRequest.utterance``,
``userRequest.user.id``, ``action.params`` …) and shows the *skill response*
(``{"version": "2.0", "template": {"outputs": [...], "quickReplies": [...]}}``)
that must come back within 5 seconds. Our turns take milliseconds.

Hand-offs use Kakao's AI chatbot callback: when a live hand-off starts and the
request carried ``userRequest.callbackUrl``, we answer ``useCallback`` at once
and the agent's first answer (:meth:`KakaoChannel.send`) is posted to that URL,
which Kakao accepts for one minute. If no agent answered by then, the bot's own
hand-off message is posted so the resident is not left waiting. Answers that
arrive later are kept and shown with the resident's next message (a skill
server cannot push otherwise).

Delivery ids. A skill request has no delivery id, and Kakao sends a request
again when a skill did not answer in time. We take the dedup key
``sha256(bot.id | user.id | utterance | 30-second bucket of the first delivery)``:

* a repeat of the same utterance by the same user counts as a *retry* only
  while the first delivery is still running or was answered too slowly for
  Kakao to have received it (``slow_answer`` seconds); then it reuses the first
  key, the inbox recognises it and it is processed once;
* a repeat after a quick answer is the resident saying it again (tapping "예"
  twice on two questions), so it gets a fresh key.

The bucket makes the key deterministic, so a retry that lands on another worker
within the same 30 seconds is still recognised by the store's unique
``(channel, message_id)``. The memory of recent requests is per process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bot.messages import Attachment, Button, Message, Reply, Turn
from bot.ports import ChannelPort
from channels.base import ChannelAdapter

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger("pcrm.channels.kakao")

SECRET_HEADER = "X-Kakao-Skill-Secret"
MAX_OUTPUTS = 3
MAX_TEXT = 1000  # simpleText.text
MAX_CARD_TEXT = 400  # textCard.description
MAX_QUICK_REPLIES = 10
MAX_LABEL = 14  # quickReplies[].label
CALLBACK_TTL = 55.0  # Kakao accepts a callback for one minute; keep a margin
DEDUP_BUCKET = 30

#: FAQ answers that point to Government24, shown as a card with a link button.
GOV24_URL = "https://www.gov.kr"
GOV24_LABELS = frozenset({"faq.resident_certificate", "faq.moving_in"})

_TEXTS = {
    "waiting": {"ko": "상담원 연결 중...", "en": "Connecting you to an agent..."},
    "gov24": {"ko": "정부24", "en": "Government24"},
    "received": {"ko": "메시지를 전달했어요.", "en": "Your message was passed on."},
}
#: Image plugin parameters (issue 20: photos on every channel that carries them) and their URLs.
_IMAGE_PARAM = re.compile(r"(secureimage|image|photo|사진|이미지)", re.IGNORECASE)
_URL = re.compile(r"https?://[^\s,()\"']+")
_LOCATION_PARAM = re.compile(r"(location|address|addr|place|주소|위치|장소)", re.IGNORECASE)
_LAT_PARAMS = ("lat", "latitude", "y")
_LONG_PARAMS = ("lng", "long", "lon", "longitude", "x")


class SkillRequestError(ValueError):
    """A request that is not a Kakao skill request."""


@dataclass
class _Recent:
    message_id: str
    started: float
    finished: float | None = None
    repeats: int = 0


@dataclass
class _UserState:
    callback_url: str | None = None
    callback_expires: float = 0.0
    callback_fallback: list[Reply] = field(default_factory=list)
    fallback_task: asyncio.Task[Any] | None = None
    pending: list[Reply] = field(default_factory=list)
    payloads: dict[str, str] = field(default_factory=dict)  # quick-reply title -> payload
    lang: str = "ko"


def callback_allowed(url: Any, hosts: str) -> bool:
    """Whether ``url`` is an ``https`` URL on one of ``hosts`` (comma list; ``.kakao.com`` also
    allows its subdomains; ``http://host`` allows plain http to that host, for a local fake). Anything else would let a
    forged skill request make us POST residents' conversations to any server (SSRF)."""
    if not isinstance(url, str) or len(url) > 2000:
        return False
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return False
    for entry in (h.strip().lower() for h in hosts.split(",")):
        if not entry:
            continue
        scheme = "https"
        if entry.startswith(("http://", "https://")):  # a local fake in tests, explicitly configured
            scheme, _, entry = entry.partition("://")
        name, _, want_port = entry.partition(":")
        if parts.scheme != scheme or (want_port and str(port) != want_port):
            continue
        if host == name.lstrip(".") or (name.startswith(".") and host.endswith(name)):
            return True
    return False


def shorten(label: str, limit: int = MAX_LABEL) -> str:
    """A quick-reply label of at most ``limit`` characters: drop a parenthesis, then cut at a word."""
    label = " ".join(label.split())
    if len(label) <= limit:
        return label
    no_paren = re.sub(r"\s*[(（][^)）]*[)）]", "", label).strip()
    if no_paren and len(no_paren) <= limit:
        return no_paren
    label = no_paren or label
    cut = label[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.-·/") + "…"


def _split(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, preferring line and sentence breaks."""
    out = []
    text = text.strip()
    while len(text) > limit:
        cut = max(text.rfind("\n", 0, limit), text.rfind(". ", 0, limit), text.rfind("요. ", 0, limit))
        cut = cut + 1 if cut > limit // 2 else limit
        out.append(text[:cut].strip())
        text = text[cut:].strip()
    out.append(text)
    return [t for t in out if t]


class KakaoChannel(ChannelAdapter):
    name = "kakao"

    #: An answer slower than this may not have reached Kakao (5 s timeout): a repeat is a retry.
    slow_answer = 4.5
    #: Post the bot's own hand-off message to the callback if no agent answered within this time.
    callback_fallback_after = 50.0
    #: Users remembered in memory (callbacks, quick-reply titles); idle ones are forgotten beyond this.
    max_users = 50000

    def __init__(self, inbox: ChannelPort, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(inbox, settings)
        self._http = http
        self._users: dict[str, _UserState] = {}
        self._recent: dict[str, _Recent] = {}
        self._lock = threading.Lock()

    # --- inbound ------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        r = APIRouter(tags=["channels"])

        @r.post("/webhooks/kakao", summary="Kakao i Open Builder skill (response format 2.0)")
        async def skill(request: Request) -> JSONResponse:
            expected = self.settings.kakao_skill_secret or ""
            given = request.headers.get(SECRET_HEADER, "")
            if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
                return JSONResponse({"detail": "bad or missing skill secret"}, status_code=403)
            try:
                body = json.loads(await request.body())
                message, callback_url = self.parse(body)
            except (ValueError, UnicodeDecodeError) as exc:
                reason = str(exc) if isinstance(exc, SkillRequestError) else "body is not JSON"
                return JSONResponse({"detail": f"malformed skill request: {reason}"}, status_code=400)
            return JSONResponse(await self.handle(message, callback_url))

        return r

    def parse(self, body: Any) -> tuple[Message, str | None]:
        """The message of a skill request and its callback URL, or :class:`SkillRequestError`."""
        if not isinstance(body, dict):
            raise SkillRequestError("not a JSON object")
        user_request = body.get("userRequest")
        if not isinstance(user_request, dict):
            raise SkillRequestError("no userRequest")
        user = user_request.get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, str) or not user_id or len(user_id) > 256:
            raise SkillRequestError("no userRequest.user.id")
        utterance = user_request.get("utterance")
        if not isinstance(utterance, str):
            raise SkillRequestError("no userRequest.utterance")
        callback = user_request.get("callbackUrl")
        if callback is not None and not callback_allowed(callback, self.settings.kakao_callback_hosts):
            # We would POST the conversation there: only to Kakao's hosts (KAKAO_CALLBACK_HOSTS).
            raise SkillRequestError("userRequest.callbackUrl is not a Kakao callback URL")
        bot = body.get("bot")
        bot_id = str(bot.get("id", "")) if isinstance(bot, dict) else ""
        action = body.get("action")
        action = action if isinstance(action, dict) else {}
        attachments = self._attachments(action)
        text = utterance.replace("\x00", "").strip()  # PostgreSQL cannot store NUL
        if not text and attachments and attachments[0].address:
            text = attachments[0].address
        lang_raw = user_request.get("lang")
        lang = "en" if isinstance(lang_raw, str) and lang_raw.lower().startswith("en") else None
        with self._lock:
            st = self._users.get(user_id)
            if st is not None and text in st.payloads:
                text = st.payloads[text]  # a quick reply we showed with its title as the message
        block = user_request.get("block")
        metadata = {"bot_id": bot_id, "block": block.get("name") if isinstance(block, dict) else None}
        return Message(channel=self.name, sender_id=user_id, text=text[:20000], lang=lang,  # type: ignore[arg-type]
                       attachments=attachments, metadata=metadata,
                       message_id=self._delivery_id(bot_id, user_id, utterance)), callback

    @staticmethod
    def _attachments(action: dict[str, Any]) -> list[Attachment]:
        """A location from ``action.params`` / ``detailParams`` (an address entity, or coordinates)."""
        params: dict[str, Any] = {}
        if isinstance(action.get("params"), dict):
            params.update(action["params"])
        detail = action.get("detailParams")
        if isinstance(detail, dict):
            for k, v in detail.items():
                if isinstance(v, dict) and "value" in v and k not in params:
                    params[k] = v["value"]
        address = None
        lat = lng = None
        photos: list[Attachment] = []
        for k, v in params.items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                continue
            key = k.lower()
            if _IMAGE_PARAM.search(key):
                # The image plugin (sys.plugin.secureimage) gives "secureUrls": "List(https://…, https://…)".
                photos += [Attachment(kind="photo", url=u[:2000]) for u in _URL.findall(str(v))[:5]]
                continue
            if key in _LAT_PARAMS:
                lat = _float(v)
            elif key in _LONG_PARAMS:
                lng = _float(v)
            elif address is None and _LOCATION_PARAM.search(k) and str(v).strip():
                address = str(v).strip()[:300]
        if address is None and (lat is None or lng is None):
            return photos
        if lat is None or lng is None or not (-90 <= lat <= 90 and -180 <= lng <= 180):
            lat = lng = None
        return [*photos, Attachment(kind="location", address=address, lat=lat, long=lng)]

    def _delivery_id(self, bot_id: str, user_id: str, utterance: str) -> str:
        """See the module docstring: retries share an id, deliberate repeats do not."""
        now = time.time()
        key = f"{bot_id}|{user_id}|{utterance}"
        with self._lock:
            for k in [k for k, r in self._recent.items() if now - r.started > DEDUP_BUCKET * 2]:
                del self._recent[k]
            prev = self._recent.get(key)
            if prev is not None and now - prev.started < DEDUP_BUCKET:
                slow = prev.finished is None or prev.finished - prev.started >= self.slow_answer
                if slow:
                    return prev.message_id
                repeats = prev.repeats + 1
            else:
                repeats = 0
            bucket = int(now // DEDUP_BUCKET)
            raw = f"{key}|{bucket}" + (f"|{repeats}" if repeats else "")
            message_id = "kakao:" + hashlib.sha256(raw.encode()).hexdigest()[:32]
            self._recent[key] = _Recent(message_id, now, repeats=repeats)
            return message_id

    def _finished(self, message: Message) -> None:
        with self._lock:
            for r in self._recent.values():
                if r.message_id == message.message_id and r.finished is None:
                    r.finished = time.time()

    async def handle(self, message: Message, callback_url: str | None) -> dict[str, Any]:
        """Run the turn and build the skill response (or a ``useCallback`` answer for a hand-off)."""
        try:
            turn = await self.inbox.receive(message)
        finally:
            self._finished(message)
        st = self._user(message.sender_id)
        st.lang = turn.lang
        pending, st.pending = st.pending, []
        if callback_url and self._live_handoff(turn) and not pending:
            self._arm_callback(message.sender_id, callback_url, turn.replies)
            return {"version": "2.0", "useCallback": True,
                    "data": {"text": _TEXTS["waiting"]["en" if turn.lang == "en" else "ko"]}}
        replies = [*pending, *turn.replies]
        if not replies:  # handed off and the agent has not answered yet
            replies = [Reply(_TEXTS["received"]["en" if turn.lang == "en" else "ko"])]
        return self.render(replies, turn, message.sender_id)

    @staticmethod
    def _live_handoff(turn: Turn) -> bool:
        """A hand-off an agent will answer now (not after hours, never an emergency's 119 notice)."""
        if any(r.hints.get("emergency") for r in turn.replies):
            return False
        if turn.routing.action == "paused":
            return True
        ev = turn.event("handoff")
        return turn.routing.action == "handoff" and ev is not None and not ev.data.get("after_hours")

    def _user(self, user_id: str) -> _UserState:
        with self._lock:
            st = self._users.get(user_id)
            if st is None:
                if len(self._users) >= self.max_users:  # forget idle users; keep undelivered answers
                    now = time.monotonic()
                    for uid in [u for u, v in self._users.items()
                                if not v.pending and (v.callback_url is None or v.callback_expires < now)]:
                        del self._users[uid]
                st = self._users[user_id] = _UserState()
            return st

    # --- rendering ----------------------------------------------------------------------------
    def render(self, replies: list[Reply], turn: Turn | None, user_id: str) -> dict[str, Any]:
        """Skill response 2.0: at most 3 outputs and 10 quick replies, Kakao's text limits."""
        lang = turn.lang if turn is not None else self._user(user_id).lang
        label = turn.label if turn is not None else ""
        outputs: list[dict[str, Any]] = []
        buttons: list[Button] = []
        for reply in replies:
            buttons.extend(reply.buttons)
            link = reply.hints.get("link") if isinstance(reply.hints.get("link"), str) else None
            if link is None and label in GOV24_LABELS and "gov.kr" in reply.text:
                link = GOV24_URL
            if link and len(reply.text) <= MAX_CARD_TEXT:
                title = _TEXTS["gov24"]["en" if lang == "en" else "ko"] if link == GOV24_URL else "🔗"
                outputs.append({"textCard": {"description": reply.text, "buttons": [
                    {"action": "webLink", "label": shorten(title), "webLinkUrl": link}]}})
                continue
            text = ("🚨 " + reply.text) if reply.hints.get("emergency") else reply.text
            outputs.extend({"simpleText": {"text": part}} for part in _split(text or " ", MAX_TEXT))
        if len(outputs) > MAX_OUTPUTS:  # fold the rest into the last simpleText we may show
            texts = [o["simpleText"]["text"] if "simpleText" in o else o["textCard"]["description"]
                     for o in outputs[MAX_OUTPUTS - 1:]]
            outputs = outputs[: MAX_OUTPUTS - 1] + [{"simpleText": {"text": _split("\n\n".join(texts),
                                                                                   MAX_TEXT)[0]}}]
        template: dict[str, Any] = {"outputs": outputs}
        quick = self._quick_replies(user_id, buttons)
        if quick:
            template["quickReplies"] = quick
        return {"version": "2.0", "template": template}

    def _quick_replies(self, user_id: str, buttons: list[Button]) -> list[dict[str, Any]]:
        """Buttons as quick replies. An intent payload ("/faq.passport") is sent as its title, which
        would otherwise show in the chat; the title is mapped back to the payload on the next request."""
        st = self._user(user_id)
        payloads: dict[str, str] = {}
        out = []
        for b in buttons[:MAX_QUICK_REPLIES]:
            text = b.payload
            if b.payload.startswith("/"):
                text = b.title.strip() or b.payload
                payloads[text] = b.payload
            out.append({"label": shorten(b.title) or shorten(b.payload), "action": "message",
                        "messageText": text})
        with self._lock:
            st.payloads = payloads
        return out

    # --- outbound -----------------------------------------------------------------------------
    def _arm_callback(self, user_id: str, url: str, fallback: list[Reply]) -> None:
        st = self._user(user_id)
        if st.fallback_task is not None:
            st.fallback_task.cancel()
        st.callback_url = url
        st.callback_expires = time.monotonic() + CALLBACK_TTL
        st.callback_fallback = fallback
        st.fallback_task = asyncio.get_running_loop().create_task(self._fallback(user_id))

    def _take_callback(self, user_id: str) -> str | None:
        """The user's callback URL if still valid; it can be used once."""
        st = self._user(user_id)
        with self._lock:
            url, valid = st.callback_url, time.monotonic() < st.callback_expires
            st.callback_url = None
        if st.fallback_task is not None and st.fallback_task is not asyncio.current_task():
            st.fallback_task.cancel()
        st.fallback_task = None
        return url if valid else None

    async def _fallback(self, user_id: str) -> None:
        """No agent answered in time: post the bot's hand-off message so Kakao stops waiting."""
        await asyncio.sleep(self.callback_fallback_after)
        st = self._user(user_id)
        replies = st.callback_fallback or [Reply(_TEXTS["waiting"]["en" if st.lang == "en" else "ko"])]
        url = self._take_callback(user_id)
        if url is not None:
            await self._post_callback(url, self.render(replies, None, user_id))

    async def send(self, recipient_id: str, replies: list[Reply]) -> bool:
        """An agent's answer: to the pending callback if it is still valid (True).

        Otherwise Kakao offers no way to push: the replies are kept and shown with
        the resident's next message, and this returns False.
        """
        if not replies:
            return True
        url = self._take_callback(recipient_id)
        if url is not None and await self._post_callback(url, self.render(replies, None, recipient_id)):
            return True
        st = self._user(recipient_id)
        with self._lock:
            st.pending.extend(replies)
        return False

    async def _post_callback(self, url: str, body: dict[str, Any]) -> bool:
        client = self._http or httpx.AsyncClient(timeout=5.0)
        try:
            resp = await client.post(url, json=body)
            if resp.status_code >= 300:
                log.warning("kakao callback answered %s", resp.status_code)
                return False
            return True
        except httpx.HTTPError as exc:
            log.warning("kakao callback failed: %s", exc)
            return False
        finally:
            if self._http is None:
                await client.aclose()


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
