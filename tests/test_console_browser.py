"""The agent console in a real browser (Debian's headless Chromium) against the real app under uvicorn.

An agent logs in and watches the queue; a resident talks to the web chat widget and asks
for a person; the hand-off appears live on the agent's queue; the agent opens it,
answers, and the resident's widget shows the answer; the agent resolves and the
resident is asked for a rating.  The console pages are audited with axe-core (no
serious or critical violation).  Without Chromium or axe-core these tests skip, unless
``CI=true`` (then they fail).

The server has its own temporary database and a copy of ``config.yml`` with the office
always open, so the hand-off is queued rather than turned into a call-back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bot.console.auth import create_agent
from bot.settings import ROOT, Settings
from tests.channel_servers import ServerThread
from tests.fixtures_browser import ask, bot_texts, serious_violations
from tests.fixtures_server import LiveServer
from tests.test_console_api import always_open_config

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000
PASSWORD = "browser-agent-password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The whole app under uvicorn on a free port, office always open, with one waste agent."""

    from bot.app import create_app

    tmp = tmp_path_factory.mktemp("console-browser")
    settings = Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None,
                        pcrm_config=always_open_config(tmp), pcrm_model_dir=ROOT / "var" / "model")
    app = create_app(settings)
    create_agent(app.state.sessions, "waste-agent", PASSWORD, "agent", ["waste"], "김청소")
    server = ServerThread(app).start()
    try:
        yield server
    finally:
        server.stop()


def new_page(browser: Any, base_url: str) -> tuple[Any, Any]:
    context = browser.new_context(base_url=base_url, bypass_csp=True, locale="ko-KR",
                                  viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    return context, pg


def say(pg: Any, text: str) -> None:
    """Type into the widget and press Enter, without waiting for the bot."""
    box = pg.get_by_label("메시지 입력")
    box.fill(text)
    box.press("Enter")
    pg.wait_for_function(
        "t => [...document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-resident .pcrm-wc-text')]"
        ".some(e => e.textContent === t)", arg=text)


def test_login_page_passes_axe(browser: Any, server: LiveServer) -> None:
    context, pg = new_page(browser, server.url)
    try:
        pg.goto("/console")
        pg.wait_for_url("**/console/login**")
        assert pg.evaluate("document.documentElement.lang") == "ko"
        bad = serious_violations(pg)
        assert bad == [], "\n".join(bad)
        assert pg.errors == []  # type: ignore[attr-defined]
    finally:
        context.close()


def test_agent_answers_a_webchat_resident_live(browser: Any, server: LiveServer) -> None:
    agent_ctx, agent = new_page(browser, server.url)
    resident_ctx, resident = new_page(browser, server.url)
    try:
        # The agent logs in and waits on the queue, connected live.
        agent.goto("/console/login")
        agent.get_by_label("아이디").fill("waste-agent")
        agent.get_by_label("비밀번호").fill(PASSWORD)
        agent.get_by_role("button", name="로그인").click()
        agent.wait_for_url("**/console")
        agent.wait_for_selector("body[data-live='ready']")
        queue_bad = serious_violations(agent)
        assert queue_bad == [], "\n".join(queue_bad)

        # A resident asks the web chat widget about missed collection, then for a person.
        resident.goto("/")
        resident.get_by_role("button", name="민원 상담").click()
        resident.get_by_role("dialog", name="민원 상담").wait_for()
        ask(resident, "쓰레기 안 가져갔어요")
        ask(resident, "상담원 연결해 주세요")
        say(resident, "<b>빨리</b> 와 주세요")  # handed off: the bot stays silent

        # The hand-off arrives on the agent's queue without a reload.
        row = agent.locator("#queue-body tr[data-id]").first
        row.wait_for()
        assert "웹 채팅" in row.inner_text()  # channel names, not codes
        row.get_by_role("link").click()
        agent.wait_for_url("**/console/handoffs/*")
        agent.wait_for_selector("body[data-live='ready']")
        # Hostile text from the resident is shown as text.
        agent.wait_for_function(
            "() => [...document.querySelectorAll('#timeline .msg.resident .text')]"
            ".some(e => e.textContent === '<b>빨리</b> 와 주세요')")
        assert agent.locator("#timeline b").count() == 0
        view_bad = serious_violations(agent)
        assert view_bad == [], "\n".join(view_bad)

        # A new resident message reaches the open hand-off live.
        say(resident, "언제 와요?")
        agent.wait_for_function(
            "() => [...document.querySelectorAll('#timeline .msg.resident .text')]"
            ".some(e => e.textContent === '언제 와요?')")

        # The agent answers; the resident's widget shows it as the agent's message.
        agent.get_by_label("주민에게 보낼 답변").fill("오늘 오후에 수거 차량이 방문합니다.")
        agent.get_by_role("button", name="보내기").click()
        resident.wait_for_function(
            "() => [...document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-agent .pcrm-wc-text')]"
            ".some(e => e.textContent === '오늘 오후에 수거 차량이 방문합니다.')")
        assert resident.locator(".pcrm-wc-msg.pcrm-wc-agent .pcrm-wc-author").first.inner_text() == "김청소"

        # An internal note of several lines: kept whole with its line breaks, shown as text, never
        # sent to the resident.
        note = "1차 통화: 101동 지하 누수.\n화요일 배관공 방문 <b>확정</b>"
        agent.get_by_label("메모", exact=True).fill(note)
        agent.get_by_role("button", name="메모 저장").click()
        agent.wait_for_function(
            "t => [...document.querySelectorAll('#notes .text')].some(e => e.textContent === t)", arg=note)
        agent.reload()
        agent.wait_for_selector("body[data-live='ready']")
        assert agent.locator("#notes .text").last.inner_text() == note  # line break rendered
        assert agent.locator("#notes b").count() == 0
        assert not any("배관공" in t for t in bot_texts(resident))

        # The agent resolves; the resident is asked for a 1-5 rating.
        before = len(bot_texts(resident))
        agent.get_by_label("처리 결과").select_option("answered")
        agent.get_by_role("button", name="상담 종료 (만족도 조사)").click()
        agent.wait_for_function("() => document.getElementById('handoff-status').textContent === '종료'")
        resident.wait_for_function(
            "n => [...document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-bot .pcrm-wc-text')].slice(n)"
            ".some(e => e.textContent.includes('5'))", arg=before)
        rating_q = "\n".join(bot_texts(resident)[before:])
        assert "1" in rating_q and "5" in rating_q, rating_q
        assert "끝났어요" in rating_q  # told the person has left before the rating question
        assert agent.locator("#reply-form").count() == 0  # closed: read-only
        thanks = ask(resident, "5")
        assert thanks

        from sqlalchemy import select

        from crm_store.models import Feedback

        with server.app.state.sessions() as s:
            assert [f.rating for f in s.scalars(select(Feedback))] == [5]
        assert agent.errors == [] and resident.errors == []  # type: ignore[attr-defined]
        assert agent.dialogs == []  # type: ignore[attr-defined]
    finally:
        agent_ctx.close()
        resident_ctx.close()
