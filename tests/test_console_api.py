"""The agent console's API and pages: permissions, CSRF, the hand-off life cycle, delivery and audit.

One app per module (FastAPI TestClient, so web chat sockets and console sockets share
its event loop), a temporary SQLite database and a copy of ``config.yml`` with the
office always open (hand-offs are queued, not turned into call-backs).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from bot.console.auth import create_agent
from bot.console.routes import MAX_NOTE
from bot.service_requests import RequestDraft
from bot.settings import ROOT, Settings
from bot.webchat_keys import new_key, protocols_for, session_of
from crm_store import residents
from crm_store.conversations import by_key
from crm_store.models import AuditLog, Feedback, Handoff, HandoffNote, Interaction
from crm_store.requests import SqlRequestStore

PASSWORD = "correct-horse-battery"


def always_open_config(tmp: Path) -> Path:
    """A copy of config.yml whose office never closes."""
    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    config["business_hours"] = {**(config.get("business_hours") or {}), "always_open": True}
    path = tmp / "config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from bot.app import create_app

    tmp = tmp_path_factory.mktemp("console")
    settings = Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None,
                        pcrm_config=always_open_config(tmp), pcrm_model_dir=ROOT / "var" / "model",
                        pcrm_secret_key="test-secret-key")
    app = create_app(settings)
    sessions = app.state.sessions
    create_agent(sessions, "waste1", PASSWORD, "agent", ["waste"], "김청소")
    create_agent(sessions, "tax1", PASSWORD, "agent", ["tax"], "이세무")
    create_agent(sessions, "boss", PASSWORD, "supervisor", [], "박팀장")
    return app


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log ``username`` in on ``client`` (dropping any earlier session); returns the CSRF token."""
    client.cookies.clear()
    page = client.get("/console/login")
    assert page.status_code == 200
    token = client.cookies["pcrm_csrf"]
    r = client.post("/console/login", data={"username": username, "password": password, "csrf_token": token,
                                            "next": "/console"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client.cookies["pcrm_csrf"]


def logout(client: TestClient) -> None:
    client.cookies.clear()


def rest(client: TestClient, sender: str, text: str) -> list[dict[str, Any]]:
    r = client.post("/webhooks/rest/webhook", json={"sender": sender, "message": text})
    assert r.status_code == 200, r.text
    return r.json()


def waste_handoff(client: TestClient, app: Any, sender: str | None = None) -> tuple[str, int]:
    """A REST resident asks about missed collection, then for a person: a waste hand-off."""
    sender = sender or f"res-{uuid.uuid4().hex[:10]}"
    rest(client, sender, "쓰레기 안 가져갔어요")
    rest(client, sender, "상담원 연결해 주세요")
    return sender, handoff_of(app, f"rest:{sender}")


def handoff_of(app: Any, key: str) -> int:
    with app.state.sessions() as s:
        conv = by_key(s, key)
        assert conv is not None
        row = s.scalars(select(Handoff).where(Handoff.conversation_id == conv.id)
                        .order_by(Handoff.id.desc())).first()
        assert row is not None, f"no hand-off for {key}"
        return row.id


@pytest.fixture(scope="module")
def tax_handoff(client: TestClient, app: Any) -> int:
    sender = f"tax-{uuid.uuid4().hex[:10]}"
    rest(client, sender, "재산세 언제 내요?")
    rest(client, sender, "상담원 연결해 주세요")
    hid = handoff_of(app, f"rest:{sender}")
    with app.state.sessions.begin() as s:
        row = s.get_one(Handoff, hid)
        row.department = "tax"  # whatever the bot guessed, this one is the tax department's
    return hid


def api_post(client: TestClient, path: str, token: str | None, body: dict[str, Any] | None = None) -> Any:
    headers = {"X-CSRF-Token": token} if token is not None else {}
    return client.post(path, json=body or {}, headers=headers)


# --- access ------------------------------------------------------------------------------------

def test_unauthenticated_pages_redirect_and_api_is_401(client: TestClient) -> None:
    logout(client)
    r = client.get("/console", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    r = client.get("/console/handoffs/1", follow_redirects=False)
    assert r.status_code == 303 and "next=/console/handoffs/1" in r.headers["location"]
    assert client.get("/console/api/queue").status_code == 401
    assert client.get("/console/api/handoffs/1").status_code == 401
    assert client.get("/console/api/me").status_code == 401
    for path in ("/console/api/handoffs/1/claim", "/console/api/handoffs/1/reply",
                 "/console/api/handoffs/1/resolve", "/console/api/handoffs/1/reveal",
                 "/console/api/requests/2026-000001/status"):
        assert client.post(path, json={"text": "x"}).status_code == 401, path


def test_unauthenticated_socket_is_refused(client: TestClient) -> None:
    from starlette.websockets import WebSocketDisconnect

    logout(client)
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/console/ws") as ws:
        ws.receive_text()


def test_login_sets_a_hardened_cookie_and_rejects_bad_passwords(client: TestClient) -> None:
    client.cookies.clear()
    client.get("/console/login")
    token = client.cookies["pcrm_csrf"]
    bad = client.post("/console/login", data={"username": "waste1", "password": "wrong-password",
                                              "csrf_token": token}, follow_redirects=False)
    assert bad.status_code == 401
    assert "pcrm_console" not in client.cookies
    no_csrf = client.post("/console/login", data={"username": "waste1", "password": PASSWORD},
                          follow_redirects=False)
    assert no_csrf.status_code == 403
    ok = client.post("/console/login", data={"username": "waste1", "password": PASSWORD, "csrf_token": token,
                                             "next": "https://evil.example/"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/console"  # no open redirect
    cookie = next(h for h in ok.headers.get_list("set-cookie") if h.startswith("pcrm_console="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert client.get("/console/api/me").json()["username"] == "waste1"


def test_a_forged_session_cookie_is_rejected(client: TestClient) -> None:
    login(client, "waste1")
    value = client.cookies["pcrm_console"]
    client.cookies.set("pcrm_console", value[::-1], path="/")  # the cookie path is /
    assert client.get("/console/api/me").status_code == 401


def test_csrf_is_required_on_every_post(client: TestClient, app: Any) -> None:
    token = login(client, "waste1")
    _sender, hid = waste_handoff(client, app)
    base = f"/console/api/handoffs/{hid}"
    for path, body in ((f"{base}/claim", {}), (f"{base}/reply", {"text": "hi"}), (f"{base}/note", {"text": "n"}),
                       (f"{base}/reveal", {}), (f"{base}/resolve", {"resolution_code": "answered"}),
                       (f"{base}/handback", {}), (f"{base}/transfer", {"department": "tax", "reason": "x"})):
        assert api_post(client, path, None, body).status_code == 403, path
        assert api_post(client, path, "forged.token", body).status_code == 403, path
    # a token signed for another session does not work either
    other = token
    login(client, "tax1")
    assert api_post(client, f"{base}/claim", other).status_code == 403
    with app.state.sessions() as s:
        assert s.get_one(Handoff, hid).status == "queued"


# --- queues ------------------------------------------------------------------------------------

def test_rest_handoff_appears_in_the_waste_queue_only(client: TestClient, app: Any, tax_handoff: int) -> None:
    _sender, hid = waste_handoff(client, app)
    login(client, "waste1")
    ids = [it["id"] for it in client.get("/console/api/queue").json()["items"]]
    assert hid in ids and tax_handoff not in ids
    page = client.get("/console")
    assert page.status_code == 200 and f"/console/handoffs/{hid}" in page.text
    assert 'lang="ko"' in page.text
    login(client, "tax1")
    ids = [it["id"] for it in client.get("/console/api/queue").json()["items"]]
    assert tax_handoff in ids and hid not in ids


def test_supervisor_sees_every_department(client: TestClient, app: Any, tax_handoff: int) -> None:
    _sender, hid = waste_handoff(client, app)
    login(client, "boss")
    items = client.get("/console/api/queue").json()["items"]
    ids = [it["id"] for it in items]
    assert hid in ids and tax_handoff in ids
    keys = [(-it["priority"], it["queued_at"], it["id"]) for it in items]
    assert keys == sorted(keys)
    assert client.get(f"/console/api/handoffs/{tax_handoff}").status_code == 200


def test_agent_of_waste_gets_403_on_a_tax_handoff(client: TestClient, tax_handoff: int) -> None:
    token = login(client, "waste1")
    assert client.get(f"/console/api/handoffs/{tax_handoff}").status_code == 403
    assert client.get(f"/console/handoffs/{tax_handoff}").status_code == 403
    for action, body in (("claim", {}), ("reply", {"text": "hi"}), ("note", {"text": "n"}), ("reveal", {}),
                         ("resolve", {"resolution_code": "answered"}), ("handback", {}),
                         ("transfer", {"department": "waste", "reason": "x"})):
        r = api_post(client, f"/console/api/handoffs/{tax_handoff}/{action}", token, body)
        assert r.status_code == 403, action


def test_console_socket_pushes_new_handoffs_of_my_department(client: TestClient, app: Any) -> None:
    login(client, "waste1")
    with client.websocket_connect("/console/ws") as ws:
        assert ws.receive_json()["type"] == "ready"
        sender, hid = waste_handoff(client, app)
        frame = ws.receive_json()
        assert frame["type"] == "handoff" and frame["handoff_id"] == hid and frame["topic"] == "dept:waste"
        ws.send_text(json.dumps({"type": "watch", "handoff_id": hid}))
        assert ws.receive_json() == {"type": "ready", "topics": [f"handoff:{hid}"]}
        rest(client, sender, "아직이에요?")
        frames = [ws.receive_json(), ws.receive_json()]
        message = next(f for f in frames if f["topic"] == f"handoff:{hid}")
        assert message["type"] == "message" and message["text"] == "아직이에요?"


# --- hand-off life cycle -----------------------------------------------------------------------

def test_view_reply_resolve_and_rating_over_rest(client: TestClient, app: Any) -> None:
    sender, hid = waste_handoff(client, app)
    rest(client, sender, "<script>alert(1)</script>")
    token = login(client, "waste1")
    detail = client.get(f"/console/api/handoffs/{hid}").json()
    assert detail["handoff"]["department"] == "waste" and detail["handoff"]["summary"]
    texts = [m["text"] for m in detail["timeline"]]
    assert "쓰레기 안 가져갔어요" in texts and "<script>alert(1)</script>" in texts
    assert detail["canned"] and detail["departments"]
    html = client.get(f"/console/handoffs/{hid}")
    assert html.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html.text and "<script>alert(1)" not in html.text
    assert "script-src 'self'" in html.headers["content-security-policy"]

    r = api_post(client, f"/console/api/handoffs/{hid}/claim", token)
    assert r.status_code == 200 and r.json()["status"] == "claimed"
    r = api_post(client, f"/console/api/handoffs/{hid}/reply", token, {"text": "오늘 중으로 수거하겠습니다."})
    assert r.status_code == 200
    with app.state.sessions() as s:
        conv = by_key(s, f"rest:{sender}")
        out = s.scalars(select(Interaction).where(Interaction.conversation_id == conv.id,
                                                  Interaction.direction == "out",
                                                  Interaction.text == "오늘 중으로 수거하겠습니다.")).one()
        assert out.handled_by.startswith("agent:")

    r = api_post(client, f"/console/api/handoffs/{hid}/resolve", token, {"resolution_code": "answered"})
    sent = r.json()["sent"]
    assert r.status_code == 200 and "1" in sent[-1] and "5" in sent[-1]
    assert "끝났어요" in sent[0] or "has ended" in sent[0]  # the resident is told the person left
    with app.state.sessions() as s:
        row = s.get_one(Handoff, hid)
        assert row.status == "closed" and row.resolution_code == "answered"
    assert api_post(client, f"/console/api/handoffs/{hid}/reply", token, {"text": "x"}).status_code == 409
    ids = [it["id"] for it in client.get("/console/api/queue").json()["items"]]
    assert hid not in ids

    rest(client, sender, "5")
    with app.state.sessions() as s:
        fb = s.scalars(select(Feedback).where(Feedback.handoff_id == hid)).one()
        assert fb.rating == 5


def test_webchat_resident_gets_the_agent_reply_and_the_rating_question(client: TestClient, app: Any) -> None:
    key = new_key()
    session = session_of(key)

    def until(ws: Any, kind: str) -> dict[str, Any]:
        for _ in range(20):
            frame = ws.receive_json()
            if frame["type"] == kind:
                return frame
        raise AssertionError(f"no {kind} frame")

    with client.websocket_connect("/webchat/ws", subprotocols=protocols_for(key)) as resident:
        resident.send_text(json.dumps({"type": "message", "text": "쓰레기 안 가져갔어요", "id": "m1"}))
        until(resident, "bot")
        resident.send_text(json.dumps({"type": "message", "text": "상담원 연결해 주세요", "id": "m2"}))
        until(resident, "bot")
        hid = handoff_of(app, f"webchat:{session}")
        token = login(client, "waste1")
        r = api_post(client, f"/console/api/handoffs/{hid}/reply", token, {"text": "상담원 김청소입니다."})
        assert r.status_code == 200 and r.json()["delivered"] is True
        joined = until(resident, "bot")  # told by name (never the login id) that a person answers
        assert "김청소" in joined["text"] and "연결되었어요" in joined["text"] and "waste1" not in joined["text"]
        frame = until(resident, "agent")
        assert frame["text"] == "상담원 김청소입니다." and frame["name"] == "김청소"
        r = api_post(client, f"/console/api/handoffs/{hid}/resolve", token, {"resolution_code": "answered"})
        assert r.status_code == 200
        assert "끝났어요" in until(resident, "bot")["text"]  # told the person has left
        rating = until(resident, "bot")
        assert "1" in rating["text"] and "5" in rating["text"]
        resident.send_text(json.dumps({"type": "message", "text": "4", "id": "m3"}))
        until(resident, "bot")
    with app.state.sessions() as s:
        assert s.scalars(select(Feedback).where(Feedback.handoff_id == hid)).one().rating == 4
    history = client.get("/webchat/history", headers={"X-Webchat-Key": key}).json()["messages"]
    assert any(m["author"] == "agent" and m["text"] == "상담원 김청소입니다." for m in history)


def test_note_never_reaches_the_resident(client: TestClient, app: Any) -> None:
    sender, hid = waste_handoff(client, app)
    token = login(client, "waste1")
    note = "민원인 재방문 예정, 통화 필요"
    assert api_post(client, f"/console/api/handoffs/{hid}/note", token, {"text": note}).status_code == 200
    detail = client.get(f"/console/api/handoffs/{hid}").json()
    assert [n["text"] for n in detail["notes"]] == [note]
    assert all(m["text"] != note for m in detail["timeline"])
    with app.state.sessions() as s:
        assert s.scalars(select(Interaction).where(Interaction.text.contains("재방문"))).first() is None


def test_long_notes_are_kept_whole_and_the_audit_row_has_no_text(client: TestClient, app: Any) -> None:
    _sender, hid = waste_handoff(client, app)
    token = login(client, "waste1")
    path = f"/console/api/handoffs/{hid}/note"
    first = ("회신 완료, 101동 지하 누수 확인, 배관공 화요일 예약. " * 60)[:1500].strip()
    assert len(first) == 1500
    second = "주민 재연락 요청 " + "가" * 1990
    assert len(second) == MAX_NOTE == 2000
    assert api_post(client, path, token, {"text": first}).status_code == 200
    assert api_post(client, path, token, {"text": second}).status_code == 200
    assert api_post(client, path, token, {"text": "나" * (MAX_NOTE + 1)}).status_code == 422
    assert api_post(client, path, token, {"text": "   "}).status_code == 422
    detail = client.get(f"/console/api/handoffs/{hid}").json()
    assert [(n["who"], n["text"]) for n in detail["notes"]] == [("waste1", first), ("waste1", second)]
    page = client.get(f"/console/handoffs/{hid}").text
    assert first in page
    assert f'<textarea id="note-text" name="text" rows="3" maxlength="{MAX_NOTE}" required></textarea>' in page
    with app.state.sessions() as s:
        assert [n.text for n in s.scalars(select(HandoffNote).where(HandoffNote.handoff_id == hid)
                                          .order_by(HandoffNote.id))] == [first, second]
        audit_rows = s.scalars(select(AuditLog).where(AuditLog.action == "console.note",
                                                      AuditLog.target.startswith(f"handoff:{hid}"))).all()
        assert [(a.who, a.target) for a in audit_rows] == [("waste1", f"handoff:{hid}")] * 2
        assert s.scalars(select(AuditLog).where(AuditLog.target.contains("누수"))).first() is None


def test_reveal_unmasks_the_phone_and_writes_an_audit_row(client: TestClient, app: Any) -> None:
    sender, hid = waste_handoff(client, app)
    with app.state.sessions.begin() as s:
        residents.link_phone(s, "rest", sender, "010-2345-6789")
    token = login(client, "waste1")
    detail = client.get(f"/console/api/handoffs/{hid}").json()
    assert detail["resident"]["phones"] == ["+82 10-****-6789"]
    assert "2345" not in client.get(f"/console/handoffs/{hid}").text
    r = api_post(client, f"/console/api/handoffs/{hid}/reveal", token)
    assert r.status_code == 200 and r.json()["phones"] == ["+821023456789"]
    with app.state.sessions() as s:
        rows = s.scalars(select(AuditLog).where(AuditLog.action == "console.reveal_phone",
                                                AuditLog.target.contains(f"handoff:{hid}"))).all()
        assert len(rows) == 1 and rows[0].who == "waste1"


def test_transfer_moves_the_handoff_to_the_other_queue(client: TestClient, app: Any) -> None:
    _sender, hid = waste_handoff(client, app)
    token = login(client, "waste1")
    assert api_post(client, f"/console/api/handoffs/{hid}/transfer", token,
                    {"department": "nowhere", "reason": "x"}).status_code == 422
    r = api_post(client, f"/console/api/handoffs/{hid}/transfer", token,
                 {"department": "tax", "reason": "재산세 문의"})
    assert r.status_code == 200
    assert client.get(f"/console/api/handoffs/{hid}").status_code == 403
    login(client, "tax1")
    ids = [it["id"] for it in client.get("/console/api/queue").json()["items"]]
    assert hid in ids


def test_claimed_by_someone_else_is_409_for_agents(client: TestClient, app: Any) -> None:
    _sender, hid = waste_handoff(client, app)
    with app.state.sessions.begin() as s:
        s.get_one(Handoff, hid).status = "claimed"  # by nobody we know: another agent's
    token = login(client, "waste1")
    assert api_post(client, f"/console/api/handoffs/{hid}/claim", token).status_code == 409
    assert api_post(client, f"/console/api/handoffs/{hid}/reply", token, {"text": "x"}).status_code == 409


def test_handback_releases_without_rating(client: TestClient, app: Any) -> None:
    sender, hid = waste_handoff(client, app)
    token = login(client, "waste1")
    r = api_post(client, f"/console/api/handoffs/{hid}/handback", token)
    assert r.status_code == 200 and len(r.json()["sent"]) == 1 and "끝났어요" in r.json()["sent"][0]  # no rating
    answer = rest(client, sender, "쓰레기 배출 요일이 언제예요?")
    assert answer and "저녁" in answer[0]["text"]  # the bot answers again


def test_suggested_answers_come_from_the_faq(client: TestClient, app: Any) -> None:
    sender = f"faq-{uuid.uuid4().hex[:8]}"
    rest(client, sender, "쓰레기 안 가져갔어요")
    rest(client, sender, "상담원 연결해 주세요")
    rest(client, sender, "음식물쓰레기 배출 요일이 언제예요?")
    hid = handoff_of(app, f"rest:{sender}")
    login(client, "waste1")
    suggestions = client.get(f"/console/api/handoffs/{hid}").json()["suggestions"]
    assert suggestions and suggestions[0]["label"] == "faq.waste_schedule"
    assert suggestions[0]["text"] == app.state.engine.knowledge.render("utter_faq_waste_schedule", "ko")


# --- service requests --------------------------------------------------------------------------

def test_request_status_updates_tell_the_resident(client: TestClient, app: Any) -> None:
    sender = f"req-{uuid.uuid4().hex[:8]}"
    rest(client, sender, "안녕하세요")
    rec = SqlRequestStore(app.state.sessions).open(RequestDraft(
        service_code="waste.missed_collection", department="waste", description="미수거",
        address_string="중앙로 100", channel="rest", sender_id=sender, lang="ko", expected_hours=24))
    path = f"/console/api/requests/{rec.ticket}/status"
    token = login(client, "tax1")
    assert api_post(client, path, token, {"status": "assigned"}).status_code == 403
    token = login(client, "waste1")
    assert api_post(client, path, None, {"status": "assigned"}).status_code == 403
    assert api_post(client, path, token, {"status": "bogus"}).status_code == 422
    r = api_post(client, path, token, {"status": "in_progress", "expected": "2099-01-02"})
    assert r.status_code == 200 and r.json()["sub_status"] == "in_progress"
    assert api_post(client, path, token, {"status": "assigned"}).status_code == 409  # no going back
    assert api_post(client, path, token, {"status": "resolved"}).status_code == 422  # needs a note
    r = api_post(client, path, token, {"status": "resolved", "note": "수거 완료했습니다"})
    assert r.status_code == 200 and r.json()["status"] == "closed"
    with app.state.sessions() as s:
        conv = by_key(s, f"rest:{sender}")
        outs = [i.text for i in s.scalars(select(Interaction).where(Interaction.conversation_id == conv.id,
                                                                    Interaction.direction == "out"))]
    notices = [t for t in outs if rec.ticket in t]
    assert len(notices) == 2 and "2099-01-02" in notices[0] and "수거 완료했습니다" in notices[1]
    assert app.state.engine.knowledge.render("status_resolved", "ko") in notices[1]
    assert api_post(client, "/console/api/requests/2000-999999/status", token,
                    {"status": "assigned"}).status_code == 404


def test_cli_users_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.cli import main
    from crm_store.db import make_session_factory
    from crm_store.models import Agent

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["users", "add", "kim", "--role", "agent", "--department", "waste", "--department", "tax",
                 "--password", "a-long-password"]) == 0
    assert main(["users", "add", "kim", "--password", "a-long-password"]) == 1
    with make_session_factory(url)() as s:
        agent = s.scalars(select(Agent).where(Agent.username == "kim")).one()
        assert agent.departments == ["waste", "tax"] and agent.role == "agent"
        assert agent.password_hash.startswith("$argon2")


def test_long_wait_offers_a_callback_that_keeps_the_residents_place(client: TestClient, app: Any) -> None:
    from datetime import timedelta

    from crm_store.models import CallbackTask

    sender, hid = waste_handoff(client, app)
    assert rest(client, sender, "아직인가요?") == []  # a short wait: silence, the agent reads it
    with app.state.sessions.begin() as s:
        row = s.get_one(Handoff, hid)
        row.queued_at = row.queued_at - timedelta(minutes=20)
        queued_at = row.queued_at
    offer = " ".join(m["text"] for m in rest(client, sender, "언제 연결돼요?"))
    assert "번호를 남겨" in offer and "순서" in offer
    booked = " ".join(m["text"] for m in rest(client, sender, "010-5555-1234 로 전화 주세요"))
    assert "010-5555-1234" in booked
    with app.state.sessions() as s:
        task = s.scalars(select(CallbackTask).where(CallbackTask.handoff_id == hid)).one()
        row = s.get_one(Handoff, hid)
        assert task.phone == "010-5555-1234" and task.reason == "queue_wait"
        assert row.status == "queued" and row.queued_at == queued_at  # the place in the queue is kept
    token = login(client, "waste1")
    item = next(it for it in client.get("/console/api/queue").json()["items"] if it["id"] == hid)
    assert item["callback"] is not None and item["callback"]["phone"].endswith("1234")
    assert api_post(client, f"/console/api/handoffs/{hid}/handback", token).status_code == 200


def test_assist_summarises_in_sentences_and_suggests_a_similar_conversations_answer(client: TestClient,
                                                                                   app: Any) -> None:
    # A first resident's missed collection is answered by an agent and resolved.
    sender, hid = waste_handoff(client, app)
    rest(client, sender, "음식물 쓰레기를 사흘째 안 가져가요")
    token = login(client, "waste1")
    answer = "수거 업체에 연락해 내일 오전까지 음식물 쓰레기를 수거하도록 했습니다."
    assert api_post(client, f"/console/api/handoffs/{hid}/reply", token, {"text": answer}).status_code == 200
    assert api_post(client, f"/console/api/handoffs/{hid}/resolve", token,
                    {"resolution_code": "answered"}).status_code == 200

    # A second resident says much the same: the earlier agent's answer is suggested, without scores.
    other, hid2 = waste_handoff(client, app)
    rest(client, other, "음식물 쓰레기 사흘째 안 가져갔어요")
    detail = client.get(f"/console/api/handoffs/{hid2}").json()
    assert answer in [x["text"] for x in detail["similar"]]
    assert all("score" not in x for x in detail["suggestions"])
    summary = detail["assist_summary"]
    assert summary.endswith("요.") and "메시지" in summary and "주민이 상상담원 연결 요청" not in summary
    assert "{" not in detail["handoff"]["summary"]  # no Python dict in the bot's summary
    assert api_post(client, f"/console/api/handoffs/{hid2}/handback", token).status_code == 200


def test_an_agent_at_capacity_takes_no_more(client: TestClient, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.console import routes

    _s1, first = waste_handoff(client, app)
    _s2, second = waste_handoff(client, app)
    token = login(client, "waste1")
    me = client.get("/console/api/me").json()
    assert me["capacity"] >= 1
    with app.state.sessions() as s:
        busy = len(list(s.scalars(select(Handoff).where(Handoff.status == "claimed", Handoff.agent_id == me["id"]))))
    monkeypatch.setattr(routes, "capacity", lambda _config: busy + 1)
    assert api_post(client, f"/console/api/handoffs/{first}/claim", token).status_code == 200
    r = api_post(client, f"/console/api/handoffs/{second}/claim", token)
    assert r.status_code == 409 and "capacity" in r.json()["detail"]
    assert api_post(client, f"/console/api/handoffs/{first}/handback", token).status_code == 200
    assert api_post(client, f"/console/api/handoffs/{second}/claim", token).status_code == 200
    assert api_post(client, f"/console/api/handoffs/{second}/handback", token).status_code == 200


def test_search_finds_past_conversations_of_the_agents_departments_only(client: TestClient, app: Any) -> None:
    sender, hid = waste_handoff(client, app)
    rest(client, sender, "분리수거함 뚜껑이 100% 깨졌어요")
    token = login(client, "waste1")
    hits = client.get("/console/api/search", params={"q": "뚜껑이 100%"}).json()["items"]
    assert [h["handoff_id"] for h in hits] == [hid]
    assert client.get("/console/api/search", params={"q": "x"}).status_code == 422
    login(client, "tax1")
    assert client.get("/console/api/search", params={"q": "뚜껑이 100%"}).json()["items"] == []
    token = login(client, "waste1")
    assert api_post(client, f"/console/api/handoffs/{hid}/handback", token).status_code == 200


def test_a_shared_location_shows_in_the_history_with_a_map_link(client: TestClient, app: Any) -> None:
    import anyio

    from bot.messages import Attachment, Message

    sender, hid = waste_handoff(client, app)
    msg = Message(channel="rest", sender_id=sender, text="",
                  attachments=[Attachment(kind="location", lat=37.56652, long=126.97801)])
    anyio.run(app.state.inbox.receive, msg)
    login(client, "waste1")
    last = client.get(f"/console/api/handoffs/{hid}").json()["timeline"][-1]
    assert last["author"] == "resident" and last["shared"][0]["point"] == "37.56652, 126.97801"
    assert "37.56652,126.97801" in last["shared"][0]["map_url"]
    assert "지도에서 보기" in client.get(f"/console/handoffs/{hid}").text


def test_suggestions_follow_the_residents_question(client: TestClient, app: Any) -> None:
    sender, hid = waste_handoff(client, app)
    rest(client, sender, "대형폐기물 스티커는 어디서 사요?")
    login(client, "waste1")
    detail = client.get(f"/console/api/handoffs/{hid}").json()
    titles = " ".join(x["title"] + x["text"] for x in detail["suggestions"])
    assert "대형" in titles  # the knowledge base's answer about bulky waste, for the words actually used
    token = login(client, "waste1")
    assert api_post(client, f"/console/api/handoffs/{hid}/handback", token).status_code == 200
