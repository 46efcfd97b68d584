"""Issue 20 end to end on phones (Chromium, 390×844, axe-core): from a resident's photo and pin to
a crew's offline "done", both residents told, one saying it is not fixed, the public page.

One story, in order, on the real app (uvicorn, SQLite):

1. resident A, in the web-chat widget, reports a pothole, uploads a photo and shares their location;
   the bot reads the location back as an address and gives a ticket;
2. resident B reports the same pothole nearby, is offered A's ticket and takes it (subscribes);
3. the request is assigned to a crew; the crew member opens the mobile page, goes offline, adds an
   after photo and marks it done; the updates wait in the queue, then sync when back online;
4. both residents are told in their widgets and asked whether it is fixed; B says "아니요 …" and the
   request reopens with B's words;
5. the public page shows the ticket's status without personal data.
Every page passes axe-core with no serious or critical violation.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from bot.app import create_app
from bot.console.auth import create_agent
from crm_store import work_orders
from tests.channel_servers import ServerThread
from tests.fixtures_browser import WIDGET_TIMEOUT_MS, ask, bot_texts, serious_violations, wait_reply
from tests.test_rest_app import _settings

pytestmark = pytest.mark.browser

TICKET = re.compile(r"\d{4}-\d{6}")
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "locale": "ko-KR",
         "bypass_csp": True}  # axe-core is injected as an inline script, as in the other browser tests
PASSWORD = "crew-password-1"


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 110, 100)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def server(tmp_path) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path / 'pcrm.db'}"
    from crm_store.db import upgrade

    upgrade(url)
    app = create_app(_settings(url, tmp_path))
    create_agent(app.state.sessions, "crew1", PASSWORD, "field", ["roads"], "현장1팀")
    srv = ServerThread(app).start()
    srv.db_url = url  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()


def _resident(browser: Any, base: str, lat: float, long: float) -> tuple[Any, Any]:
    ctx = browser.new_context(base_url=base, permissions=["geolocation"],
                              geolocation={"latitude": lat, "longitude": long}, **PHONE)
    ctx.set_default_timeout(WIDGET_TIMEOUT_MS)
    pg = ctx.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
    pg.goto("/")
    pg.get_by_role("button", name="민원 상담").click()
    pg.get_by_role("dialog", name="민원 상담").wait_for()
    return ctx, pg


def _until_ticket(pg: Any, reply: str) -> str:
    for answer in ("차가 지나갈 때 덜컹거려요", "네", "네", "네"):
        m = TICKET.search(reply)
        if m and "접수번호" in reply:
            return m.group(0)
        reply = ask(pg, answer)
    m = TICKET.search(reply)
    assert m, reply
    return m.group(0)


def _wait_text(pg: Any, needle: str) -> str:
    pg.wait_for_function("s => [...document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-bot .pcrm-wc-text')]"
                         ".some(e => e.textContent.includes(s))", arg=needle, timeout=WIDGET_TIMEOUT_MS)
    return "\n".join(bot_texts(pg))


def _db(server: Any, sql: str, **kw: Any) -> list[Any]:
    eng = create_engine(server.db_url)
    try:
        with eng.connect() as c:
            return list(c.execute(text(sql), kw))
    finally:
        eng.dispose()


def test_photo_pin_duplicate_offline_crew_done_reopen_and_public_page(browser: Any, server: Any, tmp_path) -> None:
    photo = tmp_path / "pothole.jpg"
    photo.write_bytes(_jpeg())
    ctx_a, a = _resident(browser, server.url, 37.5665, 126.9781)
    ctx_b, b = _resident(browser, server.url, 37.56655, 126.97812)
    crew_ctx = browser.new_context(base_url=server.url, **PHONE)
    crew_ctx.set_default_timeout(WIDGET_TIMEOUT_MS)
    try:
        # 1. A: report, photo, shared location read back as an address, ticket.
        reply = ask(a, "도로에 포트홀이 있어요")
        assert "위치" in reply
        before = len(bot_texts(a))
        a.get_by_label("사진 보내기").set_input_files(str(photo))
        wait_reply(a, before)
        before = len(bot_texts(a))
        a.get_by_role("button", name="현재 위치 보내기").click()
        reply = wait_reply(a, before)
        assert "한빛로 118 (한빛동) 부근" in reply and "37.56" not in reply
        assert serious_violations(a) == []
        ticket = _until_ticket(a, reply)
        row = _db(server, "SELECT media_url, lat, address_string FROM service_requests "
                          "WHERE service_request_id = :t", t=ticket)[0]
        assert row.media_url and row.lat == pytest.approx(37.5665) and row.address_string.startswith("한빛로 118")

        # 2. B: the same pothole nearby is offered A's ticket; yes subscribes.
        reply = ask(b, "한빛로 118 앞 도로에 포트홀이 생겼어요")
        assert f"이미 접수된 신고가 있어요 ({ticket}" in reply
        assert serious_violations(b) == []
        before = len(bot_texts(b))
        b.locator(".pcrm-wc-chip", has_text="예").first.click()
        reply = wait_reply(b, before)
        assert ticket in reply
        assert _db(server, "SELECT count(*) FROM request_subscriptions")[0][0] == 1

        # 3. The crew, offline: an after photo and "done" wait in the queue, then sync.
        assert work_orders.assign(server.app.state.sessions, ticket, "crew1", priority=5) is not None
        crew = crew_ctx.new_page()
        crew.goto("/console/login?next=/field/")
        assert serious_violations(crew) == []
        crew.get_by_label("아이디").fill("crew1")
        crew.get_by_label("비밀번호").fill(PASSWORD)
        crew.get_by_role("button", name="로그인").click()
        card = crew.locator(f"li[data-ticket='{ticket}']")
        card.wait_for()
        assert "한빛로 118" in card.inner_text()
        assert serious_violations(crew) == []
        crew.wait_for_function("() => navigator.serviceWorker && navigator.serviceWorker.controller !== null"
                               " || navigator.serviceWorker.ready.then(() => true)")
        crew_ctx.set_offline(True)
        card.get_by_label("작업 후 사진").set_input_files(str(photo))
        card.get_by_label("메모").fill("아스팔트로 메웠어요")
        card.get_by_role("button", name=f"작업 완료: {ticket}").click()
        crew.wait_for_function("() => document.body.dataset.pending === '2'")
        assert "보내지 못한 변경 2건" in crew.locator("#queue").inner_text()
        assert _db(server, "SELECT sub_status FROM service_requests")[0][0] == "assigned"
        crew_ctx.set_offline(False)
        crew.wait_for_function("() => document.body.dataset.pending === '0'")
        assert _db(server, "SELECT sub_status, status_notes FROM service_requests")[0] == ("resolved",
                                                                                         "아스팔트로 메웠어요")
        assert _db(server, "SELECT after_url IS NOT NULL FROM work_orders")[0][0]

        # 4. Both residents are told and asked; B says it is not fixed: reopened with B's words.
        for pg in (a, b):
            assert "실제로 해결됐나요?" in _wait_text(pg, "실제로 해결됐나요?")
        outs = _db(server, "SELECT count(*) FROM interactions WHERE direction = 'out' AND text LIKE :t",
                   t="%실제로 해결됐나요?%")
        assert outs[0][0] == 2  # in both residents' histories
        before = len(bot_texts(b))
        reply = ask(b, "아니요, 아직 구멍이 그대로 있어요")
        assert ticket in reply and "다시 열고" in reply
        assert _db(server, "SELECT sub_status FROM service_requests")[0][0] == "received"
        assert _db(server, "SELECT note FROM request_updates WHERE kind = 'reopened'")[0][0].startswith("아직 구멍이")

        # 5. The public page: status, no personal data.
        pub = crew_ctx.new_page()
        pub.goto(f"/status?ticket={ticket}")
        page_text = pub.locator("main").inner_text()
        assert ticket in page_text and "접수됨" in page_text and "아스팔트로 메웠어요" in page_text
        for private in ("차가 지나갈 때", "한빛로 118 (한빛동) 부근", "media", "아직 구멍이"):
            assert private not in pub.content(), private
        assert serious_violations(pub) == []
        assert a.errors == [] and b.errors == []  # type: ignore[attr-defined]
    finally:
        for c in (ctx_a, ctx_b, crew_ctx):
            c.close()
