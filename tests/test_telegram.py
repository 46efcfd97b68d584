"""Telegram channel end to end: real Update JSON → our webhook (uvicorn) → engine → a fake Bot API.

The fake Bot API is a real HTTP server on 127.0.0.1 that records every method
call PTB makes and answers as Telegram does; it can answer 429 (with
``parameters.retry_after``) or 403 on demand.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.app import create_app
from bot.messages import Button, Reply
from bot.settings import Settings
from crm_store import residents
from crm_store.models import ChannelIdentity, Resident, ServiceRequest
from tests.channel_servers import ServerThread

# PTB itself reads RetryAfter.retry_after as an int when building the exception (deprecated in 22.2).
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123:ABC"
SECRET = "s3cret"
BOT_USER = {"id": 123, "is_bot": True, "first_name": "한빛구청", "username": "hanbit_bot"}


class FakeBotApi:
    """Answers ``/bot<token>/<method>`` like the Bot API and records each call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1000)
        self.updates: list[dict[str, Any]] = []  # what the next getUpdates returns
        self.app = Starlette(routes=[
            Route("/bot{token}/{method}", self.method, methods=["GET", "POST"]),
            Route("/file/bot{token}/{path:path}", self.file, methods=["GET"]),
        ])

    def fail(self, method: str, status: int, chat_id: int | None = None, retry_after: int | None = None,
             times: int = 1) -> None:
        with self._lock:
            self._failures.append({"method": method, "status": status, "chat_id": chat_id,
                                   "retry_after": retry_after, "times": times})

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def sent(self, chat_id: int) -> list[dict[str, Any]]:
        """Successful sendMessage calls to ``chat_id``."""
        return [c["params"] for c in self.calls
                if c["method"] == "sendMessage" and c["status"] == 200 and c["params"].get("chat_id") == chat_id]

    def attempts(self, chat_id: int) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["method"] == "sendMessage" and c["params"].get("chat_id") == chat_id]

    def _failure_for(self, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            for f in self._failures:
                if f["method"] == method and f["times"] > 0 and f["chat_id"] in (None, params.get("chat_id")):
                    f["times"] -= 1
                    return f
        return None

    async def method(self, request: Request) -> Response:
        assert request.path_params["token"] == TOKEN
        method = request.path_params["method"]
        params: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/json"):
            params = await request.json()
        else:
            form = await request.form()
            for k, v in form.items():
                params[k] = json.loads(v) if k in ("reply_markup", "allowed_updates") else v
        if "chat_id" in params:
            params["chat_id"] = int(params["chat_id"])
        fail = self._failure_for(method, params)
        status = fail["status"] if fail else 200
        self.calls.append({"method": method, "params": params, "status": status, "t": time.monotonic()})
        if fail and status == 429:
            return JSONResponse({"ok": False, "error_code": 429,
                                 "description": f"Too Many Requests: retry after {fail['retry_after']}",
                                 "parameters": {"retry_after": fail["retry_after"]}}, status_code=429)
        if fail:
            return JSONResponse({"ok": False, "error_code": status,
                                 "description": "Forbidden: bot was blocked by the user"}, status_code=status)
        return JSONResponse({"ok": True, "result": self._result(method, params)})

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        if method == "sendMessage":
            chat_id = params["chat_id"]
            msg: dict[str, Any] = {"message_id": next(self._ids), "date": int(time.time()), "from": BOT_USER,
                                   "chat": {"id": chat_id, "type": "private"}, "text": params.get("text", "")}
            if isinstance(params.get("reply_markup"), dict) and "inline_keyboard" in params["reply_markup"]:
                msg["reply_markup"] = params["reply_markup"]
            return msg
        if method == "getUpdates":
            with self._lock:
                queued, self.updates = self.updates, []
            return queued
        if method == "getFile":
            return {"file_id": params["file_id"], "file_unique_id": "u" + params["file_id"][-6:],
                    "file_size": 4, "file_path": f"photos/{params['file_id']}.jpg"}
        return True  # answerCallbackQuery, setWebhook, deleteWebhook

    async def file(self, request: Request) -> Response:
        return Response(b"\xff\xd8\xff\xe0", media_type="application/octet-stream")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBotApi]:
    api = FakeBotApi()
    server = ServerThread(api.app).start()
    api.url = server.url  # type: ignore[attr-defined]
    yield api
    server.stop()


@pytest.fixture(scope="module")
def live(fake: FakeBotApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    db = tmp_path_factory.mktemp("tg") / "pcrm.db"
    settings = Settings(database_url=f"sqlite:///{db}", pcrm_model_dir=ROOT / "var" / "model",
                        telegram_bot_token=TOKEN, telegram_webhook_secret=SECRET,
                        telegram_api_base_url=fake.url,  # type: ignore[attr-defined]
                        kakao_skill_secret="k", pcrm_public_url="https://pcrm.example.kr")
    app = create_app(settings)
    server = ServerThread(app).start()
    server.app = app  # type: ignore[attr-defined]
    yield server
    server.stop()


_update_ids = itertools.count(500000)
_message_ids = itertools.count(1)


def user(chat_id: int, lang: str = "ko") -> dict[str, Any]:
    return {"id": chat_id, "is_bot": False, "first_name": "민수", "language_code": lang}


def message_update(chat_id: int, text: str | None = None, lang: str = "ko", update_id: int | None = None,
                   **fields: Any) -> dict[str, Any]:
    """A private-chat ``message`` update as Telegram posts it."""
    msg: dict[str, Any] = {"message_id": next(_message_ids), "date": int(time.time()), "from": user(chat_id, lang),
                           "chat": {"id": chat_id, "type": "private", "first_name": "민수"}, **fields}
    if text is not None:
        msg["text"] = text
        if text.startswith("/"):
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return {"update_id": update_id if update_id is not None else next(_update_ids), "message": msg}


def callback_update(chat_id: int, data: str) -> dict[str, Any]:
    return {"update_id": next(_update_ids), "callback_query": {
        "id": f"cq{next(_message_ids)}", "from": user(chat_id), "chat_instance": "-77", "data": data,
        "message": {"message_id": next(_message_ids), "date": int(time.time()), "from": BOT_USER,
                    "chat": {"id": chat_id, "type": "private"}, "text": "이대로 접수할까요?"}}}


def post(live: ServerThread, update: dict[str, Any] | bytes, secret: str | None = SECRET) -> httpx.Response:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    if isinstance(update, bytes):
        return httpx.post(f"{live.url}/webhooks/telegram", content=update,
                          headers={**headers, "content-type": "application/json"}, timeout=60)
    return httpx.post(f"{live.url}/webhooks/telegram", json=update, headers=headers, timeout=60)


def say(live: ServerThread, fake: FakeBotApi, chat_id: int, update: dict[str, Any]) -> list[dict[str, Any]]:
    """Post ``update`` and return the messages the bot sent in answer."""
    before = len(fake.sent(chat_id))
    r = post(live, update)
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True}
    return fake.sent(chat_id)[before:]


def sessions(live: ServerThread) -> Any:
    return live.app.state.sessions  # type: ignore[attr-defined]


def test_garbage_question_answered(live: ServerThread, fake: FakeBotApi) -> None:
    out = say(live, fake, 1001, message_update(1001, "쓰레기 언제 버려요?"))
    assert len(out) == 1
    assert "배출" in out[0]["text"] and "20:00" in out[0]["text"]


def test_wrong_or_missing_secret_is_refused(live: ServerThread, fake: FakeBotApi) -> None:
    upd = message_update(1002, "쓰레기 언제 버려요?")
    assert post(live, upd, secret="wrong").status_code == 403
    assert post(live, upd, secret=None).status_code == 403
    assert fake.attempts(1002) == []
    bad = post(live, b"{not json")
    assert bad.status_code == 400 and "JSON" in bad.json()["detail"]
    shape = post(live, {"message": {"text": "hi"}})
    assert shape.status_code == 400 and "update_id" in shape.json()["detail"]


def test_service_request_with_location_photo_and_buttons(live: ServerThread, fake: FakeBotApi) -> None:
    chat = 1003
    asked = say(live, fake, chat, message_update(chat, "집 앞 도로에 포트홀이 생겼어요"))
    keyboard = asked[-1]["reply_markup"]["keyboard"]
    assert keyboard[0][0]["request_location"] is True
    assert keyboard[1][0]["request_contact"] is True

    say(live, fake, chat, message_update(chat, location={"latitude": 37.566295, "longitude": 126.977945}))
    photo = [{"file_id": "AgACsmall01", "file_unique_id": "s1", "width": 90, "height": 67, "file_size": 1200},
             {"file_id": "AgACbig0001", "file_unique_id": "b1", "width": 1280, "height": 960, "file_size": 99000}]
    say(live, fake, chat, message_update(chat, photo=photo, caption="사진이에요"))
    consent = say(live, fake, chat, message_update(chat, "네"))
    buttons = consent[-1]["reply_markup"]["inline_keyboard"]
    yes = buttons[0][0]
    assert yes["text"] == "예"

    opened = say(live, fake, chat, callback_update(chat, yes["callback_data"]))
    assert any(c["method"] == "answerCallbackQuery" for c in fake.calls)
    ticket = re.search(r"\d{4}-\d{6}", opened[-1]["text"])
    assert ticket, opened
    with sessions(live)() as s:
        row = s.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == ticket.group())).one()
        assert row.service_code == "roads.pothole"
        assert row.lat == pytest.approx(37.566295) and row.long == pytest.approx(126.977945)
        assert row.media_url == "https://pcrm.example.kr/webhooks/telegram/file/AgACbig0001"

    # The resident's photo: not for anonymous callers (it was public), nor for another department.
    path = "/webhooks/telegram/file/AgACbig0001"
    assert httpx.get(f"{live.url}{path}", timeout=10).status_code == 401
    assert not any(c["method"] == "getFile" for c in fake.calls)
    assert staff_get(live, "tg-waste", ["waste"], path).status_code == 403
    r = staff_get(live, "tg-roads", ["roads"], path)
    assert r.status_code == 200 and r.content == b"\xff\xd8\xff\xe0"
    assert any(c["method"] == "getFile" for c in fake.calls)
    # A signed URL (what Open311 key holders get) works without a session until it expires.
    from bot.media_access import signed_url

    settings = live.app.state.settings  # type: ignore[attr-defined]
    assert httpx.get(live.url + signed_url(settings, path), timeout=10).status_code == 200
    assert httpx.get(live.url + signed_url(settings, path, ttl_s=-5), timeout=10).status_code == 401
    assert httpx.get(live.url + signed_url(settings, path)[:-3] + "abc", timeout=10).status_code == 401


def staff_get(live: ServerThread, username: str, departments: list[str], path: str) -> httpx.Response:
    """GET ``path`` as a freshly logged-in agent of ``departments``."""
    from bot.console.auth import create_agent

    create_agent(sessions(live), username, "tg-staff-passphrase", "agent", departments)
    with httpx.Client(base_url=live.url, timeout=10) as c:
        c.get("/console/login")
        r = c.post("/console/login", data={"username": username, "password": "tg-staff-passphrase",
                                           "csrf_token": c.cookies["pcrm_csrf"]})
        assert r.status_code in (200, 303), r.text
        return c.get(path)


def test_contact_share_merges_with_sms_profile(live: ServerThread, fake: FakeBotApi) -> None:
    with sessions(live).begin() as s:
        sms_resident = residents.identify(s, "twilio_sms", "010-5555-0101").id
    chat = 1004
    say(live, fake, chat, message_update(chat, "안녕하세요"))
    someone_else = {"phone_number": "821099990000", "first_name": "친구", "user_id": 999}
    say(live, fake, chat, message_update(chat, contact=someone_else))
    own = {"phone_number": "821055550101", "first_name": "민수", "user_id": chat}
    say(live, fake, chat, message_update(chat, contact=own))

    with sessions(live)() as s:
        idents = s.scalars(select(ChannelIdentity)).all()
        by_key = {(i.channel, i.external_id): i.resident_id for i in idents}
        tg = by_key[("telegram", str(chat))]
        assert tg == by_key[("twilio_sms", "+821055550101")] == by_key[("phone", "+821055550101")]
        assert ("phone", "+821099990000") not in by_key  # somebody else's card links nothing
        survivor = s.get(Resident, sms_resident)
        assert survivor is not None and survivor.merged_into_id is None and tg == sms_resident


def test_duplicate_update_is_processed_once(live: ServerThread, fake: FakeBotApi) -> None:
    chat = 1005
    upd = message_update(chat, "여권 발급 얼마나 걸려요?")
    first = say(live, fake, chat, upd)
    again = say(live, fake, chat, upd)
    assert len(first) == 1 and "여권" in first[0]["text"]
    assert again == []
    from crm_store.models import Interaction

    with sessions(live)() as s:
        rows = s.scalars(select(Interaction).where(Interaction.channel == "telegram",
                                                   Interaction.message_id == f"tg:{upd['update_id']}")).all()
        assert len(rows) == 1


def test_flood_limit_retry_after_is_respected(live: ServerThread, fake: FakeBotApi) -> None:
    chat = 1006
    fake.fail("sendMessage", 429, chat_id=chat, retry_after=1)
    out = say(live, fake, chat, message_update(chat, "쓰레기 언제 버려요?"))
    attempts = fake.attempts(chat)
    assert [a["status"] for a in attempts] == [429, 200]
    waited = attempts[1]["t"] - attempts[0]["t"]
    print(f"retried after {waited:.2f} s")
    assert waited >= 0.95
    assert len(out) == 1


def test_blocked_bot_marks_identity_unreachable(live: ServerThread, fake: FakeBotApi) -> None:
    chat = 1007
    fake.fail("sendMessage", 403, chat_id=chat, times=100)
    post(live, message_update(chat, "쓰레기 언제 버려요?")).raise_for_status()

    def reachable() -> bool:
        with sessions(live)() as s:
            return s.scalars(select(ChannelIdentity.reachable).where(
                ChannelIdentity.channel == "telegram", ChannelIdentity.external_id == str(chat))).one()

    assert reachable() is False
    adapter = live.app.state.channels["telegram"]  # type: ignore[attr-defined]
    n = len(fake.attempts(chat))
    assert live.call(adapter.send(str(chat), [Reply("상담원 답변입니다.")])) is False
    assert len(fake.attempts(chat)) == n + 1  # one try, no retry loop on 403
    fake.clear_failures()
    say(live, fake, chat, message_update(chat, "/start"))
    assert reachable() is True  # wrote to us again: unblocked
    assert live.call(adapter.send(str(chat), [Reply("상담원 답변입니다.")])) is True
    assert fake.sent(chat)[-1]["text"] == "상담원 답변입니다."


def test_commands(live: ServerThread, fake: FakeBotApi) -> None:
    chat = 1008
    start = say(live, fake, chat, message_update(chat, "/start"))
    assert "안녕하세요" in start[0]["text"]
    help_ = say(live, fake, chat, message_update(chat, "/help"))
    assert "상담원" in help_[0]["text"] and "02-2100-1000" in help_[0]["text"]
    english = say(live, fake, chat, message_update(chat, "/lang"))
    assert english[0]["text"].startswith("Hello")
    korean = say(live, fake, chat, message_update(chat, "/lang@hanbit_bot"))
    assert korean[0]["text"].startswith("안녕하세요")
    human = say(live, fake, chat, message_update(chat, "/human"))
    # A hand-off to the general desk (during office hours or after them). The engine currently
    # answers "/<label>" payloads in English (script detection sees Latin letters).
    # After hours the bot says when people are back and offers a call-back instead.
    text = " ".join(m["text"] for m in human)
    assert "민원상담실" in text or "General Inquiry Desk" in text or "09:00" in text


def test_english_user_and_long_button_payloads(live: ServerThread, fake: FakeBotApi) -> None:
    out = say(live, fake, 1009, message_update(1009, "/start", lang="en-US"))
    assert out[0]["text"].startswith("Hello")
    adapter = live.app.state.channels["telegram"]  # type: ignore[attr-defined]
    long_payload = "/" + "x" * 100
    rendered = adapter.render(Reply("pick", [Button("긴 버튼", long_payload), Button("예", "예")]), "ko")
    rows = rendered[0]["reply_markup"].inline_keyboard
    short = rows[0][0].callback_data
    assert len(short.encode()) <= 64 and rows[1][0].callback_data == "예"
    msg = live.call(adapter.to_message(_update(adapter, callback_update(1009, short))))
    assert msg.text == long_payload


def _update(adapter: Any, data: dict[str, Any]) -> Any:
    from telegram import Update

    return Update.de_json(data, adapter._bot)


def test_cli_set_webhook_and_polling(live: ServerThread, fake: FakeBotApi) -> None:
    import asyncio

    from channels.telegram import TelegramChannel, poll, set_webhook

    settings = live.app.state.settings  # type: ignore[attr-defined]
    assert asyncio.run(set_webhook(settings)) == "https://pcrm.example.kr/webhooks/telegram"
    hook = [c["params"] for c in fake.calls if c["method"] == "setWebhook"][-1]
    assert hook["url"] == "https://pcrm.example.kr/webhooks/telegram" and hook["secret_token"] == SECRET

    chat = 1010
    fake.updates = [message_update(chat, "여권 발급 얼마나 걸려요?")]

    async def run() -> None:
        adapter = TelegramChannel(live.app.state.inbox, settings)  # type: ignore[attr-defined]
        stop = asyncio.Event()
        task = asyncio.create_task(poll(adapter, stop, timeout=0))
        for _ in range(200):
            if fake.sent(chat):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(run())
    assert any(c["method"] == "deleteWebhook" for c in fake.calls)
    assert "여권" in fake.sent(chat)[0]["text"]
