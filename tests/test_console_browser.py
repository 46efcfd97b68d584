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

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.console.auth import create_agent
from bot.settings import ROOT, Settings
from tests.fixtures_server import LiveServer
from tests.test_console_api import always_open_config

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
TIMEOUT_MS = 60_000
PASSWORD = "browser-agent-password"


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require(CHROMIUM.exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    _require(AXE.exists(), f"axe-core not found at {AXE} (run `npm install` in the repository)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        _require(False, "the playwright Python package is not installed")
        raise
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The whole app under uvicorn on a free port, office always open, with one waste agent."""
    import uvicorn

    from bot.app import create_app

    tmp = tmp_path_factory.mktemp("console-browser")
    settings = Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None,
                        pcrm_config=always_open_config(tmp), pcrm_model_dir=ROOT / "var" / "model")
    app = create_app(settings)
    create_agent(app.state.sessions, "waste-agent", PASSWORD, "agent", ["waste"], "김청소")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=3)
    srv = uvicorn.Server(config)
    srv.install_signal_handlers = lambda: None  # type: ignore[attr-defined,method-assign]
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await srv.serve(sockets=[sock])

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="console-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 900
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            srv.should_exit = True
            sock.close()
            pytest.fail("the console test server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app, loop=loops[0])
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
        sock.close()


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


def serious_violations(pg: Any) -> list[str]:
    """axe-core violations of impact serious or critical, one readable line each."""
    pg.add_script_tag(path=str(AXE))
    result = pg.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
            for v in result["violations"] if v.get("impact") in ("serious", "critical")]


def bot_texts(pg: Any) -> list[str]:
    return pg.locator(".pcrm-wc-msg.pcrm-wc-bot .pcrm-wc-text").all_text_contents()


def ask(pg: Any, text: str) -> str:
    """Type into the widget, press Enter, return the bot's new text."""
    before = len(bot_texts(pg))
    box = pg.get_by_label("메시지 입력")
    box.fill(text)
    box.press("Enter")
    pg.wait_for_function("n => document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-bot').length > n", arg=before)
    pg.wait_for_timeout(400)
    return "\n".join(bot_texts(pg)[before:])


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
        assert "webchat" in row.inner_text()
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

        # The agent resolves; the resident is asked for a 1-5 rating.
        before = len(bot_texts(resident))
        agent.get_by_label("처리 결과").select_option("answered")
        agent.get_by_role("button", name="상담 종료 (만족도 조사)").click()
        agent.wait_for_function("() => document.getElementById('handoff-status').textContent === '종료'")
        resident.wait_for_function("n => document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-bot').length > n",
                                   arg=before)
        rating_q = "\n".join(bot_texts(resident)[before:])
        assert "1" in rating_q and "5" in rating_q, rating_q
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
