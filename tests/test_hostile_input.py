"""Hostile input through every channel, against the real app under uvicorn (SQLite and PostgreSQL).

Channels: REST, the web-chat WebSocket, Twilio SMS and Twilio voice (signed exactly as Twilio
signs), Telegram (secret header; replies go to a fake Bot API) and KakaoTalk (secret header).
Inputs: empty, whitespace only, 20,000 characters, NUL and control characters, a right-to-left
override, invalid UTF-8 bytes, HTML and script, SQL, template injection, emoji only, mixed scripts.

For every (channel, input):

* never a 5xx; a malformed payload gets a 4xx with a reason (web chat: an error frame);
* otherwise a sane reply in the channel's own format (JSON list, bot frame, TwiML, sendMessage,
  skill response) with non-empty text;
* the inbound interaction stores exactly what was sent (after the channel's own decoding:
  Twilio and Kakao strip surrounding whitespace; the platforms' channels drop NUL characters,
  which PostgreSQL cannot store) or the message was refused with a reason (REST and web chat
  refuse NUL: a 422 / an error frame saying so);
* nothing is executed: ``{{7*7}}``/``${7*7}`` never come back as 49, ``{0.__class__}`` never as a
  class name, and resident text echoed inside a reply (a form summary) stays literal;
* phone numbers and 주민등록번호 never reach the logs unmasked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from twilio.request_validator import RequestValidator

from bot.settings import ROOT, Settings
from crm_store.models import Conversation, Interaction
from tests.channel_servers import ServerThread
from tests.conftest import POSTGRES_URL
from tests.test_telegram import FakeBotApi

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

TWILIO_TOKEN = "hostile-auth-token-0123456789abcd"
TG_TOKEN = "123:ABC"  # what FakeBotApi accepts
TG_SECRET = "tg-hostile-secret"
KAKAO_SECRET = "kakao-hostile-secret"

#: Every hostile text (invalid UTF-8 is sent as raw bytes by :data:`RAW_SENDERS`).
HOSTILE: dict[str, str] = {
    "empty": "",
    "whitespace": " \t\n \u3000 ",
    "long_20000": ("도로에 구멍이 났어요 " * 2000)[:20000],
    "nul_control": "쓰레기\x00 언제\x07 버려요\x1b[31m?\x7f\x08\x0c",
    "rtl_override": "\u202e요려버 제언 기레쓰\u202c \u202bمرحبا\u202c",
    "html_script": "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>&amp;",
    "sql": "'; DROP TABLE interactions; -- \" OR 1=1; SELECT * FROM residents WHERE '1'='1",
    "template": "{{7*7}} ${7*7} {0.__class__} {lang} %s %(name)s #{7*7} <%= 7*7 %>",
    "emoji_only": "😀🚧🗑️👍🏽🇰🇷",
    "mixed_scripts": "안녕하세요 hello Привет مرحبا 你好 こんにちは ไทย 쓰레기 언제 버려요?",
}
PII_TEXT = "제 번호는 010-1234-5678이고 주민번호는 900101-1234567입니다"
#: Raw forms of the personal data above that must never be logged.
PII_RAW = ["010-1234-5678", "01012345678", "+821012345678", "1012345678", "900101-1234567", "9001011234567"]

_seq = itertools.count(1)


def _uid() -> str:
    return f"{next(_seq)}x{uuid.uuid4().hex[:6]}"


def _phone() -> str:
    """A fresh Korean mobile number in E.164 (one per case, so each case is its own conversation)."""
    return f"+8210{50000000 + next(_seq) * 7 + int(uuid.uuid4().int % 7)}"


@dataclass
class Outcome:
    """What one send did: the HTTP status, the reply texts, a refusal reason, and where it is stored."""

    status: int
    replies: list[str] = field(default_factory=list)
    reason: str | None = None
    key: str | None = None  # conversation key of the sender
    expected: str | None = None  # the text as the channel decodes it (what must be stored)
    raw: str = ""  # the answer body, for assertion messages


class HostileApp:
    """The whole app with every channel configured, on a loopback port, plus a fake Bot API."""

    def __init__(self, db_url: str, fake: FakeBotApi) -> None:
        import uvicorn

        from bot.app import create_app

        self.fake = fake
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.settings = Settings(
            database_url=db_url, redis_url=None, pcrm_public_url=self.url, pcrm_model_dir=ROOT / "var" / "model",
            twilio_account_sid="AC" + "0" * 32, twilio_auth_token=TWILIO_TOKEN, twilio_from_number="+15005550006",
            twilio_api_base_url="http://127.0.0.1:9", telegram_bot_token=TG_TOKEN,
            telegram_webhook_secret=TG_SECRET, telegram_api_base_url=fake.url,  # type: ignore[attr-defined]
            kakao_skill_secret=KAKAO_SECRET)
        self.app = create_app(self.settings)
        self.sessions = self.app.state.sessions
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 900  # the first start may train the model
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.05)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self.server.serve(sockets=[self.sock]))

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
        self.sessions.kw["bind"].dispose()

    # --- the store ------------------------------------------------------------------------------
    def inbound_texts(self, key: str) -> list[str]:
        with self.sessions() as s:
            conv_id = s.scalars(select(Conversation.id).where(Conversation.key == key)).one_or_none()
            if conv_id is None:
                return []
            return list(s.scalars(select(Interaction.text).where(
                Interaction.conversation_id == conv_id, Interaction.direction == "in").order_by(Interaction.id)))

    # --- Twilio ---------------------------------------------------------------------------------
    def twilio_post(self, path: str, params: dict[str, str]) -> httpx.Response:
        sig = RequestValidator(TWILIO_TOKEN).compute_signature(self.url + path, params)
        return self.http.post(path, data=params, headers={"X-Twilio-Signature": sig})

    def twilio_post_raw(self, path: str, body: bytes) -> httpx.Response:
        """A form body as raw bytes, signed over the values as the server decodes them."""
        seen = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        sig = RequestValidator(TWILIO_TOKEN).compute_signature(self.url + path, seen)
        return self.http.post(path, content=body, headers={
            "X-Twilio-Signature": sig, "content-type": "application/x-www-form-urlencoded"})


# --- per-channel senders --------------------------------------------------------------------------

def _detail(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return r.text or None
    if isinstance(body, dict):
        reasons = [str(body.get("detail") or "")]
        reasons += [str(e.get("msg", "")) for e in body.get("errors") or [] if isinstance(e, dict)]
        return "; ".join(r for r in reasons if r) or None
    return None


def _twiml(r: httpx.Response, tags: tuple[str, ...]) -> list[str]:
    """Texts of the given TwiML verbs (asserting the answer is well-formed XML)."""
    assert r.headers["content-type"].startswith("application/xml"), r.text[:300]
    root = ET.fromstring(r.content)
    assert root.tag == "Response"
    return [el.text or "" for el in root.iter() if el.tag in tags]


def _nonul(text: str) -> str:
    return text.replace("\x00", "")


def send_rest(app: HostileApp, message: str) -> Outcome:
    sender = f"hostile-{_uid()}"
    r = app.http.post("/webhooks/rest/webhook", json={"sender": sender, "message": message})
    out = Outcome(r.status_code, key=f"rest:{sender}", expected=message, raw=r.text[:500])
    if r.status_code == 200:
        out.replies = [item["text"] for item in r.json()]
        assert all(item["recipient_id"] == sender for item in r.json())
    else:
        out.reason = _detail(r)
    return out


_WEB_KEYS: dict[str, str] = {}


def _web_session(name: str) -> str:
    """The session id the server derives for the key made from ``name`` (see :func:`_ws_exchange`)."""
    from bot.webchat_keys import session_of

    key = name.ljust(22, "_")
    _WEB_KEYS[session_of(key)] = name
    return session_of(key)


def _ws_exchange(app: HostileApp, session: str, frame: str | bytes) -> tuple[list[dict[str, Any]], str | None]:
    """Send one frame; the bot frames answering it, or the reason of an error frame."""
    from websockets.sync.client import connect

    from bot.webchat_keys import protocols_for

    ws_url = app.url.replace("http://", "ws://") + "/webchat/ws"
    frames: list[dict[str, Any]] = []
    key = session.ljust(22, "_")  # the session key; the server derives the session id from it
    with connect(ws_url, open_timeout=30, close_timeout=5, max_size=None, subprotocols=protocols_for(key)) as ws:
        ws.send(frame)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                got = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                break
            if got["type"] == "error":
                return frames, got.get("reason") or "(no reason)"
            if got["type"] == "bot":
                frames.append(got)
                try:  # the rest of this turn's replies follow at once
                    while True:
                        more = json.loads(ws.recv(timeout=1.0))
                        if more["type"] == "bot":
                            frames.append(more)
                except TimeoutError:
                    return frames, None
    return frames, None


def send_webchat(app: HostileApp, message: str) -> Outcome:
    session = f"hostile{_uid()}"
    frame = json.dumps({"type": "message", "text": message, "id": "h1"}, ensure_ascii=False)
    frames, reason = _ws_exchange(app, session, frame)
    out = Outcome(200, [f["text"] for f in frames], reason, key=f"webchat:{_web_session(session)}", expected=message)
    assert all(f.get("reply_to") == "h1" for f in frames), frames
    return out


def send_sms(app: HostileApp, message: str) -> Outcome:
    phone = _phone()
    params = {"From": phone, "To": "+15005550006", "Body": message, "MessageSid": "SM" + uuid.uuid4().hex,
              "AccountSid": "AC" + "0" * 32, "NumMedia": "0"}
    r = app.twilio_post("/webhooks/twilio/sms", params)
    out = Outcome(r.status_code, key=f"twilio_sms:{phone}", expected=_nonul(message).strip(), raw=r.text[:500])
    if r.status_code == 200:
        out.replies = _twiml(r, ("Message",))
    else:
        out.reason = _detail(r)
    return out


def send_voice(app: HostileApp, message: str) -> Outcome:
    phone = _phone()
    path = "/webhooks/twilio/voice/gather?n=2&lang=ko"
    params = {"CallSid": "CA" + uuid.uuid4().hex, "From": phone, "To": "+15005550006", "SpeechResult": message,
              "Confidence": "0.91", "AccountSid": "AC" + "0" * 32}
    r = app.twilio_post(path, params)
    out = Outcome(r.status_code, key=f"twilio_voice:{phone}", expected=_nonul(message).strip(),
                  raw=r.text[:500])
    if r.status_code == 200:
        out.replies = _twiml(r, ("Say",))
        if not message.strip():  # no speech: the caller is asked again, nothing to store
            out.reason = "no input: asked again"
    else:
        out.reason = _detail(r)
    return out


_tg_updates = itertools.count(9_100_000)


def tg_update(chat_id: int, message: str) -> dict[str, Any]:
    return {"update_id": next(_tg_updates), "message": {
        "message_id": next(_tg_updates), "date": int(time.time()),
        "from": {"id": chat_id, "is_bot": False, "first_name": "민수", "language_code": "ko"},
        "chat": {"id": chat_id, "type": "private", "first_name": "민수"}, "text": message}}


def send_telegram(app: HostileApp, message: str) -> Outcome:
    chat_id = 7_000_000 + next(_seq)
    before = len(app.fake.sent(chat_id))
    r = app.http.post("/webhooks/telegram", json=tg_update(chat_id, message),
                      headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
    out = Outcome(r.status_code, key=f"telegram:{chat_id}", expected=_nonul(message), raw=r.text[:500])
    if r.status_code == 200:
        assert r.json() == {"ok": True}
        out.replies = [m.get("text", "") for m in app.fake.sent(chat_id)[before:]]
    else:
        out.reason = _detail(r)
    return out


def kakao_request(user_id: str, utterance: str) -> dict[str, Any]:
    return {"intent": {"id": "fallback", "name": "폴백 블록"},
            "userRequest": {"timezone": "Asia/Seoul", "params": {"surface": "Kakaotalk.plusfriend"},
                            "block": {"id": "b1", "name": "폴백 블록"}, "utterance": utterance, "lang": "ko",
                            "user": {"id": user_id, "type": "botUserKey", "properties": {}}},
            "bot": {"id": "bot-hostile", "name": "한빛구청"},
            "action": {"name": "skill", "clientExtra": {}, "params": {}, "id": "a1", "detailParams": {}}}


def send_kakao(app: HostileApp, message: str) -> Outcome:
    user_id = f"kakao-hostile-{_uid()}"
    r = app.http.post("/webhooks/kakao", json=kakao_request(user_id, message),
                      headers={"X-Kakao-Skill-Secret": KAKAO_SECRET})
    out = Outcome(r.status_code, key=f"kakao:{user_id}", expected=_nonul(message).strip()[:20000],
                  raw=r.text[:500])
    if r.status_code == 200:
        body = r.json()
        assert body["version"] == "2.0"
        outputs = body.get("template", {}).get("outputs", [])
        out.replies = [o["simpleText"]["text"] if "simpleText" in o else o["textCard"]["description"]
                       for o in outputs]
        if body.get("useCallback"):
            out.replies.append(body["data"]["text"])
    else:
        out.reason = _detail(r)
    return out


SENDERS: dict[str, Callable[[HostileApp, str], Outcome]] = {
    "rest": send_rest, "webchat": send_webchat, "twilio_sms": send_sms, "twilio_voice": send_voice,
    "telegram": send_telegram, "kakao": send_kakao,
}


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake_bot_api() -> Iterator[FakeBotApi]:
    api = FakeBotApi()
    server = ServerThread(api.app).start()
    api.url = server.url  # type: ignore[attr-defined]
    yield api
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def hostile_app(request: pytest.FixtureRequest, fake_bot_api: FakeBotApi,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileApp]:
    """The app on SQLite, then on a throw-away PostgreSQL schema (skipped without PostgreSQL)."""
    if request.param == "sqlite":
        app = HostileApp(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'pcrm.db'}", fake_bot_api)
        yield app
        app.close()
        return
    from crm_store.db import upgrade

    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - not reachable
        admin.dispose()
        import os

        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    schema = f"pcrm_hostile_{uuid.uuid4().hex[:8]}"
    upgrade(POSTGRES_URL, schema=schema)
    app = HostileApp(f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}", fake_bot_api)
    try:
        yield app
    finally:
        app.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


# --- the matrix -----------------------------------------------------------------------------------

_FORTY_NINE = re.compile(r"(?<![\d.,:-])49(?![\d.,:-])")


def check(out: Outcome, app: HostileApp, channel: str, case: str) -> None:
    where = f"{channel}/{case}"
    assert out.status < 500, f"{where}: {out.status} {out.raw}"
    if 400 <= out.status < 500:
        assert out.reason, f"{where}: {out.status} without a reason: {out.raw}"
    else:
        assert out.status == 200, f"{where}: {out.status} {out.raw}"
        if out.reason is None:  # answered: a sane reply, stored faithfully
            assert out.replies and all(t.strip() for t in out.replies), f"{where}: empty reply {out}"
        else:
            assert channel in ("webchat", "twilio_voice"), f"{where}: refused in a 200 answer"
    stored = app.inbound_texts(out.key) if out.key else []
    if out.status == 200 and out.reason is None:
        assert stored == [out.expected], f"{where}: stored {[s[:80] for s in stored]!r}, sent {out.expected[:80]!r}"
    else:  # refused: nothing half-stored
        assert stored == [], f"{where}: refused ({out.reason}) but stored {stored!r}"
    for reply in out.replies:
        assert not _FORTY_NINE.search(reply) or "49" in HOSTILE.get(case, ""), f"{where}: evaluated? {reply!r}"
        assert "<class" not in reply and "__class__" not in reply.replace(out.expected or "", ""), \
            f"{where}: leaked {reply!r}"


@pytest.mark.parametrize("channel", list(SENDERS))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_text(hostile_app: HostileApp, channel: str, case: str) -> None:
    out = SENDERS[channel](hostile_app, HOSTILE[case])
    check(out, hostile_app, channel, case)


def test_nul_is_refused_with_a_reason_by_our_own_apis(hostile_app: HostileApp) -> None:
    rest = send_rest(hostile_app, HOSTILE["nul_control"])
    assert rest.status == 422 and "NUL" in (rest.reason or ""), rest
    web = send_webchat(hostile_app, HOSTILE["nul_control"])
    assert web.replies == [] and "NUL" in (web.reason or ""), web
    sms = send_sms(hostile_app, HOSTILE["nul_control"])  # a platform's message: answered, NUL dropped
    assert sms.status == 200 and sms.replies and hostile_app.inbound_texts(sms.key or "") == [sms.expected]


def test_tables_survive_the_sql_case(hostile_app: HostileApp) -> None:
    """After every channel sent the SQL text, the tables are there and hold it verbatim."""
    for channel, send in SENDERS.items():
        check(send(hostile_app, HOSTILE["sql"]), hostile_app, channel, "sql")
    with hostile_app.sessions() as s:
        rows = s.scalars(select(Interaction.text).where(Interaction.text.like("%DROP TABLE interactions%"))).all()
    assert len(rows) >= len(SENDERS)


# --- invalid UTF-8 bytes --------------------------------------------------------------------------

BAD = b"\xff\xfe\xc3\x28 \xed\xa0\x80 \xf0\x28\x8c\xbc"  # lone bytes, bad continuation, a surrogate, bad 4-byte


def test_invalid_utf8_rest(hostile_app: HostileApp) -> None:
    body = b'{"sender": "hostile-bytes", "message": "' + BAD + b'"}'
    r = hostile_app.http.post("/webhooks/rest/webhook", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert _detail(r)
    assert hostile_app.inbound_texts("rest:hostile-bytes") == []


def test_invalid_utf8_webchat(hostile_app: HostileApp) -> None:
    """A binary frame (the only way to send bytes that are not UTF-8) is refused with a reason."""
    session = f"hostile{_uid()}"
    frames, reason = _ws_exchange(hostile_app, session, BAD)
    assert frames == [] and reason and "binary" in reason
    frames, reason = _ws_exchange(hostile_app, session, '{"type": "message", "text": ')
    assert frames == [] and reason and "JSON" in reason
    assert hostile_app.inbound_texts(f"webchat:{_web_session(session)}") == []


@pytest.mark.parametrize("channel", ["twilio_sms", "twilio_voice"])
@pytest.mark.parametrize("encoded", [True, False], ids=["percent-encoded", "raw-bytes"])
def test_invalid_utf8_twilio(hostile_app: HostileApp, channel: str, encoded: bool) -> None:
    """Twilio's form with bytes that are not UTF-8: decoded as the form parser does, answered, stored so."""
    phone = _phone()
    bad = "".join(f"%{b:02X}" for b in BAD).encode() if encoded else BAD
    field_name = b"Body" if channel == "twilio_sms" else b"SpeechResult"
    sid = (b"MessageSid=SM" if channel == "twilio_sms" else b"CallSid=CA") + uuid.uuid4().hex.encode()
    body = b"From=" + quote(phone).encode() + b"&To=%2B15005550006&" + sid + b"&" + field_name + b"=" + bad \
        + b"+%EC%93%B0%EB%A0%88%EA%B8%B0"
    path = "/webhooks/twilio/sms" if channel == "twilio_sms" else "/webhooks/twilio/voice/gather?n=2&lang=ko"
    r = hostile_app.twilio_post_raw(path, body)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert _detail(r)
        return
    texts = _twiml(r, ("Message",) if channel == "twilio_sms" else ("Say",))
    assert texts and all(t.strip() for t in texts)
    decoded = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))[field_name.decode()].strip()
    assert hostile_app.inbound_texts(f"{channel}:{phone}") == [decoded]


@pytest.mark.parametrize("channel", ["telegram", "kakao"])
def test_invalid_utf8_json_webhooks(hostile_app: HostileApp, channel: str) -> None:
    if channel == "telegram":
        body = json.dumps(tg_update(7_900_001, "X")).encode().replace(b'"X"', b'"' + BAD + b'"')
        r = hostile_app.http.post("/webhooks/telegram", content=body, headers={
            "X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "content-type": "application/json"})
        key = "telegram:7900001"
    else:
        body = json.dumps(kakao_request("kakao-bytes", "X")).encode().replace(b'"X"', b'"' + BAD + b'"')
        r = hostile_app.http.post("/webhooks/kakao", content=body, headers={
            "X-Kakao-Skill-Secret": KAKAO_SECRET, "content-type": "application/json"})
        key = "kakao:kakao-bytes"
    assert 400 <= r.status_code < 500, r.text
    assert _detail(r)
    assert hostile_app.inbound_texts(key) == []


# --- template injection ---------------------------------------------------------------------------

def test_render_never_formats_values(hostile_app: HostileApp) -> None:
    """``Knowledge.render`` fills placeholders with values once: a value is never a format string."""
    knowledge = hostile_app.app.state.engine.knowledge
    hostile = "{0.__class__} {{7*7}} ${7*7} {lang} {channels} %s"
    text = knowledge.render("utter_my_data", "ko", channels=hostile, messages=hostile, requests=hostile)
    assert text.count(hostile) == 3
    assert "<class" not in text


@pytest.mark.parametrize("channel", list(SENDERS))
def test_form_summary_echoes_resident_text_literally(hostile_app: HostileApp, channel: str) -> None:
    """Resident text that the bot repeats (the form's confirmation summary) is never evaluated."""
    send = SENDERS[channel]
    description = "도로에 구멍이 났어요 {0.__class__} {{7*7}} ${7*7} {lang} <b>\x1b[1m</b>"
    location = "한빛로 {lang} 12 {{7*7}}"
    # One conversation: reuse the first send's sender for the next turns.
    first = send(hostile_app, description)
    check(first, hostile_app, channel, "template")
    follow = _follow_up(channel, first)
    second = follow(hostile_app, location)
    assert second.replies, second
    summary = follow(hostile_app, "네").replies
    joined = "\n".join(summary)
    clean = lambda s: re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", s)  # noqa: E731 - TwiML drops controls
    assert clean("{0.__class__} {{7*7}} ${7*7} {lang}") in clean(joined) or channel == "twilio_voice", summary
    assert "<class" not in joined and not _FORTY_NINE.search(joined), summary
    if channel != "twilio_voice":
        assert "한빛로 {lang} 12 {{7*7}}" in joined, summary


def _follow_up(channel: str, first: Outcome) -> Callable[[HostileApp, str], Outcome]:
    """A sender that continues ``first``'s conversation on ``channel``."""
    assert first.key is not None
    sender = first.key.split(":", 1)[1]
    if channel == "rest":
        def rest(app: HostileApp, message: str) -> Outcome:
            r = app.http.post("/webhooks/rest/webhook", json={"sender": sender, "message": message})
            assert r.status_code == 200, r.text
            return Outcome(200, [i["text"] for i in r.json()], key=first.key, expected=message)
        return rest
    if channel == "webchat":
        def web(app: HostileApp, message: str) -> Outcome:
            frame = {"type": "message", "text": message, "id": f"f{next(_seq)}"}  # ids are delivery ids
            frames, reason = _ws_exchange(app, _WEB_KEYS[sender], json.dumps(frame))
            assert reason is None, reason
            return Outcome(200, [f["text"] for f in frames], key=first.key, expected=message)
        return web
    if channel == "twilio_sms":
        def sms(app: HostileApp, message: str) -> Outcome:
            r = app.twilio_post("/webhooks/twilio/sms", {"From": sender, "To": "+15005550006", "Body": message,
                                                         "MessageSid": "SM" + uuid.uuid4().hex})
            return Outcome(r.status_code, _twiml(r, ("Message",)), key=first.key, expected=message)
        return sms
    if channel == "twilio_voice":
        call = "CA" + uuid.uuid4().hex
        n = itertools.count(3)

        def voice(app: HostileApp, message: str) -> Outcome:
            r = app.twilio_post(f"/webhooks/twilio/voice/gather?n={next(n)}&lang=ko",
                                {"CallSid": call, "From": sender, "SpeechResult": message, "Confidence": "0.9"})
            return Outcome(r.status_code, _twiml(r, ("Say",)), key=first.key, expected=message)
        return voice
    if channel == "telegram":
        def tg(app: HostileApp, message: str) -> Outcome:
            chat = int(sender)
            before = len(app.fake.sent(chat))
            r = app.http.post("/webhooks/telegram", json=tg_update(chat, message),
                              headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
            assert r.status_code == 200, r.text
            return Outcome(200, [m["text"] for m in app.fake.sent(chat)[before:]], key=first.key, expected=message)
        return tg

    def kakao(app: HostileApp, message: str) -> Outcome:
        r = app.http.post("/webhooks/kakao", json=kakao_request(sender, message),
                          headers={"X-Kakao-Skill-Secret": KAKAO_SECRET})
        assert r.status_code == 200, r.text
        outputs = r.json()["template"]["outputs"]
        return Outcome(200, [o["simpleText"]["text"] if "simpleText" in o else o["textCard"]["description"]
                             for o in outputs], key=first.key, expected=message)
    return kakao


# --- personal data in logs ------------------------------------------------------------------------

LOGGERS = ("pcrm", "uvicorn", "uvicorn.error", "uvicorn.access", "bot", "channels", "crm_store")


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of our loggers and uvicorn's at DEBUG (uvicorn's own loggers do not propagate)."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    extra = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    for lg in extra:
        lg.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        for lg in extra:
            lg.removeHandler(caplog.handler)


def _leaks(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = []
    formatter = logging.Formatter()
    for record in caplog.records:
        rendered = record.getMessage()
        if record.exc_info:
            rendered += "\n" + formatter.formatException(record.exc_info)
        if record.exc_text:
            rendered += "\n" + record.exc_text
        for raw in PII_RAW:
            if raw in rendered:
                found.append(f"{record.name}:{record.levelname}: {raw} in {rendered[:300]!r}")
    return found


@pytest.mark.parametrize("channel", list(SENDERS))
def test_personal_data_is_masked_in_logs(hostile_app: HostileApp, all_logs: pytest.LogCaptureFixture,
                                         channel: str) -> None:
    out = SENDERS[channel](hostile_app, PII_TEXT)
    check(out, hostile_app, channel, "pii")
    assert not _leaks(all_logs), _leaks(all_logs)


def test_personal_data_is_masked_in_failure_logs(hostile_app: HostileApp,
                                                 all_logs: pytest.LogCaptureFixture) -> None:
    """Failures log tracebacks, and tracebacks quote SQL parameters and conversation keys (a phone
    number for SMS): a turn that fails for a caller with personal data in the text still logs none."""
    engine = hostile_app.app.state.engine
    original = engine._decide

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError(f"policy exploded on {PII_TEXT!r}")

    engine._decide = broken
    try:
        phone = "+821012345678"
        r = hostile_app.twilio_post("/webhooks/twilio/sms", {
            "From": phone, "To": "+15005550006", "Body": PII_TEXT, "MessageSid": "SM" + uuid.uuid4().hex})
        assert r.status_code == 200, r.text
        assert _twiml(r, ("Message",))  # the apology
    finally:
        engine._decide = original
    assert any(rec.levelno >= logging.ERROR for rec in all_logs.records), "the failure was not logged at all"
    assert not _leaks(all_logs), _leaks(all_logs)


def test_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    from bot.logging_setup import PiiMaskingFilter

    f = PiiMaskingFilter()
    try:
        raise ValueError(f"bad row {PII_TEXT}")
    except ValueError:
        import sys

        rec = logging.LogRecord("pcrm.x", logging.ERROR, __file__, 1, "from %s: %s", ("+821012345678", PII_TEXT),
                                sys.exc_info())
    assert f.filter(rec) is True
    rendered = logging.Formatter().format(rec)
    for raw in PII_RAW:
        assert raw not in rendered, rendered
    assert "900101-1******" in rendered


def test_pii_filter_keeps_uvicorn_access_records_formattable():
    """uvicorn's access formatter unpacks ``record.args``: masking must keep them a tuple."""
    import logging

    from uvicorn.logging import AccessFormatter

    from bot.logging_setup import PiiMaskingFilter

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/x?phone=010-1234-5678", "1.1", 200), None)
    assert PiiMaskingFilter().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert "010-1234-5678" not in line and "200" in line and "GET" in line
