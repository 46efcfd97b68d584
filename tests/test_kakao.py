"""KakaoTalk skill server end to end: real skill-request shapes → our app under uvicorn.

Every response is validated against ``kakao_response.schema.json`` (the public
skill response format 2.0) and answered well inside Kakao's 5-second limit.
Hand-off answers go to a local fake of Kakao's callback endpoint.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.app import create_app
from bot.messages import Reply
from bot.settings import Settings
from channels.kakao import shorten
from crm_store.models import Conversation, Interaction, ServiceRequest
from tests.channel_servers import ServerThread

ROOT = Path(__file__).resolve().parent.parent
SECRET = "k"
SCHEMA = json.loads((Path(__file__).parent / "kakao_response.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
OFFICE_OPEN = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 11:00 in Seoul


class FakeCallbacks:
    """Kakao's callback endpoint: records what was posted to ``/callback/<token>``."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.app = Starlette(routes=[Route("/callback/{token}", self.callback, methods=["POST"])])

    async def callback(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self.cond:
            self.posts.append((request.path_params["token"], body))
            self.cond.notify_all()
        return JSONResponse({"taskId": "t-" + request.path_params["token"], "status": "SUCCESS",
                             "message": None, "timestamp": int(time.time() * 1000)})

    def wait_for(self, token: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, body in self.posts:
                    if t == token:
                        return body
                left = deadline - time.monotonic()
                assert left > 0, f"nothing posted to callback {token}"
                self.cond.wait(left)


@pytest.fixture(scope="module")
def callbacks() -> Iterator[FakeCallbacks]:
    fake = FakeCallbacks()
    server = ServerThread(fake.app).start()
    fake.url = server.url  # type: ignore[attr-defined]
    yield fake
    server.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    db = tmp_path_factory.mktemp("kakao") / "pcrm.db"
    settings = Settings(database_url=f"sqlite:///{db}", pcrm_model_dir=ROOT / "var" / "model",
                        telegram_bot_token="123:ABC", telegram_webhook_secret="s3cret",
                        telegram_api_base_url="http://127.0.0.1:9", kakao_skill_secret=SECRET,
                        kakao_callback_hosts=".kakao.com,http://127.0.0.1")  # the fake callback endpoint
    app = create_app(settings)
    server = ServerThread(app).start()
    server.app = app  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def office_open(live: ServerThread) -> Iterator[None]:
    engine = live.app.state.engine  # type: ignore[attr-defined]
    clock = engine.clock
    engine.clock = lambda: OFFICE_OPEN
    yield
    engine.clock = clock


@pytest.fixture
def adapter(live: ServerThread) -> Any:
    return live.app.state.channels["kakao"]  # type: ignore[attr-defined]


_ids = itertools.count(1)


def skill_request(user_id: str, utterance: str, callback_url: str | None = None,
                  params: dict[str, str] | None = None) -> dict[str, Any]:
    """A skill request as Open Builder posts it (fallback block, botUserKey user)."""
    user_request: dict[str, Any] = {
        "timezone": "Asia/Seoul",
        "params": {"ignoreMe": "true", "surface": "Kakaotalk.plusfriend"},
        "block": {"id": "5f1a0b2c3d4e5f6a7b8c9d0e", "name": "폴백 블록"},
        "utterance": utterance,
        "lang": "ko",
        "user": {"id": user_id, "type": "botUserKey",
                 "properties": {"botUserKey": user_id, "bot_user_key": user_id,
                                "plusfriendUserKey": "pf-" + user_id[:8], "isFriend": True}},
    }
    if callback_url:
        user_request["callbackUrl"] = callback_url
    params = params or {}
    return {
        "intent": {"id": "5f1a0b2c3d4e5f6a7b8c9d0e", "name": "폴백 블록", "extra": {"reason": {"code": 1}}},
        "userRequest": user_request,
        "bot": {"id": "64a1b2c3d4e5f6a7b8c9d0e1", "name": "한빛구청 민원봇"},
        "action": {"name": "pcrm", "clientExtra": None, "id": "64a1b2c3d4e5f6a7b8c9d0f2",
                   "params": params,
                   "detailParams": {k: {"origin": v, "value": v, "groupName": ""} for k, v in params.items()}},
        "contexts": [],
    }


def post(live: ServerThread, body: Any, secret: str | None = SECRET) -> httpx.Response:
    headers = {"X-Kakao-Skill-Secret": secret} if secret is not None else {}
    started = time.perf_counter()
    if isinstance(body, bytes):
        r = httpx.post(f"{live.url}/webhooks/kakao", content=body,
                       headers={**headers, "content-type": "application/json"}, timeout=30)
    else:
        r = httpx.post(f"{live.url}/webhooks/kakao", json=body, headers=headers, timeout=30)
    elapsed = time.perf_counter() - started
    if r.status_code == 200:
        VALIDATOR.validate(r.json())
        print(f"kakao answered in {elapsed * 1000:.0f} ms")
        assert elapsed < 5.0, f"answer took {elapsed:.2f} s; Kakao gives up after 5 s"
    return r


def texts(response: dict[str, Any]) -> list[str]:
    out = []
    for o in response["template"]["outputs"]:
        if "simpleText" in o:
            out.append(o["simpleText"]["text"])
        elif "textCard" in o:
            out.append(o["textCard"].get("description", ""))
    return out


def new_user() -> str:
    return f"kakao-user-{next(_ids):04d}-" + "a1b2c3d4e5f6"


def test_passport_question(live: ServerThread) -> None:
    r = post(live, skill_request(new_user(), "여권 발급 얼마나 걸려요?"))
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == "2.0"
    out = body["template"]["outputs"][0]
    # A knowledge-base answer with a source link comes as a text card with the link as a button.
    simple = out["simpleText"]["text"] if "simpleText" in out else out["textCard"]["description"]
    assert "여권" in simple and "업무일" in simple


def test_secret_and_malformed_requests(live: ServerThread) -> None:
    req = skill_request(new_user(), "여권 발급 얼마나 걸려요?")
    assert post(live, req, secret="nope").status_code == 403
    assert post(live, req, secret=None).status_code == 403
    bad = post(live, b"{oops")
    assert bad.status_code == 400 and "JSON" in bad.json()["detail"]
    no_user = skill_request("x", "안녕")
    del no_user["userRequest"]["user"]
    r = post(live, no_user)
    assert r.status_code == 400 and "user.id" in r.json()["detail"]
    no_utterance = skill_request("x", "안녕")
    no_utterance["userRequest"]["utterance"] = 3
    assert post(live, no_utterance).status_code == 400
    assert post(live, [1, 2]).status_code == 400


def test_certificate_answer_is_a_card_linking_gov24(live: ServerThread) -> None:
    body = post(live, skill_request(new_user(), "주민등록등본 어떻게 떼요?")).json()
    card = body["template"]["outputs"][0]["textCard"]
    assert "등본" in card["description"]
    assert card["buttons"] == [{"action": "webLink", "label": "정부24", "webLinkUrl": "https://www.gov.kr"}]


def test_service_request_with_location_param_and_quick_replies(live: ServerThread) -> None:
    user = new_user()
    asked = post(live, skill_request(user, "집 앞 도로에 포트홀이 생겼어요")).json()
    assert "위치" in texts(asked)[0]
    located = post(live, skill_request(user, "한빛구 중앙로 100 앞이요",
                                       params={"sys_location": "한빛구 중앙로 100"})).json()
    quick = located["template"]["quickReplies"]
    assert [q["label"] for q in quick] == ["예", "아니요"]
    # Two identical, quickly answered utterances are two messages, not a retry.
    summary = post(live, skill_request(user, quick[0]["messageText"])).json()
    assert "이대로 접수할까요" in texts(summary)[0]
    opened = post(live, skill_request(user, summary["template"]["quickReplies"][0]["messageText"])).json()
    ticket = re.search(r"\d{4}-\d{6}", texts(opened)[0])
    assert ticket, opened
    with live.app.state.sessions() as s:  # type: ignore[attr-defined]
        row = s.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == ticket.group())).one()
        assert row.service_code == "roads.pothole" and "중앙로 100" in (row.address_string or "")
        assert row.channel == "kakao"


def test_handoff_answer_delivered_through_callback(live: ServerThread, callbacks: FakeCallbacks,
                                                   adapter: Any, office_open: None) -> None:
    user = new_user()
    url = f"{callbacks.url}/callback/{user}"  # type: ignore[attr-defined]
    r = post(live, skill_request(user, "상담원 연결해 주세요", callback_url=url)).json()
    assert r == {"version": "2.0", "useCallback": True, "data": {"text": "상담원 연결 중..."}}

    agent = "상담원 김민지입니다. 무엇을 도와드릴까요?"
    assert live.call(adapter.send(user, [Reply(agent)])) is True
    posted = callbacks.wait_for(user)
    VALIDATOR.validate(posted)
    assert posted["template"]["outputs"][0]["simpleText"]["text"] == agent

    # The callback is used up: the next answer waits for the resident's next message.
    later = "서류는 신분증만 있으면 돼요."
    assert live.call(adapter.send(user, [Reply(later)])) is False
    nxt = post(live, skill_request(user, "네 알겠습니다")).json()
    assert texts(nxt) == [later]
    quiet = post(live, skill_request(user, "감사합니다")).json()
    assert texts(quiet) == ["메시지를 전달했어요."]  # paused: the agent has it, the bot stays out


def test_handoff_without_callback_answers_in_place(live: ServerThread, adapter: Any, office_open: None) -> None:
    user = new_user()
    body = post(live, skill_request(user, "상담원 연결해 주세요")).json()
    assert "상담원에게 연결" in texts(body)[0]
    assert live.call(adapter.send(user, [Reply("상담원입니다.")])) is False  # no way to push: kept
    nxt = post(live, skill_request(user, "여보세요?")).json()
    assert texts(nxt)[0] == "상담원입니다."


def test_unanswered_callback_gets_the_bots_handoff_message(live: ServerThread, callbacks: FakeCallbacks,
                                                          adapter: Any, office_open: None) -> None:
    user = new_user()
    adapter.callback_fallback_after = 0.3
    try:
        url = f"{callbacks.url}/callback/{user}"  # type: ignore[attr-defined]
        assert post(live, skill_request(user, "상담원 연결해 주세요", callback_url=url)).json()["useCallback"]
        posted = callbacks.wait_for(user)
    finally:
        adapter.callback_fallback_after = 50.0
    VALIDATOR.validate(posted)
    assert "상담원에게 연결" in posted["template"]["outputs"][0]["simpleText"]["text"]


def test_emergency_never_waits_for_a_callback(live: ServerThread, callbacks: FakeCallbacks,
                                             office_open: None) -> None:
    user = new_user()
    url = f"{callbacks.url}/callback/{user}"  # type: ignore[attr-defined]
    body = post(live, skill_request(user, "불이 났어요 연기가 가득해요", callback_url=url)).json()
    assert "template" in body and "119" in " ".join(texts(body))


def test_repeated_delivery_is_processed_once(live: ServerThread, adapter: Any) -> None:
    user = new_user()
    req = skill_request(user, "쓰레기 언제 버려요?")
    adapter.slow_answer = 0.0  # treat every answer as one Kakao may have timed out on
    try:
        first = post(live, req).json()
        again = post(live, req).json()
    finally:
        adapter.slow_answer = 4.5
    assert first == again and "배출" in texts(first)[0]
    with live.app.state.sessions() as s:  # type: ignore[attr-defined]
        n = s.scalar(select(func.count()).select_from(Interaction).where(
            Interaction.channel == "kakao", Interaction.direction == "in", Interaction.text == "쓰레기 언제 버려요?",
            Interaction.conversation_id == select(Conversation.id).where(Conversation.key == f"kakao:{user}")
            .scalar_subquery()))
    assert n == 1


def test_labels_are_shortened_sensibly() -> None:
    assert shorten("예") == "예"
    assert shorten("도로 파손(포트홀) 신고") == "도로 파손(포트홀) 신고"
    assert shorten("Pothole report (roads and sidewalks)") == "Pothole report"
    s = shorten("Missed garbage collection")
    assert len(s) <= 14 and s == "Missed garbag…"
    assert shorten("Report a broken streetlight") == "Report a…"
    long_ko = shorten("생명·재난 긴급 상황 119/112 안내 후 연결")
    assert len(long_ko) <= 14 and long_ko.endswith("…")


@pytest.mark.parametrize("url", ["https://evil.example/steal", "http://169.254.169.254/latest/meta-data",
                                 "https://kakao.com.evil.example/x", "https://evilkakao.com/x", "ftp://bot-api.kakao.com/x",
                                 "javascript:alert(1)"])
def test_callback_urls_only_to_kakao(live: ServerThread, url: str) -> None:
    """A Kakao ``callbackUrl`` could point anywhere: we would have POSTed the conversation there."""
    r = post(live, skill_request("cb-user-1", "상담원 연결해 주세요", callback_url=url))
    assert r.status_code == 400 and "callbackUrl" in r.json()["detail"]


def test_callback_allow_list_accepts_kakaos_hosts() -> None:
    from channels.kakao import callback_allowed

    hosts = ".kakao.com,.kakaoenterprise.com"
    assert callback_allowed("https://bot-api.kakao.com/callback/abc", hosts)
    assert callback_allowed("https://kakao.com/callback/abc", hosts)
    assert not callback_allowed("http://bot-api.kakao.com/callback/abc", hosts)
    assert not callback_allowed("https://bot-api.kakao.com.evil.example/", hosts)
