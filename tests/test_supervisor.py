"""Supervisor dashboard: roles, KPIs on seeded data, log search with keyset pagination, masked CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.app import create_app
from bot.console.auth import create_agent
from bot.settings import ROOT, Settings
from crm_store.models import Conversation, Feedback, Handoff, Interaction
from crm_store.timeutil import utcnow

SUP = ("sup", "supervisor-pw-1")
ADMIN = ("boss", "admin-pw-1234")
AGENT = ("kim", "agent-pw-1234")
N_FILLER = 120


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    # Basic auth only from allow-listed addresses: this test client calls from 127.0.0.1, which is listed.
    app = create_app(Settings(database_url=db_url, redis_url=None, pcrm_model_dir=ROOT / "var" / "model",
                              pcrm_supervisor_basic_allow="127.0.0.1/32"))
    sessions = app.state.sessions
    create_agent(sessions, *SUP, role="supervisor")
    create_agent(sessions, *ADMIN, role="admin")
    create_agent(sessions, *AGENT, role="agent", departments=["roads"])
    now = utcnow()
    with sessions.begin() as s:
        convs = [Conversation(key=f"{ch}:{i}", channel=ch) for i, ch in
                 enumerate(["webchat", "webchat", "telegram", "sms"])]
        s.add_all(convs)
        s.flush()

        def msg(conv: Conversation, text: str, label: str | None = None, conf: float | None = None,
                direction: str = "in", ago: timedelta = timedelta(hours=1)) -> None:
            s.add(Interaction(conversation_id=conv.id, channel=conv.channel, direction=direction, text=text,
                              label=label, confidence=conf, entities=[], created_at=now - ago))

        msg(convs[0], "도로에 구멍이 있어요", "roads.pothole", 0.9)
        msg(convs[0], "접수되었습니다", direction="out")
        msg(convs[1], "제 번호는 010-1234-5678 이에요", "conv.human", 0.8)
        msg(convs[1], "음 그게", "conv.out_of_scope", 0.2)
        msg(convs[2], "가로등이 꺼졌어요", "roads.streetlight", 0.4)
        msg(convs[3], "쓰레기 안 가져감", "waste.missed_collection", 0.95)
        msg(convs[3], "old message", "waste.missed_collection", 0.95, ago=timedelta(days=30))
        # Two hand-offs in range: claimed after 4 and 10 minutes; one still waiting (conv 3).
        s.add(Handoff(conversation_id=convs[1].id, department="general", status="claimed",
                      queued_at=now - timedelta(minutes=50), claimed_at=now - timedelta(minutes=46)))
        s.add(Handoff(conversation_id=convs[2].id, department="roads", status="closed",
                      queued_at=now - timedelta(minutes=40), claimed_at=now - timedelta(minutes=30)))
        s.add(Feedback(conversation_id=convs[1].id, rating=5, created_at=now))
        s.add(Feedback(conversation_id=convs[2].id, rating=2, created_at=now))
        filler = Conversation(key="webchat:filler", channel="webchat")
        s.add(filler)
        s.flush()
        for i in range(N_FILLER):
            s.add(Interaction(conversation_id=filler.id, channel="webchat", direction="out",
                              text=f"filler {i} 02-2100-1000", entities=[], created_at=now - timedelta(days=2)))
    yield TestClient(app, client=("127.0.0.1", 50000))
    sessions.kw["bind"].dispose()


def test_roles(client: TestClient) -> None:
    for path in ("/supervisor", "/supervisor/kpis.json", "/supervisor/interactions.csv"):
        r = client.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert client.get(path, auth=(SUP[0], "wrong-password")).status_code == 401
        assert client.get(path, auth=AGENT).status_code == 403
        assert client.get(path, auth=SUP).status_code == 200
        assert client.get(path, auth=ADMIN).status_code == 200
    assert client.get("/supervisor", headers={"Authorization": "Basic !!!"}).status_code == 401


def test_kpis(client: TestClient) -> None:
    k = client.get("/supervisor/kpis.json", auth=SUP).json()
    assert k["volume_by_channel"] == {"webchat": 3, "telegram": 1, "sms": 1}
    assert k["conversations"] == 4 and k["handed_off_conversations"] == 2
    assert k["handoff_rate"] == 0.5 and k["bot_containment"] == 0.5
    assert k["wait_before_claim_minutes"] == {"n": 2, "mean": 7.0, "p90": 10.0}
    assert k["csat"] == {"mean": 3.5, "n": 2}
    assert k["top_labels"] == [{"label": label, "count": 1} for label in sorted(
        ["roads.pothole", "conv.human", "conv.out_of_scope", "roads.streetlight", "waste.missed_collection"])]
    low = [m["text"] for m in k["low_confidence"]]
    assert low == ["가로등이 꺼졌어요", "음 그게"]
    page = client.get("/supervisor", auth=SUP)
    assert "봇 자체 해결률" in page.text and "50.0%" in page.text and 'lang="ko"' in page.text
    assert "010-1234-5678" not in page.text
    for bad in ("from=yesterday", "to=2026-02-30", "from=2026-05-02&to=2026-05-01", "from=2020-01-01&to=2026-01-01",
                "direction=sideways", "before_id=abc", "before_id=-1"):
        assert client.get(f"/supervisor/kpis.json?{bad}", auth=SUP).status_code == 400, bad


def test_search_filters(client: TestClient) -> None:
    def ids(query: str) -> list[dict[str, Any]]:
        return client.get(f"/supervisor/interactions.json?{query}", auth=SUP).json()["items"]

    assert {r["channel"] for r in ids("channel=telegram")} == {"telegram"}
    assert [r["text"] for r in ids("label=roads.pothole")] == ["도로에 구멍이 있어요"]
    assert all(r["direction"] == "in" for r in ids("direction=in"))
    assert [r["text"] for r in ids("q=%EA%B0%80%EB%A1%9C%EB%93%B1")] == ["가로등이 꺼졌어요"]  # 가로등
    assert [r["text"] for r in ids("q=OLD&from=" + (utcnow() - timedelta(days=40)).date().isoformat())] == [
        "old message"]
    assert ids("q=%25") == []  # LIKE wildcards are literal


def test_keyset_pagination(client: TestClient) -> None:
    seen: list[int] = []
    before = None
    pages = 0
    while True:
        q = "direction=out" + (f"&before_id={before}" if before else "")
        body = client.get(f"/supervisor/interactions.json?{q}", auth=SUP).json()
        seen += [r["id"] for r in body["items"]]
        pages += 1
        before = body["next_before_id"]
        if before is None:
            break
        assert before == body["items"][-1]["id"]
    assert pages == 3 and len(seen) == N_FILLER + 1 == len(set(seen))
    # newest first: the reply of an hour ago, then the fillers of two days ago (same time: by id)
    assert seen[1:] == sorted(seen[1:], reverse=True) and seen[0] < seen[1]
    page = client.get("/supervisor?direction=out", auth=SUP).text
    assert "before_id=" in page


def test_csv_masks_phone_numbers(client: TestClient) -> None:
    r = client.get("/supervisor/interactions.csv", auth=SUP)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert len(rows) == 6 + N_FILLER
    texts = [row["text"] for row in rows]
    assert "제 번호는 010-****-5678 이에요" in texts
    assert "010-1234-5678" not in r.text and "2100-1000" not in r.text
    assert "filler 0 02-****-1000" in texts
    only = list(csv.DictReader(io.StringIO(client.get("/supervisor/interactions.csv?channel=sms",
                                                      auth=SUP).text.lstrip("\ufeff"))))
    assert [row["text"] for row in only] == ["쓰레기 안 가져감"]


def test_csv_guards_formulas_behind_tab_cr_and_variant_numbers(client: TestClient, db_url: str) -> None:
    """The formula guard missed a leading tab/CR; full-width digits and en dashes passed unmasked."""
    sessions = client.app.state.sessions  # type: ignore[attr-defined]
    with sessions.begin() as s:
        conv = Conversation(key="webchat:csv-guard", channel="webchat")
        s.add(conv)
        s.flush()
        for text in ("\t=HYPERLINK(\"http://evil\")", "\r=1+1", "＝1+1",
                     "번호 ０１０－９８７６－５４３２", "번호 010–2222–3333"):
            s.add(Interaction(conversation_id=conv.id, channel="webchat", direction="in", text=text, entities=[],
                              created_at=utcnow() - timedelta(minutes=5)))
    r = client.get("/supervisor/interactions.csv?resident=&q=", auth=SUP)
    rows = [row["text"] for row in csv.DictReader(io.StringIO(r.text.lstrip("\ufeff")))]
    formulas = [t for t in rows if "HYPERLINK" in t or "1+1" in t]
    assert len(formulas) == 3 and all(t.startswith("'") for t in formulas), formulas
    assert "９８７６" not in r.text and "2222" not in r.text
