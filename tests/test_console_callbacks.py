"""After-hours call-backs as console work, and hand-off etiquette, over the real app (TestClient).

The office is never open in this module's config copy, so asking for a person books a call-back:
the number the resident gives becomes a ``callback_tasks`` row (not words in the summary), is
masked in the queue, revealed in full only to the agent who took the hand-off (audited), and each
call's outcome is recorded and told to the resident.  Taking the hand-off hands the conversation
to the agent: what the resident writes next reaches the agent, not the bot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from bot.console.auth import create_agent
from bot.settings import ROOT, Settings
from crm_store.conversations import by_key
from crm_store.models import AuditLog, CallbackTask, Handoff, HandoffNote, Interaction
from tests.test_console_api import PASSWORD, api_post, handoff_of, login, rest


def closed_config(tmp: Path) -> Path:
    """A copy of config.yml whose office is never open (no working day)."""
    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    config["business_hours"] = {**(config.get("business_hours") or {}), "weekdays": [], "always_open": False}
    path = tmp / "config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from bot.app import create_app

    tmp = tmp_path_factory.mktemp("console-callbacks")
    settings = Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None,
                        pcrm_config=closed_config(tmp), pcrm_model_dir=ROOT / "var" / "model",
                        pcrm_secret_key="test-secret-key")
    app = create_app(settings)
    create_agent(app.state.sessions, "waste1", PASSWORD, "agent", ["waste"], "김청소")
    create_agent(app.state.sessions, "waste2", PASSWORD, "agent", ["waste"], "최수거")
    create_agent(app.state.sessions, "roads1", PASSWORD, "agent", ["roads"], "박도로")
    return app


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def book_callback(client: TestClient, app: Any) -> tuple[str, int]:
    sender = f"cb-{uuid.uuid4().hex[:10]}"
    rest(client, sender, "쓰레기 안 가져갔어요")
    offer = " ".join(m.get("text", "") for m in rest(client, sender, "상담원 연결해 주세요"))
    assert "전화" in offer or "연락" in offer, offer  # after hours: a call-back is offered
    rest(client, sender, "네")
    rest(client, sender, "010-1234-6789")
    rest(client, sender, "음식물 쓰레기가 사흘째 그대로예요")
    return sender, handoff_of(app, f"rest:{sender}")


def test_after_hours_number_becomes_a_callback_task_the_agent_reveals_and_calls(client: TestClient,
                                                                                 app: Any) -> None:
    sender, hid = book_callback(client, app)
    with app.state.sessions() as s:
        task = s.scalars(select(CallbackTask).where(CallbackTask.handoff_id == hid)).one()
        assert task.phone == "010-1234-6789" and "사흘째" in task.message and task.status == "open"
        assert "6789" not in s.get_one(Handoff, hid).summary  # the number lives on the task only

    token = login(client, "waste1")
    item = next(it for it in client.get("/console/api/queue").json()["items"] if it["id"] == hid)
    assert item["callback"]["phone"] != "010-1234-6789" and item["callback"]["phone"].endswith("6789")
    assert item["reason_name"].startswith("회신 요청") and item["callback"]["due_at"]
    detail = client.get(f"/console/api/handoffs/{hid}").json()
    assert "사흘째" in detail["callback"]["message"] and detail["callback"]["has_phone"]

    # The number is for the agent who took the call-back: not before claiming.
    assert api_post(client, f"/console/api/handoffs/{hid}/callback/reveal", token).status_code == 409
    assert api_post(client, f"/console/api/handoffs/{hid}/claim", token).status_code == 200
    r = api_post(client, f"/console/api/handoffs/{hid}/callback/reveal", token)
    assert r.status_code == 200 and r.json()["phone"] == "010-1234-6789"

    r = api_post(client, f"/console/api/handoffs/{hid}/callback/outcome", token, {"outcome": "no_answer"})
    assert r.status_code == 200 and r.json()["attempts"] == 1 and r.json()["status"] == "open"
    r = api_post(client, f"/console/api/handoffs/{hid}/callback/outcome", token, {"outcome": "reached"})
    assert r.status_code == 200 and r.json()["attempts"] == 2 and r.json()["status"] == "done"
    assert api_post(client, f"/console/api/handoffs/{hid}/callback/outcome", token,
                    {"outcome": "bogus"}).status_code == 422
    with app.state.sessions() as s:
        actions = [a.action for a in s.scalars(select(AuditLog).where(AuditLog.who == "waste1"))]
        assert "console.reveal_callback" in actions and actions.count("console.callback_attempt") == 2
        conv = by_key(s, f"rest:{sender}")
        told = [i.text for i in s.scalars(select(Interaction).where(Interaction.conversation_id == conv.id,
                                                                    Interaction.direction == "out"))]
        assert any("연결되지 않았어요" in t for t in told)  # the missed call is told on the channel


def test_after_claim_the_residents_words_reach_the_agent_not_the_bot(client: TestClient, app: Any) -> None:
    sender, hid = book_callback(client, app)
    token = login(client, "waste2")
    r = api_post(client, f"/console/api/handoffs/{hid}/reply", token, {"text": "지금 확인해 볼게요."})
    assert r.status_code == 200
    answer = rest(client, sender, "네 감사합니다 기다릴게요")
    assert answer == []  # the bot stays silent: the agent has the conversation
    detail = client.get(f"/console/api/handoffs/{hid}").json()
    assert detail["timeline"][-1]["text"] == "네 감사합니다 기다릴게요"
    told = [m["text"] for m in detail["timeline"] if m["author"] == "bot"]
    assert any("최수거" in t and "연결되었어요" in t for t in told)


def test_transfer_reason_reaches_the_next_agent_and_the_resident_is_told(client: TestClient, app: Any) -> None:
    sender, hid = book_callback(client, app)
    token = login(client, "waste1")
    assert api_post(client, f"/console/api/handoffs/{hid}/claim", token).status_code == 200
    r = api_post(client, f"/console/api/handoffs/{hid}/transfer", token,
                 {"department": "roads", "reason": "도로 파손 건이라 도로과 확인 필요"})
    assert r.status_code == 200
    token = login(client, "roads1")
    detail = client.get(f"/console/api/handoffs/{hid}").json()
    assert "도로 파손 건이라 도로과 확인 필요" in detail["transfer"]["text"]
    assert detail["handoff"]["status"] == "queued"
    told = [m["text"] for m in detail["timeline"] if m["author"] == "bot"]
    assert any("연결해 드릴게요" in t for t in told)
    with app.state.sessions() as s:
        assert s.scalars(select(HandoffNote).where(HandoffNote.handoff_id == hid)).first() is not None


def test_closed_handoff_is_read_only(client: TestClient, app: Any) -> None:
    _sender, hid = book_callback(client, app)
    token = login(client, "waste1")
    assert api_post(client, f"/console/api/handoffs/{hid}/resolve", token,
                    {"resolution_code": "callback_done"}).status_code == 200
    html = client.get(f"/console/handoffs/{hid}").text
    assert 'id="reply-form"' not in html and 'id="resolve-form"' not in html
    for path, body in ((f"/console/api/handoffs/{hid}/reply", {"text": "x"}),
                       (f"/console/api/handoffs/{hid}/callback/outcome", {"outcome": "reached"})):
        assert api_post(client, path, token, body).status_code == 409


def test_erasing_the_resident_erases_the_callback_number_and_message(client: TestClient, app: Any) -> None:
    from crm_store import residents
    from crm_store.models import DELETED_TEXT

    _sender, hid = book_callback(client, app)
    with app.state.sessions.begin() as s:
        h = s.get_one(Handoff, hid)
        residents.delete_resident(s, h.resident_id)
    with app.state.sessions() as s:
        task = s.scalars(select(CallbackTask).where(CallbackTask.handoff_id == hid)).one()
        assert task.phone == "" and task.message == DELETED_TEXT
