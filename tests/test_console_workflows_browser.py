"""The console's everyday workflows end to end in Debian's Chromium, audited with axe-core.

* After hours, a web-chat resident leaves a number; the agent sees a call-back on the queue,
  takes it, reveals the number (audited) and records the calls' outcomes; the resident is told.
* An emergency raises an alert on the queue page and is pinned above older items.
* An agent transfers with a reason: the resident is told, and the next department's agent
  reads the reason on the hand-off.

Two servers: one whose office never opens (call-backs), one always open (live hand-offs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.console.auth import create_agent
from bot.settings import ROOT, Settings
from crm_store.models import AuditLog, CallbackTask
from tests.channel_servers import ServerThread
from tests.fixtures_browser import ask, bot_texts, serious_violations
from tests.fixtures_server import LiveServer
from tests.test_console_api import always_open_config
from tests.test_console_browser import PASSWORD, new_page
from tests.test_console_callbacks import closed_config

pytestmark = pytest.mark.browser


def _server(tmp: Path, config: Path) -> Any:
    from bot.app import create_app

    settings = Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None, pcrm_config=config,
                        pcrm_model_dir=ROOT / "var" / "model")
    app = create_app(settings)
    create_agent(app.state.sessions, "waste-agent", PASSWORD, "agent", ["waste"], "김청소")
    create_agent(app.state.sessions, "roads-agent", PASSWORD, "agent", ["roads"], "박도로")
    create_agent(app.state.sessions, "boss", PASSWORD, "supervisor", [], "정팀장")
    return ServerThread(app).start()


@pytest.fixture(scope="module")
def closed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("console-closed")
    server = _server(tmp, closed_config(tmp))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("console-open")
    server = _server(tmp, always_open_config(tmp))
    try:
        yield server
    finally:
        server.stop()


def log_in(pg: Any, username: str) -> None:
    pg.goto("/console/login")
    pg.get_by_label("아이디").fill(username)
    pg.get_by_label("비밀번호").fill(PASSWORD)
    pg.get_by_role("button", name="로그인").click()
    pg.wait_for_url("**/console")
    pg.wait_for_selector("body[data-live='ready']")


def open_widget(pg: Any) -> None:
    pg.goto("/")
    pg.get_by_role("button", name="민원 상담").click()
    pg.get_by_role("dialog", name="민원 상담").wait_for()


def no_serious(pg: Any) -> None:
    bad = serious_violations(pg)
    assert bad == [], "\n".join(bad)


def test_after_hours_number_is_revealed_and_called_back(browser: Any, closed_server: LiveServer) -> None:
    resident_ctx, resident = new_page(browser, closed_server.url)
    agent_ctx, agent = new_page(browser, closed_server.url)
    try:
        open_widget(resident)
        ask(resident, "쓰레기 안 가져갔어요")
        offer = ask(resident, "상담원 연결해 주세요")
        assert "전화" in offer or "연락" in offer, offer
        ask(resident, "네")
        booked = ask(resident, "010-2345-6789")
        assert "6789" in booked
        ask(resident, "음식물 쓰레기가 사흘째 그대로예요")

        log_in(agent, "waste-agent")
        row = agent.locator("#queue-body tr.callback").first
        row.wait_for()
        assert "회신 전화" in row.inner_text() and "010-2345-6789" not in row.inner_text()
        agent.get_by_role("button", name="회신 전화").click()  # the call-backs tab
        assert agent.locator("#queue-body tr[data-id]").count() == 1
        no_serious(agent)
        row.get_by_role("link").click()
        agent.wait_for_url("**/console/handoffs/*")
        agent.wait_for_selector("body[data-live='ready']")
        assert "사흘째" in agent.locator("#callback-message").inner_text()
        no_serious(agent)

        agent.get_by_role("button", name="상담 시작 (배정받기)").click()
        agent.wait_for_function("() => document.getElementById('handoff-status').textContent === '상담 중'")
        agent.locator("#callback-reveal").click()
        agent.wait_for_function("() => document.getElementById('callback-phone').textContent === '010-2345-6789'")
        assert agent.locator("#callback-phone a").get_attribute("href") == "tel:01023456789"

        before = len(bot_texts(resident))
        agent.get_by_role("button", name="받지 않음").click()
        agent.wait_for_function("() => document.getElementById('callback-attempts').textContent === '1'")
        resident.wait_for_function(
            "n => [...document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-bot .pcrm-wc-text')].slice(n)"
            ".some(e => e.textContent.includes('연결되지 않았어요'))", arg=before)
        agent.get_by_role("button", name="통화 완료").click()
        agent.wait_for_function("() => document.getElementById('callback-attempts').textContent === '2'")
        assert agent.locator(".callback-outcome").count() == 0  # done: no more outcome buttons

        with closed_server.app.state.sessions() as s:
            task = s.scalars(select(CallbackTask)).one()
            assert (task.status, task.attempts, task.outcome) == ("done", 2, "reached")
            assert s.scalars(select(AuditLog).where(AuditLog.action == "console.reveal_callback")).first()
        assert agent.errors == [] and resident.errors == []  # type: ignore[attr-defined]
    finally:
        agent_ctx.close()
        resident_ctx.close()


def test_emergency_raises_an_alert_and_is_pinned(browser: Any, open_server: LiveServer) -> None:
    agent_ctx, agent = new_page(browser, open_server.url)
    first_ctx, first = new_page(browser, open_server.url)
    second_ctx, second = new_page(browser, open_server.url)
    try:
        log_in(agent, "boss")
        agent.get_by_role("button", name="소리·바탕화면 알림 켜기").click()
        open_widget(first)
        ask(first, "쓰레기 안 가져갔어요")
        ask(first, "상담원 연결해 주세요")
        agent.locator("#queue-body tr[data-id]").first.wait_for()

        open_widget(second)
        ask(second, "불이 났어요 사람이 안에 있어요")
        alert = agent.locator("#alert")
        alert.wait_for(state="visible")
        assert "긴급" in alert.inner_text()
        top = agent.locator("#queue-body tr[data-id]").first
        agent.wait_for_function(
            "() => document.querySelector('#queue-body tr[data-id]').classList.contains('emergency')")
        assert "긴급" in top.inner_text()
        assert agent.title().startswith("(")  # the title badge counts waiting items
        no_serious(agent)
        assert agent.errors == []  # type: ignore[attr-defined]
    finally:
        for c in (agent_ctx, first_ctx, second_ctx):
            c.close()


def test_transfer_reason_reaches_next_agent_and_resident_is_told(browser: Any, open_server: LiveServer) -> None:
    resident_ctx, resident = new_page(browser, open_server.url)
    waste_ctx, waste = new_page(browser, open_server.url)
    roads_ctx, roads = new_page(browser, open_server.url)
    try:
        open_widget(resident)
        ask(resident, "쓰레기 안 가져갔어요")
        ask(resident, "상담원 연결해 주세요")
        log_in(waste, "waste-agent")
        # The newest waste item (the emergency test's resident waits too): oldest first, so the last.
        waste.locator("#queue-body tr[data-id]").first.wait_for()
        waste.locator("#queue-body tr[data-id]").last.get_by_role("link").click()
        waste.wait_for_selector("body[data-live='ready']")
        waste.get_by_role("button", name="상담 시작 (배정받기)").click()
        resident.wait_for_function(
            "() => [...document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-bot .pcrm-wc-text')]"
            ".some(e => e.textContent.includes('김청소') && e.textContent.includes('연결되었어요'))")

        waste.get_by_label("이관할 부서").select_option("roads")
        waste.get_by_label("이관 사유 (다음 상담원에게 보임)").fill("보도블록 파손도 함께 신고함")
        waste.get_by_role("button", name="부서 이관").click()
        waste.wait_for_function("() => document.getElementById('handoff-status').textContent === '대기'")
        resident.wait_for_function(
            "() => [...document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-bot .pcrm-wc-text')]"
            ".some(e => e.textContent.includes('연결해 드릴게요'))")

        log_in(roads, "roads-agent")
        roads.locator("#queue-body tr[data-id]").first.get_by_role("link").click()
        roads.wait_for_selector("body[data-live='ready']")
        assert "보도블록 파손도 함께 신고함" in roads.locator("#transfer-reason-text").inner_text()
        no_serious(roads)
        assert waste.errors == [] and roads.errors == []  # type: ignore[attr-defined]
    finally:
        for c in (resident_ctx, waste_ctx, roads_ctx):
            c.close()


def test_wallboard_updates_live_and_a_chart_drills_to_a_transcript(browser: Any, open_server: LiveServer) -> None:
    boss_ctx, boss = new_page(browser, open_server.url)
    resident_ctx, resident = new_page(browser, open_server.url)
    agent_ctx, agent = new_page(browser, open_server.url)
    try:
        log_in(agent, "waste-agent")  # agents do not get the supervisor pages
        assert agent.request.get(f"{open_server.url}/console/api/wallboard").status == 403

        log_in(boss, "boss")
        boss.goto("/console/wallboard")
        boss.wait_for_selector("body[data-live='ready']")
        no_serious(boss)
        before = int(boss.locator("#wb-queued").inner_text())

        open_widget(resident)
        ask(resident, "가로등이 꺼져서 너무 어두워요 상담원 연결해 주세요")
        boss.wait_for_function("n => parseInt(document.getElementById('wb-queued').textContent, 10) > n",
                               arg=before)  # without a reload: the socket said the queue changed

        boss.goto("/console/stats?tab=volume&preset=today")
        no_serious(boss)
        boss.locator("#channel-bars a", has_text="웹 채팅").click()
        boss.wait_for_url("**/console/drill?**")
        no_serious(boss)
        boss.locator("table a", has_text="대화 #").first.click()
        boss.wait_for_url("**/console/conversations/*")
        boss.wait_for_function(
            "() => [...document.querySelectorAll('#timeline .msg.resident .text')]"
            ".some(e => e.textContent.includes('가로등'))")
        no_serious(boss)
        assert boss.errors == []  # type: ignore[attr-defined]
    finally:
        for c in (boss_ctx, resident_ctx, agent_ctx):
            c.close()


def test_keyboard_claim_canned_reply_and_send(browser: Any, open_server: LiveServer) -> None:
    resident_ctx, resident = new_page(browser, open_server.url)
    agent_ctx, agent = new_page(browser, open_server.url)
    try:
        open_widget(resident)
        ask(resident, "골목에 쓰레기 무단투기가 심해요 상담원 연결해 주세요")
        log_in(agent, "waste-agent")
        agent.locator("#queue-body tr[data-id]").first.wait_for()
        # Other tests' residents wait too: the search filter narrows the queue, N opens the next shown.
        agent.get_by_label("검색 (요약·마지막 메시지)").fill("무단투기")
        agent.wait_for_function("() => document.querySelectorAll('#queue-body tr[data-id]').length === 1")
        agent.locator("h1").click()
        agent.locator("body").press("n")  # N: the next waiting item
        agent.wait_for_url("**/console/handoffs/*")
        agent.wait_for_selector("body[data-live='ready']")
        agent.locator("body").press("Alt+c")  # claim
        agent.wait_for_function("() => document.getElementById('handoff-status').textContent === '상담 중'")
        agent.locator("body").press("Alt+3")  # canned reply 3 (after waste's two): the greeting, filled in
        text = agent.get_by_label("주민에게 보낼 답변", exact=False).input_value()
        assert text and "{" not in text and "김청소" in text
        agent.get_by_label("주민에게 보낼 답변", exact=False).press("Control+Enter")
        resident.wait_for_function(
            "t => [...document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-agent .pcrm-wc-text')]"
            ".some(e => e.textContent === t)", arg=text)

        agent.goto("/console")
        agent.get_by_label("찾을 말").fill("무단투기")
        agent.get_by_role("button", name="검색").click()
        agent.locator("#search-results a").first.wait_for()
        no_serious(agent)
        assert agent.errors == []  # type: ignore[attr-defined]
    finally:
        for c in (resident_ctx, agent_ctx):
            c.close()


def test_every_statistics_tab_passes_axe(browser: Any, open_server: LiveServer) -> None:
    ctx, boss = new_page(browser, open_server.url)
    try:
        log_in(boss, "boss")
        for tab in ("overview", "departments", "agents", "volume"):
            boss.goto(f"/console/stats?tab={tab}&preset=7d")
            assert boss.locator("a[aria-current='page']").inner_text()
            no_serious(boss)
        boss.get_by_label("기간").select_option("today")
        boss.get_by_role("button", name="보기").click()
        boss.wait_for_url("**preset=today**")
        assert boss.errors == []  # type: ignore[attr-defined]
    finally:
        ctx.close()


def test_console_and_supervisor_pages_run_under_their_csp(browser: Any, open_server: LiveServer) -> None:
    """No inline script or style anywhere: with the CSP enforced, nothing is blocked."""
    context = browser.new_context(base_url=open_server.url, locale="ko-KR")
    pg = context.new_page()
    blocked: list[str] = []
    pg.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        log_in(pg, "boss")
        for path in ("/console", "/console/wallboard", "/console/stats?tab=volume&preset=7d",
                     "/console/stats?tab=agents"):
            pg.goto(path)
            pg.wait_for_load_state("networkidle")
        assert "script-src 'self'" in (pg.request.get(f"{open_server.url}/console/wallboard")
                                       .headers.get("content-security-policy") or "")
        r = pg.request.post(f"{open_server.url}/webhooks/rest/webhook",
                            data={"sender": "csp-check", "message": "가로등이 고장났어요"})
        assert r.ok  # at least one message: the volume chart has a bar
        pg.goto("/console/stats?tab=volume&preset=7d")
        widths = pg.evaluate("() => [...document.querySelectorAll('.bar')].map(b => b.style.width)")
        assert widths and all(w.endswith("%") for w in widths)  # set by console.js, not inline styles
        assert blocked == []
    finally:
        context.close()
