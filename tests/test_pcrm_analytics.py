"""Supervisor analytics on known data: KPIs by day and week, per channel and department, FCR, SLA
breaches, abandonment, needs rising, equity flags, the Rasa NLU export; the dashboard in headless
Chromium after a console login (numbers shown, axe-core clean); agents get 403.

The data (2026-03-02 … 2026-03-15, Seoul time; the previous equal window is 02-16 … 03-01):

* web chat, 5 residents aged 20-29 writing English, ask about property tax on 03-03 (one asks
  again on 03-06: not resolved at first contact); two are handed off to ``tax`` and wait 40 min
  (SLA 15 min: two breaches); one also sends an unrecognised message with a phone number;
* Telegram, 5 residents aged 70+, report potholes on 03-10; four hand-offs claimed after 5 min,
  one closed unclaimed after 20 min (abandoned, breach); one low-confidence streetlight message
  with a resident registration number; two pothole requests (resolved in 24 h on time, 72 h late);
* SMS, 2 residents (age unknown), missed collection on 03-12; one hand-off still queued (abandoned:
  silent since; breach) and one request still open past its expected time (breach);
* before the window: 2 of the Telegram residents asked about potholes, 3 others about collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from fastapi.testclient import TestClient

from bot.app import create_app
from bot.console.auth import create_agent
from bot.settings import ROOT, Settings
from crm_store.models import Conversation, Feedback, Handoff, Interaction, Resident, ServiceRequest
from crm_store.timeutil import as_utc
from tests.channel_servers import ServerThread
from tests.fixtures_browser import serious_violations

SEOUL = ZoneInfo("Asia/Seoul")
SUP = ("sup", "supervisor-pw-1")
AGENT = ("kim", "agent-pw-1234")
RANGE = "from=2026-03-02&to=2026-03-15"


def at(day: int, hour: int = 10, minute: int = 0, month: int = 3) -> datetime:
    return as_utc(datetime(2026, month, day, hour, minute, tzinfo=SEOUL))


def seed(sessions: Any) -> None:
    create_agent(sessions, *SUP, role="supervisor")
    create_agent(sessions, *AGENT, role="agent", departments=["roads"])
    with sessions.begin() as s:
        n = 0

        def conv(channel: str, age: str | None, lang: str, tags: list[str] | None = None) -> Conversation:
            nonlocal n
            n += 1
            r = Resident(preferred_lang=lang, age_band=age, needs_tags=tags or [])
            s.add(r)
            s.flush()
            c = Conversation(key=f"{channel}:{n}", channel=channel, resident_id=r.id)
            s.add(c)
            s.flush()
            return c

        def say(c: Conversation, when: datetime, label: str, text: str = "문의", conf: float = 0.9,
                lang: str = "ko") -> None:
            s.add(Interaction(conversation_id=c.id, resident_id=c.resident_id, channel=c.channel, direction="in",
                              text=text, label=label, confidence=conf, lang=lang, entities=[], created_at=when))
            s.add(Interaction(conversation_id=c.id, resident_id=c.resident_id, channel=c.channel, direction="out",
                              text="답변", entities=[], created_at=when + timedelta(seconds=1)))

        def handoff(c: Conversation, dept: str, queued: datetime, claim_after: int | None = None,
                    closed: datetime | None = None) -> Handoff:
            h = Handoff(conversation_id=c.id, resident_id=c.resident_id, department=dept, queued_at=queued,
                        status="queued")
            if claim_after is not None:
                h.claimed_at, h.status = queued + timedelta(minutes=claim_after), "claimed"
            if closed is not None:
                h.closed_at, h.status = closed, "closed"
            s.add(h)
            s.flush()
            return h

        web = [conv("webchat", "20-29", "en", ["senior_care"] if i == 0 else None) for i in range(5)]
        tg = [conv("telegram", "70+", "ko", ["senior_care", "disability"] if i == 0 else None) for i in range(5)]
        sms = [conv("twilio_sms", None, "ko") for _ in range(2)]
        before = [conv("twilio_sms", None, "ko") for _ in range(3)]
        for c in web:
            say(c, at(3), "faq.property_tax", "When is property tax due", lang="en")
        say(web[0], at(6), "faq.property_tax", "property tax again", lang="en")
        say(web[1], at(3, 11), "conv.out_of_scope", "음 그게   010-1234-5678", conf=0.2, lang="en")
        h_web = [handoff(c, "tax", at(3), claim_after=40) for c in web[:2]]
        for c in tg:
            say(c, at(10, 9), "roads.pothole", "도로에 구멍이 있어요")
        say(tg[4], at(10, 9, 30), "roads.streetlight", "가로등 그거 900101-1234567", conf=0.3)
        for c in tg[:4]:
            handoff(c, "roads", at(10), claim_after=5)
        handoff(tg[4], "roads", at(10, 11), closed=at(10, 11, 20))
        for c in sms:
            say(c, at(12, 9), "waste.missed_collection", "쓰레기 안 가져감")
        handoff(sms[0], "waste", at(12, 9, 5))
        for c in tg[:2]:
            say(c, at(20, month=2), "roads.pothole", "도로 파임")
        for c in before:
            say(c, at(18, month=2), "waste.missed_collection", "쓰레기")

        def request(sid: str, c: Conversation, code: str, dept: str, requested: datetime, hours: int,
                    resolved_after: int | None) -> None:
            s.add(ServiceRequest(
                service_request_id=sid, service_code=code, agency_responsible=dept, conversation_id=c.id,
                resident_id=c.resident_id, channel=c.channel, requested_datetime=requested,
                expected_datetime=requested + timedelta(hours=hours),
                updated_datetime=requested + timedelta(hours=resolved_after or 0),
                status="closed" if resolved_after else "open", sub_status="resolved" if resolved_after else "received"))

        request("2026-000001", tg[0], "roads.pothole", "roads", at(10, 12), 48, 24)
        request("2026-000002", tg[1], "roads.pothole", "roads", at(10, 12), 48, 72)
        request("2026-000003", sms[1], "waste.missed_collection", "waste", at(12, 10), 24, None)
        s.add(Feedback(conversation_id=web[0].id, handoff_id=h_web[0].id, rating=2, created_at=at(3, 12)))
        s.add(Feedback(conversation_id=tg[0].id, rating=5, created_at=at(10, 12)))
        s.add(Feedback(conversation_id=tg[1].id, rating=4, created_at=at(10, 12)))


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    # Basic auth only from allow-listed addresses: this test client calls from 127.0.0.1, which is listed.
    app = create_app(Settings(database_url=db_url, redis_url=None, pcrm_model_dir=ROOT / "var" / "model",
                              pcrm_supervisor_basic_allow="127.0.0.1/32"))
    seed(app.state.sessions)
    yield TestClient(app, client=("127.0.0.1", 50000))
    app.state.sessions.kw["bind"].dispose()


def analytics(client: TestClient, query: str = "") -> dict[str, Any]:
    r = client.get(f"/supervisor/kpis.json?{RANGE}&{query}", auth=SUP)
    assert r.status_code == 200, r.text
    return r.json()["analytics"]


def test_overall_kpis(client: TestClient) -> None:
    o = analytics(client)["overall"]
    assert o["messages_in"] == 15 and o["conversations"] == 12 and o["handed_off_conversations"] == 8
    assert o["handoff_rate"] == 0.6667 and o["bot_containment"] == 0.3333
    assert o["fcr"] == {"contacts": 14, "resolved_first": 13, "rate": 0.9286}
    assert o["handoffs"] == 8
    assert o["wait_before_claim_minutes"] == {"n": 6, "mean": 16.67, "p90": 40.0}
    assert o["abandoned"] == 2 and o["abandonment_rate"] == 0.25
    assert o["requests"] == 3 and o["requests_resolved"] == 2
    assert o["resolve_hours"] == {"mean": 48.0, "median": 48.0}
    assert o["sla_breaches"] == {"handoffs": 4, "requests": 2, "total": 6}
    assert o["csat"] == {"mean": 3.67, "n": 3}


def test_by_day_and_by_week(client: TestClient) -> None:
    days = {r["period"]: r for r in analytics(client)["series"]}
    assert len(days) == 14 and list(days)[0] == "2026-03-02" and list(days)[-1] == "2026-03-15"
    assert [days[d]["messages_in"] for d in ("2026-03-03", "2026-03-06", "2026-03-10", "2026-03-12")] == [6, 1, 6, 2]
    assert days["2026-03-04"]["messages_in"] == 0 and days["2026-03-04"]["handoff_rate"] is None
    assert days["2026-03-10"]["handoffs"] == 5 and days["2026-03-10"]["abandoned"] == 1
    weeks = analytics(client, "period=week")["series"]
    assert [w["period"] for w in weeks] == ["2026-W10", "2026-W11"]
    w10, w11 = weeks
    assert (w10["messages_in"], w10["conversations"], w10["handoffs"]) == (7, 5, 2)
    assert (w11["messages_in"], w11["conversations"], w11["handoffs"]) == (8, 7, 6)
    assert w10["sla_breaches"]["total"] == 2 and w11["sla_breaches"] == {"handoffs": 2, "requests": 2, "total": 4}
    assert w10["fcr"]["rate"] == round(5 / 6, 4) and w11["fcr"]["rate"] == 1.0


def test_by_channel_and_department(client: TestClient) -> None:
    a = analytics(client)
    ch = {g["group"]: g for g in a["groups"]}
    assert set(ch) == {"webchat", "telegram", "twilio_sms"}
    assert ch["webchat"]["messages_in"] == 7 and ch["webchat"]["handoff_rate"] == 0.4
    assert ch["telegram"]["handoff_rate"] == 1.0 and ch["telegram"]["abandoned"] == 1
    assert ch["twilio_sms"]["requests"] == 1 and ch["twilio_sms"]["sla_breaches"]["total"] == 2
    assert sum(a["volume_by_group"]["webchat"].values()) == 7 and a["volume_by_group"]["webchat"]["2026-03-03"] == 6
    d = {g["group"]: g for g in analytics(client, "group=department")["groups"]}
    assert d["tax"]["conversations"] == 5 and d["tax"]["wait_before_claim_minutes"]["mean"] == 40.0
    assert d["roads"]["requests"] == 2 and d["roads"]["resolve_hours"]["mean"] == 48.0
    assert d["roads"]["csat"] == {"mean": 4.5, "n": 2} and d["tax"]["csat"] == {"mean": 2.0, "n": 1}
    assert d["waste"]["conversations"] == 2 and d["waste"]["abandoned"] == 1


def test_needs_rising(client: TestClient) -> None:
    a = analytics(client)
    needs = {r["need"]: r for r in a["needs"]}
    assert a["previous_window"] == {"from": "2026-02-16", "to": "2026-03-01"}
    pothole = needs["roads.pothole"]
    assert (pothole["residents"], pothole["current"], pothole["previous"], pothole["change_pct"]) == (5, 5, 2, 150.0)
    tax = needs["faq.property_tax"]
    assert (tax["current"], tax["previous"], tax["change_pct"], tax["rising"]) == (5, 0, None, True)
    waste = needs["waste.missed_collection"]
    assert (waste["residents"], waste["current"], waste["previous"], waste["change_pct"], waste["rising"]) == \
        (5, 2, 3, -33.3, False)
    assert (needs["senior_care"]["residents"], needs["disability"]["residents"]) == (2, 1)
    assert [r["need"] for r in a["rising_needs"]] == ["faq.property_tax", "roads.streetlight", "roads.pothole"]


def test_equity_flags(client: TestClient) -> None:
    eq = analytics(client)["equity"]
    assert (eq["flag_ratio"], eq["min_group"]) == (1.25, 5)
    flags = {dim: {g["group"]: g["flags"] for g in rows} for dim, rows in eq["groups"].items()}
    assert flags["channel"] == {"webchat": ["waits_longer"], "telegram": ["handed_off_more"], "twilio_sms": []}
    assert flags["lang"] == {"ko": ["handed_off_more"], "en": ["waits_longer"]}
    assert flags["age_band"] == {"20-29": ["waits_longer"], "70+": ["handed_off_more"]}
    sms = next(g for g in eq["groups"]["channel"] if g["group"] == "twilio_sms")
    assert sms["judged"] is False and sms["handoff_rate"] == 0.5  # 2 conversations < min_group: not judged


def test_unrecognised_export_is_rasa_nlu_yaml_with_pii_masked(client: TestClient) -> None:
    r = client.get(f"/supervisor/unrecognised.yml?{RANGE}", auth=SUP)
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    doc = yaml.safe_load(r.text)
    assert doc["version"] == "3.1"
    examples = {b["intent"]: [x[2:] for x in b["examples"].splitlines()] for b in doc["nlu"]}
    assert examples == {"conv.out_of_scope": ["음 그게 010-****-5678"],
                        "roads.streetlight": ["가로등 그거 900101-1******"]}
    assert "1234-5678" not in r.text and "1234567" not in r.text
    assert client.get(f"/supervisor/unrecognised.yml?{RANGE}", auth=AGENT).status_code == 403
    assert client.get(f"/supervisor/unrecognised.yml?{RANGE}").status_code == 401


def test_html_shows_analytics_and_charts(client: TestClient) -> None:
    page = client.get(f"/supervisor?{RANGE}&period=week", auth=SUP).text
    for shown in ("66.7%", "92.9%", "16.67", "2 (25.0%)", "6 (연결 4 · 민원 2)", "2026-W10", "+150.0%",
                  "신규 / new", "더 오래 기다림 / waits longer", "상담원 연결 많음 / handed off more"):
        assert shown in page, shown
    assert page.count('role="img"') >= 6 and "<title id=" in page and 'aria-labelledby="c' in page
    assert "010-1234-5678" not in page and "900101-1234567" not in page
    for bad in ("period=month", "group=age", "handled=robot", "resident=x"):
        assert client.get(f"/supervisor/kpis.json?{bad}", auth=SUP).status_code == 400, bad


def test_log_filters_and_transcript(client: TestClient) -> None:
    def items(q: str) -> list[dict[str, Any]]:
        return client.get(f"/supervisor/interactions.json?{RANGE}&{q}", auth=SUP).json()["items"]

    assert {r["label"] for r in items("department=roads&direction=in")} == {"roads.pothole", "roads.streetlight"}
    assert {r["text"] for r in items("lang=en")} == {"When is property tax due", "property tax again",
                                                      "음 그게   010-****-5678"}
    assert len(items("handled=bot&direction=out")) == 15 and items("handled=agent") == []
    assert [r["text"] for r in items("q=%EA%B0%80%EB%A1%9C%EB%93%B1")] == ["가로등 그거 900101-1******"]  # 가로등
    assert [r["text"] for r in items("q=PROPERTY%20TAX%20A")] == ["property tax again"]
    conv_id = items("q=%EA%B0%80%EB%A1%9C%EB%93%B1")[0]["conversation_id"]
    page = client.get(f"/supervisor/conversations/{conv_id}", auth=SUP)
    assert page.status_code == 200 and "도로에 구멍이 있어요" in page.text and "900101-1******" in page.text
    assert client.get(f"/supervisor/conversations/{conv_id}", auth=AGENT).status_code == 403
    assert client.get("/supervisor/conversations/999999", auth=SUP).status_code == 404
    browser_like = client.get("/supervisor", headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser_like.status_code == 303 and browser_like.headers["location"].startswith("/console/login?next=")


# ---------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    db = tmp_path_factory.mktemp("analytics-db") / "pcrm.db"
    app = create_app(Settings(database_url=f"sqlite:///{db}", redis_url=None, pcrm_model_dir=ROOT / "var" / "model"))
    seed(app.state.sessions)
    srv = ServerThread(app).start()
    try:
        yield srv
    finally:
        srv.stop()


def login(browser: Any, url: str, who: tuple[str, str], next_path: str) -> tuple[Any, Any]:
    ctx = browser.new_context(base_url=url, locale="ko-KR", bypass_csp=True)  # axe-core is injected inline
    pg = ctx.new_page()
    pg.goto(next_path)  # not logged in: sent to the console login, and back after it
    pg.wait_for_url("**/console/login**")
    pg.get_by_label("아이디").fill(who[0])
    pg.get_by_label("비밀번호").fill(who[1])
    pg.get_by_role("button", name="로그인").click()
    return ctx, pg


@pytest.mark.browser
def test_dashboard_in_chromium_after_console_login(browser: Any, server: ServerThread) -> None:
    ctx, pg = login(browser, server.url, SUP, f"/supervisor?{RANGE}&group=department")
    try:
        pg.wait_for_url("**/supervisor?**")
        assert pg.locator("h1").inner_text().startswith("상황판")
        cards = {c.split("\n")[0]: c.split("\n")[-1] for c in pg.locator(".cards li").all_inner_texts()}
        assert cards["상담원 연결률 / Hand-off rate"] == "66.7%"
        assert cards["첫 접촉 해결률 / First-contact resolution"] == "92.9%"
        assert cards["연결 대기 p90 / p90 wait (min)"] == "40"
        assert cards["포기 / Abandoned"] == "2 (25.0%)"
        tax = pg.locator("#groups-table tr", has_text="tax").first
        row = [c.strip() for c in tax.locator("th, td").all_inner_texts()]
        assert row[0] == "tax" and row[2] == "5" and row[6] == "40"
        pothole = pg.locator("#needs-table tr", has_text="roads.pothole").locator("td").all_inner_texts()
        assert pothole[1:5] == ["5", "5", "2", "+150.0%"]
        web = pg.locator("#equity-channel-table tr", has_text="webchat").locator("td").all_inner_texts()
        assert web[2] == "40" and web[-1] == "더 오래 기다림 / waits longer"
        assert pg.locator("svg[role='img']").count() >= 6
        bad = serious_violations(pg)
        assert bad == [], "\n".join(bad)
    finally:
        ctx.close()


@pytest.mark.browser
def test_agent_gets_403_in_the_browser(browser: Any, server: ServerThread) -> None:
    ctx, pg = login(browser, server.url, AGENT, "/supervisor")
    try:
        pg.wait_for_url("**/supervisor")
        response = pg.goto("/supervisor")
        assert response is not None and response.status == 403
    finally:
        ctx.close()
