"""Public transparency page: the figures match seeded data, in JSON, in HTML and in a real browser.

Requests are seeded through the same store the bot uses (``SqlRequestStore`` with a test clock),
feedback and hand-offs through the models. The browser part renders the page's HTML in headless
Chromium and runs axe-core; it skips without Chromium or axe-core unless ``CI=true``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.app import create_app
from bot.service_requests import RequestDraft
from bot.settings import ROOT, Settings
from crm_store.models import Conversation, Feedback, Handoff
from crm_store.requests import SqlRequestStore
from crm_store.timeutil import utcnow
from tests.fixtures_browser import serious_violations


def _open(store: SqlRequestStore, clock: list[datetime], at: datetime, code: str, dept: str, hours: float) -> str:
    clock[0] = at
    return store.open(RequestDraft(service_code=code, department=dept, description="테스트 010-1234-5678",
                                   address_string="한빛동", expected_hours=hours, channel="webchat")).ticket


def _close(store: SqlRequestStore, clock: list[datetime], ticket: str, at: datetime, sub: str = "resolved") -> None:
    clock[0] = at
    assert store.update_status(ticket, sub) is not None


def _rate(sessions: Any, n: int, dept: str | None, rating: int, at: datetime) -> None:
    with sessions.begin() as s:
        conv = Conversation(key=f"webchat:t{n}", channel="webchat")
        s.add(conv)
        s.flush()
        handoff_id = None
        if dept is not None:
            h = Handoff(conversation_id=conv.id, department=dept, status="closed", queued_at=at)
            s.add(h)
            s.flush()
            handoff_id = h.id
        s.add(Feedback(conversation_id=conv.id, handoff_id=handoff_id, rating=rating, created_at=at))


@pytest.fixture
def seeded(db_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=db_url, redis_url=None, pcrm_model_dir=ROOT / "var" / "model"))
    sessions = app.state.sessions
    now = utcnow()
    clock = [now]
    store = SqlRequestStore(sessions, clock=lambda: clock[0])
    # Roads (48 h target): three resolved in the window (10 h, 60 h late, 20 h), one open, one too old.
    t = _open(store, clock, now - timedelta(days=10), "roads.pothole", "roads", 48)
    _close(store, clock, t, now - timedelta(days=10) + timedelta(hours=10))
    t = _open(store, clock, now - timedelta(days=9), "roads.pothole", "roads", 48)
    _close(store, clock, t, now - timedelta(days=9) + timedelta(hours=60))
    t = _open(store, clock, now - timedelta(days=8), "roads.streetlight", "roads", 72)
    _close(store, clock, t, now - timedelta(days=8) + timedelta(hours=20))
    _open(store, clock, now - timedelta(days=2), "roads.pothole", "roads", 48)
    t = _open(store, clock, now - timedelta(days=40), "roads.pothole", "roads", 48)
    _close(store, clock, t, now - timedelta(days=39))
    # Water: one rejected request (received, but not resolved).
    t = _open(store, clock, now - timedelta(days=5), "water.leak", "water", 12)
    _close(store, clock, t, now - timedelta(days=5) + timedelta(hours=1), "rejected")
    # Ratings: roads 5 and 4 in the window, 1 too old; general 2; one without a hand-off (not counted).
    _rate(sessions, 1, "roads", 5, now - timedelta(days=3))
    _rate(sessions, 2, "roads", 4, now - timedelta(days=1))
    _rate(sessions, 3, "roads", 1, now - timedelta(days=45))
    _rate(sessions, 4, "general", 2, now - timedelta(days=2))
    _rate(sessions, 5, None, 1, now - timedelta(days=2))
    yield TestClient(app)
    app.state.sessions.kw["bind"].dispose()


def _dept(body: dict[str, Any], code: str) -> dict[str, Any]:
    return next(d for d in body["departments"] if d["department"] == code)


def test_json_matches_seeded_data(seeded: TestClient) -> None:
    r = seeded.get("/api/transparency")
    assert r.status_code == 200
    body = r.json()
    assert body["window_days"] == 30
    roads = _dept(body, "roads")
    assert roads["received"] == 4 and roads["resolved"] == 3
    assert roads["median_hours_to_resolve"] == 20.0
    assert roads["on_time_share"] == pytest.approx(2 / 3, abs=0.001)
    assert roads["csat"] == 4.5 and roads["csat_n"] == 2
    water = _dept(body, "water")
    assert water["received"] == 1 and water["resolved"] == 0
    assert water["median_hours_to_resolve"] is None and water["on_time_share"] is None
    assert _dept(body, "general")["csat"] == 2.0 and _dept(body, "general")["csat_n"] == 1
    waste = _dept(body, "waste")
    assert waste["received"] == 0 and waste["csat"] is None and waste["csat_n"] == 0
    assert {d["department"] for d in body["departments"]} >= {"waste", "roads", "water", "general", "safety"}
    # Aggregates only: no ticket numbers, descriptions, addresses or phone numbers.
    assert not re.search(r"\d{4}-\d{6}|010-|한빛동|테스트", r.text)


def _cells(page_html: str, dept: str) -> list[str]:
    row = re.search(rf'<tr data-department="{dept}">(.*?)</tr>', page_html, re.S)
    assert row, dept
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row.group(1))]


def test_html_shows_the_numbers(seeded: TestClient) -> None:
    ko = seeded.get("/transparency")
    assert ko.status_code == 200 and ko.headers["content-type"].startswith("text/html")
    assert '<html lang="ko">' in ko.text and "<caption>" in ko.text and 'scope="col"' in ko.text
    assert _cells(ko.text, "roads") == ["도로관리과", "4", "20.0", "67%", "4.50 (2명)"]
    assert _cells(ko.text, "water") == ["상하수도과", "1", "–", "–", "–"]
    en = seeded.get("/transparency?lang=en")
    assert '<html lang="en">' in en.text
    assert _cells(en.text, "roads") == ["Road Management Department", "4", "20.0", "67%", "4.50 (n=2)"]
    assert _cells(en.text, "general") == ["General Inquiry Desk", "0", "–", "–", "2.00 (n=1)"]


@pytest.mark.browser
@pytest.mark.parametrize("lang", ["ko", "en"])
def test_browser_shows_numbers_and_is_accessible(seeded: TestClient, browser: Any, lang: str) -> None:
    page_html = seeded.get(f"/transparency?lang={lang}").text
    context = browser.new_context(locale="ko-KR" if lang == "ko" else "en-US")
    try:
        pg = context.new_page()
        pg.set_content(page_html)
        row = pg.locator('tr[data-department="roads"]')
        cells = [c.strip() for c in row.locator("th, td").all_inner_texts()]
        assert cells[1:4] == ["4", "20.0", "67%"]
        assert pg.locator("table caption").count() == 1
        assert pg.title()
        assert serious_violations(pg) == []
    finally:
        context.close()
