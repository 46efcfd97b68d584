"""The web app end to end through the REST channel, on a real uvicorn server, on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import create_engine, text

from bot.app import create_app
from bot.settings import ROOT, Settings
from tests.channel_servers import ServerThread

WEBHOOK = "/webhooks/rest/webhook"


def _settings(db_url: str, tmp_path) -> Settings:
    return Settings(database_url=db_url, redis_url=None, pcrm_model_dir=ROOT / "var" / "model",
                    pcrm_config=_always_open_config(tmp_path))


def _always_open_config(tmp_path):
    import yaml

    cfg = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    cfg["business_hours"]["always_open"] = True
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def _rows(db_url: str, sql: str, **params):
    eng = create_engine(db_url)
    try:
        with eng.connect() as c:
            return list(c.execute(text(sql), params))
    finally:
        eng.dispose()


def test_rest_answer_is_stored_with_its_reply(db_url, tmp_path):
    server = ServerThread(create_app(_settings(db_url, tmp_path))).start()
    try:
        r = httpx.post(server.url + WEBHOOK, json={"sender": "alice", "message": "민원실 몇 시까지 해요?"}, timeout=30)
        assert r.status_code == 200
        body = r.json()
        assert body[0]["recipient_id"] == "alice" and "18:00" in body[0]["text"]
    finally:
        server.stop()
    rows = _rows(db_url, "SELECT direction, text, label FROM interactions ORDER BY id")
    assert rows[0].direction == "in" and rows[0].text == "민원실 몇 시까지 해요?"
    assert rows[0].label == "faq.office_hours"
    assert rows[1].direction == "out" and "18:00" in rows[1].text


def test_restart_in_the_middle_of_a_form_resumes_it(db_url, tmp_path):
    settings = _settings(db_url, tmp_path)
    first = ServerThread(create_app(settings)).start()
    try:
        r = httpx.post(first.url + WEBHOOK, json={"sender": "bob", "message": "도로에 구멍이 크게 났어요"}, timeout=30)
        assert "어디" in r.json()[0]["text"] or "위치" in r.json()[0]["text"]
    finally:
        first.stop()
    second = ServerThread(create_app(settings)).start()  # a new process would see the same: state is in the store
    try:
        r = httpx.post(second.url + WEBHOOK, json={"sender": "bob", "message": "한빛동 중앙로 12"}, timeout=30)
        assert "연락" in r.json()[0]["text"]  # the consent question: the form went on
        r = httpx.post(second.url + WEBHOOK, json={"sender": "bob", "message": "예"}, timeout=30)
        r = httpx.post(second.url + WEBHOOK, json={"sender": "bob", "message": "예"}, timeout=30)
        ticket = re.search(r"\d{4}-\d{6}", r.json()[0]["text"])
        assert ticket
    finally:
        second.stop()
    rows = _rows(db_url, "SELECT service_code, agency_responsible, address_string FROM service_requests "
                         "WHERE service_request_id = :t", t=ticket.group(0))
    assert rows == [("roads.pothole", "roads", "한빛동 중앙로 12")]


def test_store_failure_still_answers_and_spools(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    app = create_app(_settings(db_url, tmp_path))
    server = ServerThread(app).start()
    try:
        _rows(db_url, "SELECT 1")
        eng = create_engine(db_url)
        with eng.begin() as c:
            c.execute(text("ALTER TABLE interactions RENAME TO interactions_away"))
        r = httpx.post(server.url + WEBHOOK, json={"sender": "carol", "message": "여권 발급 기간"}, timeout=30)
        assert r.status_code == 200 and r.json()[0]["text"]
        spool = app.state.inbox.spool_path
        assert "여권 발급 기간" in spool.read_text(encoding="utf-8")
        with eng.begin() as c:
            c.execute(text("ALTER TABLE interactions_away RENAME TO interactions"))
        eng.dispose()
        assert app.state.inbox.flush_spool() == 1
        rows = _rows(db_url, "SELECT text FROM interactions WHERE direction = 'in'")
        assert [r.text for r in rows] == ["여권 발급 기간"]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rest")
    s = ServerThread(create_app(_settings(f"sqlite:///{tmp / 'db.sqlite'}", tmp))).start()
    yield s
    s.stop()


@pytest.mark.parametrize("payload, status", [
    ({"message": "hi"}, 422),                      # no sender
    ({"sender": "x"}, 422),                        # no message
    ({"sender": "", "message": "hi"}, 422),        # empty sender
    ({"sender": "x", "message": 5}, 422),          # wrong type
    ([1, 2], 422),
])
def test_malformed_rest_payload_gets_4xx_with_reason(server, payload, status):
    r = httpx.post(server.url + WEBHOOK, json=payload, timeout=10)
    assert r.status_code == status
    assert r.json()["detail"] == "malformed request" and r.json()["errors"]


def test_oversized_body_gets_413(server):
    r = httpx.post(server.url + WEBHOOK, content=b'{"sender":"x","message":"' + b"a" * 400_000 + b'"}',
                   headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413


def test_hostile_text_is_stored_verbatim_and_answered(server):
    hostile = "<script>alert(1)</script> '; DROP TABLE residents; -- {{7*7}}"
    r = httpx.post(server.url + WEBHOOK, json={"sender": "mallory", "message": hostile}, timeout=10)
    assert r.status_code == 200 and r.json()[0]["text"]
    url = server.app.state.settings.database_url
    assert _rows(url, "SELECT text FROM interactions WHERE text = :t", t=hostile)


def test_buttons_follow_rasa_rest_shape(server):
    r = httpx.post(server.url + WEBHOOK, json={"sender": "dave", "message": "가로등이 나갔어요 한빛동 중앙로 3"},
                   timeout=10)
    last = r.json()[-1]
    assert {"title", "payload"} <= set(last["buttons"][0])


def test_healthz_and_openapi(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok", "database": "ok"}
    spec = httpx.get(server.url + "/openapi.json").json()
    assert WEBHOOK in spec["paths"]


def test_responses_do_not_name_the_worker_process_unless_asked(tmp_path):
    """``X-PCRM-Worker: <pid>`` is for diagnostics (PCRM_WORKER_HEADER=1), not for the public."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    plain = ServerThread(create_app(_settings(url, tmp_path))).start()
    try:
        assert "x-pcrm-worker" not in httpx.get(plain.url + "/webhooks/rest/", timeout=10).headers
    finally:
        plain.stop()
    settings = _settings(url, tmp_path)
    settings.pcrm_worker_header = True
    tagged = ServerThread(create_app(settings)).start()
    try:
        assert httpx.get(tagged.url + "/webhooks/rest/", timeout=10).headers["x-pcrm-worker"].isdigit()
    finally:
        tagged.stop()


def _never_open_config(tmp_path):
    import yaml

    cfg = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    cfg["business_hours"]["weekdays"] = []  # nobody at work: every hand-off is after hours
    path = tmp_path / "closed.yml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def test_after_hours_call_back_number_and_message_reach_the_departments_queued_item(db_url, tmp_path):
    settings = Settings(database_url=db_url, redis_url=None, pcrm_model_dir=ROOT / "var" / "model",
                        pcrm_config=_never_open_config(tmp_path))
    server = ServerThread(create_app(settings)).start()

    def say(message: str) -> str:
        r = httpx.post(server.url + WEBHOOK, json={"sender": "night", "message": message}, timeout=30)
        assert r.status_code == 200
        return " ".join(m["text"] for m in r.json())

    try:
        assert "콜백" in say("수도요금이 이상하게 많이 나왔어요 담당자랑 통화하고 싶어요")
        assert "번호" in say("네")
        assert "010-2345-6789" in say("010-2345-6789로 연락 주세요")  # read back
    finally:
        server.stop()
    rows = _rows(db_url, "SELECT department, reason, summary, status FROM handoffs")
    assert len(rows) == 1
    h = rows[0]
    assert h.department == "water" and h.status == "queued" and h.reason.startswith("callback:")
    assert "수도요금" in h.summary
    # The number is a call-back task of its own (masked on screens, revealed with an audit row).
    tasks = _rows(db_url, "SELECT phone, status FROM callback_tasks")
    assert [(t.phone, t.status) for t in tasks] == [("010-2345-6789", "open")]


def test_a_resident_who_no_longer_wants_a_person_gets_the_bot_back_and_the_handoff_closes(db_url, tmp_path):
    server = ServerThread(create_app(_settings(db_url, tmp_path))).start()

    def say(message: str) -> str:
        r = httpx.post(server.url + WEBHOOK, json={"sender": "waiting", "message": message}, timeout=30)
        assert r.status_code == 200
        return " ".join(m["text"] for m in r.json())

    try:
        assert "상담원" in say("상담원 연결해 주세요")
        reply = say("아 됐어요 그냥 여기서 할게요, 가로등 고장 신고요")
        assert "취소" in reply and "위치" in reply  # the bot is back and takes the report
    finally:
        server.stop()
    rows = _rows(db_url, "SELECT status, resolution_code FROM handoffs")
    assert [(r.status, r.resolution_code) for r in rows] == [("closed", "withdrawn")]
    conv = _rows(db_url, "SELECT handed_off FROM conversations")
    assert not conv[0].handed_off
