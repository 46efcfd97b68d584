"""The public status page and map: a ticket's status for anyone, never the resident's data."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bot.app import create_app
from bot.service_requests import RequestDraft
from crm_store.requests import SqlRequestStore
from tests.channel_servers import ServerThread
from tests.fixtures_browser import serious_violations
from tests.test_rest_app import _settings

PRIVATE = ("010-1234-5678", "김민지", "우리 집 대문 앞", "https://files.example/p.jpg", "37.5660", "kakao")


@pytest.fixture
def server(db_url: str, tmp_path) -> Iterator[tuple[str, str]]:
    app = create_app(_settings(db_url, tmp_path))
    store = app.state.engine.requests
    assert isinstance(store, SqlRequestStore)
    rec = store.open(RequestDraft(
        service_code="roads.pothole", department="roads", channel="kakao", sender_id="u1",
        description="김민지입니다, 010-1234-5678로 연락 주세요. 우리 집 대문 앞이에요",
        address_string="중앙로 12 우리 집 대문 앞", lat=37.566012, long=126.971003,
        media_url="https://files.example/p.jpg", consent=True))
    store.subscribe(rec.ticket, "telegram:u2")
    store.update_status(rec.ticket, "in_progress", note="작업반 배정, 내일 보수 예정 (담당 010-1234-5678)")
    srv = ServerThread(app).start()
    try:
        yield srv.url, rec.ticket
    finally:
        srv.stop()


def test_anyone_sees_status_department_dates_and_public_notes_but_no_personal_data(server) -> None:
    url, ticket = server
    card = httpx.get(f"{url}/api/status/{ticket}", timeout=30).json()
    assert card["ticket"] == ticket and card["sub_status"] == "in_progress"
    assert "도로" in card["department"]
    assert card["area"] == "은행동" and card["reports"] == 2
    assert card["notes"][0]["text"].startswith("작업반 배정")
    page = httpx.get(f"{url}/status", params={"ticket": ticket}, timeout=30).text
    for text in (str(card), page):
        for secret in PRIVATE:
            assert secret not in text, secret
    assert "처리 중" in page and ticket in page
    assert httpx.get(f"{url}/status", params={"ticket": "2026-999999"}, timeout=30).status_code == 404


def test_the_map_lists_open_requests_by_category_and_area_approximately(server) -> None:
    url, ticket = server
    data = httpx.get(f"{url}/api/status/map", params={"service": "roads.pothole"}, timeout=30).json()
    item = next(i for i in data["items"] if i["ticket"] == ticket)
    assert (item["lat"], item["long"]) == (37.566, 126.971) and item["area"] == "은행동"
    assert httpx.get(f"{url}/api/status/map", params={"service": "water.leak"}, timeout=30).json()["items"] == []
    page = httpx.get(f"{url}/status/map", params={"lang": "en"}, timeout=30).text
    assert ticket in page and "Eunhaeng-dong" in page and "<svg" in page


def test_status_pages_pass_axe_on_a_phone(server, browser) -> None:
    url, ticket = server
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                              bypass_csp=True)  # axe-core is injected inline
    try:
        page = ctx.new_page()
        page.goto(f"{url}/status")
        page.get_by_label("접수번호").fill(ticket)
        page.get_by_role("button", name="조회").click()
        page.wait_for_selector(f"[data-ticket='{ticket}']")
        assert serious_violations(page) == []
        page.goto(f"{url}/status/map?lang=en")
        assert serious_violations(page) == []
    finally:
        ctx.close()
