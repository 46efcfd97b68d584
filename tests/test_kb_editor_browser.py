"""An editor changes an answer in the console, another publishes it, and residents get it at once.

The whole app under uvicorn with its own SQLite database, seeded at start from a copy of the
retrieval engine's fixture knowledge base (``tests/data/kb``).  In Debian's headless Chromium:
editor 1 finds the passport article, edits its Korean answer and asks for review; editor 2
publishes it; the next resident asking over the REST channel gets the new text — no restart.
Every page on the way is audited with axe-core (no serious or critical violation) and must
raise no script error under the console's CSP.

Needs the knowledge-base engine (``bot/kb/retrieval.py`` answering FAQ questions); skipped
without it, and without Chromium or axe-core (failed under ``CI=true``).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bot.console.auth import create_agent
from bot.settings import ROOT, Settings
from tests.channel_servers import ServerThread
from tests.fixtures_browser import require, serious_violations
from tests.fixtures_server import LiveServer
from tests.test_console_api import always_open_config

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000
PASSWORD = "browser-editor-password"
FIXTURE_KB = ROOT / "tests" / "data" / "kb"
QUESTION = "여권 발급 얼마나 걸려요?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from bot.engine import Engine

    if not hasattr(Engine, "kb"):  # the dialogue answering from bot/kb/retrieval.py (branch kb-engine)
        pytest.skip("the engine does not answer from the knowledge base in this build")
    require(FIXTURE_KB.is_dir(), f"{FIXTURE_KB} missing (the knowledge-base engine's fixture articles)")
    from bot.app import create_app

    tmp = tmp_path_factory.mktemp("kb-browser")
    shutil.copytree(FIXTURE_KB, tmp / "knowledge")
    settings = Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None,
                        pcrm_config=always_open_config(tmp), pcrm_model_dir=ROOT / "var" / "model",
                        pcrm_kb_dir=tmp / "knowledge")
    app = create_app(settings)
    create_agent(app.state.sessions, "editor-kim", PASSWORD, "editor", [], "김편집")
    create_agent(app.state.sessions, "editor-lee", PASSWORD, "editor", [], "이검토")
    server = ServerThread(app).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app with the small test seed of tests/test_store_kb.py (needs no retrieval engine)."""
    from bot.app import create_app
    from tests.test_store_kb import BULKY, ID_CARD, PASSPORT, write_seed

    tmp = tmp_path_factory.mktemp("kb-browser-plain")
    write_seed(tmp / "knowledge", {"civil": [PASSPORT, ID_CARD], "waste": [BULKY]})
    settings = Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None,
                        pcrm_config=always_open_config(tmp), pcrm_model_dir=ROOT / "var" / "model",
                        pcrm_kb_dir=tmp / "knowledge")
    app = create_app(settings)
    create_agent(app.state.sessions, "editor-kim", PASSWORD, "editor", [], "김편집")
    server = ServerThread(app).start()
    try:
        yield server
    finally:
        server.stop()


def new_page(browser: Any, base_url: str, bypass_csp: bool = True) -> tuple[Any, Any]:
    """A page; ``bypass_csp`` only so axe-core can be injected (see the CSP test below)."""
    context = browser.new_context(base_url=base_url, locale="ko-KR", viewport={"width": 1280, "height": 900},
                                  bypass_csp=bypass_csp)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
    return context, pg


def login(pg: Any, username: str) -> None:
    pg.goto("/console/kb")
    pg.wait_for_url("**/console/login**")
    pg.get_by_label("아이디").fill(username)
    pg.get_by_label("비밀번호").fill(PASSWORD)
    pg.get_by_role("button", name="로그인").click()
    pg.wait_for_url("**/console/kb")


def axe_clean(pg: Any) -> None:
    bad = serious_violations(pg)
    assert bad == [], f"{pg.url}:\n" + "\n".join(bad)


STATUS_JS = "async () => (await fetch('/console/api/kb/status')).json()"


def wait_served(pg: Any, patience_s: float = 300) -> None:
    """Until the server answers with the published revision (asked through the editor's session)."""
    deadline = time.monotonic() + patience_s
    while True:
        status = pg.evaluate(STATUS_JS)
        if status.get("served_revision") is not None and status["served_revision"] == status["published_revision"]:
            return
        assert time.monotonic() < deadline, f"the server never loaded the published revision: {status}"
        pg.wait_for_timeout(200)


def ask_rest(base_url: str, text: str) -> str:
    sender = f"kb-browser-{uuid.uuid4().hex[:8]}"  # a new resident: no follow-up context
    r = httpx.post(f"{base_url}/webhooks/rest/webhook", json={"sender": sender, "message": text}, timeout=60)
    assert r.status_code == 200, r.text
    return "\n".join(m.get("text") or "" for m in r.json())


def test_an_edited_answer_reaches_residents_after_review_and_publish(browser: Any, server: LiveServer) -> None:
    marker = f"(변경 {uuid.uuid4().hex[:4]})"
    before = ask_rest(server.url, QUESTION)
    assert "여권" in before and marker not in before

    kim_ctx, kim = new_page(browser, server.url)
    lee_ctx, lee = new_page(browser, server.url)
    try:
        # Editor 1 finds the article, edits the Korean answer and asks for review.
        login(kim, "editor-kim")
        axe_clean(kim)
        kim.get_by_label("검색어 (제목, 질문, 답변, 문서 ID)").fill("여권")
        kim.get_by_role("button", name="찾기").click()
        kim.wait_for_url("**/console/kb?q=*")
        kim.get_by_role("link", name="여권 발급 절차와 기간").click()
        kim.wait_for_url("**/console/kb/articles/civil.passport")
        axe_clean(kim)
        kim.get_by_role("link", name="편집 (새 초안)").click()
        kim.wait_for_url("**/console/kb/articles/civil.passport/edit")
        kim.wait_for_selector("body[data-kb-ready='1']")  # kb.js ran under the CSP
        axe_clean(kim)
        answer = kim.get_by_label("답변 (한국어, 최대 350자)")
        new_text = f"여권은 {{dept.civil}}({{dept.civil.phone}})에서 본인이 직접 신청해요. 보통 3일 걸려요. {marker}"
        answer.fill(new_text)
        # The live preview fills the placeholders as residents will see them.
        kim.wait_for_function("m => document.querySelector('#live-preview').textContent.includes(m)", arg=marker)
        preview = kim.locator("#live-preview").inner_text()
        assert "{dept.civil}" not in preview and "민원여권과" in preview
        kim.get_by_role("button", name="저장하고 검토 요청").click()
        kim.wait_for_url("**/console/kb/articles/civil.passport?done=submitted")
        assert kim.get_by_role("button", name="v2 게시").count() == 0  # not for its own author
        axe_clean(kim)

        # Not live before the review.
        assert marker not in ask_rest(server.url, QUESTION)

        # Editor 2 reviews the change and publishes it.
        login(lee, "editor-lee")
        lee.goto("/console/kb/articles/civil.passport")
        lee.get_by_role("link", name="v1과 비교").click()
        lee.wait_for_url("**/versions/2?against=1")
        assert marker in lee.locator("ins").all_text_contents()[-1] or marker in lee.locator("dl.diff").inner_text()
        axe_clean(lee)
        lee.go_back()
        lee.get_by_role("button", name="v2 게시").click()
        lee.wait_for_url("**/console/kb/articles/civil.passport?done=published")
        assert "게시했습니다" in lee.get_by_role("status").first.inner_text()
        # The server reloads in the background (the editor does not wait for the index rebuild).
        wait_served(lee)
        axe_clean(lee)
        assert kim.errors == [] and lee.errors == []  # type: ignore[attr-defined]
    finally:
        kim_ctx.close()
        lee_ctx.close()

    # The next resident gets the new answer, with the city's facts filled in.
    after = ask_rest(server.url, QUESTION)
    assert marker in after and "보통 3일 걸려요" in after and "{dept.civil" not in after


def test_editor_pages_work_under_the_consoles_csp(browser: Any, plain_server: LiveServer) -> None:
    """No inline script or style: kb.js runs and nothing is blocked with the real CSP in force."""
    ctx, pg = new_page(browser, plain_server.url, bypass_csp=False)
    try:
        login(pg, "editor-kim")
        for path in ("/console/kb", "/console/kb/articles/civil.passport", "/console/kb/learn", "/console/kb/new"):
            pg.goto(path)
            assert pg.locator("link[href='/console/kb/static/kb.css']").count() == 1
        pg.goto("/console/kb/articles/civil.passport/edit")
        pg.wait_for_selector("body[data-kb-ready='1']")
        pg.get_by_label("답변 (English, 최대 350자)").fill("Call {city.phone}.")
        pg.wait_for_function("() => document.querySelector('#live-preview').textContent.includes('02-2100-1000')")
        assert pg.errors == []  # type: ignore[attr-defined]  # CSP violations are console errors
    finally:
        ctx.close()


def test_every_editor_page_passes_axe(browser: Any, plain_server: LiveServer) -> None:
    """List, article, edit, new, version diff and the learning loop: no serious or critical finding."""
    ctx, pg = new_page(browser, plain_server.url)
    try:
        login(pg, "editor-kim")
        axe_clean(pg)
        pg.goto("/console/kb/articles/civil.id_card_reissue/edit")
        answer = pg.get_by_label("답변 (한국어, 최대 350자)")
        answer.fill("가까운 주민센터에서 재발급해요. 수수료는 5,000원이에요. {dept.civil.phone}")
        pg.get_by_role("button", name="초안 저장").click()
        pg.wait_for_url("**/console/kb/articles/civil.id_card_reissue?done=saved")
        for path in ("/console/kb/articles/civil.id_card_reissue", "/console/kb/articles/civil.id_card_reissue/edit",
                     "/console/kb/articles/civil.id_card_reissue/versions/2", "/console/kb/new", "/console/kb/learn",
                     "/console/kb?q=%EC%97%AC%EA%B6%8C"):
            pg.goto(path)
            axe_clean(pg)
        assert pg.errors == []  # type: ignore[attr-defined]
    finally:
        ctx.close()
