"""Two residents, one problem, one ticket: the duplicate offer in the dialogue (engine and REST)."""

from __future__ import annotations

import re

import httpx
import pytest

from bot.app import create_app
from bot.engine import Engine
from bot.messages import Attachment, Message
from bot.service_requests import InMemoryRequestStore
from tests.channel_servers import ServerThread
from tests.test_rest_app import WEBHOOK, _rows, _settings

TICKET = re.compile(r"\d{4}-\d{6}")


@pytest.fixture(scope="module")
def shared_nlu():
    return Engine().nlu


def _say(engine: Engine, sender: str, text: str, **kw) -> tuple[str, list[str]]:
    turn = engine.handle(Message("rest", sender, text, **kw))
    return " ".join(r.text for r in turn.replies), [e.type for e in turn.events]


def _file(engine: Engine, sender: str, first: str, **kw) -> str:
    """Report and answer every question with a yes until a ticket is given."""
    text, _ = _say(engine, sender, first, **kw)
    for answer in ("도로가 움푹 파였어요", "네", "네", "네"):
        if "접수번호" in text:
            break
        text, _ = _say(engine, sender, answer)
    m = TICKET.search(text)
    assert m, text
    return m.group(0)


def test_a_shared_location_is_read_back_as_an_address(shared_nlu) -> None:
    engine = Engine(nlu=shared_nlu, requests=InMemoryRequestStore())
    _say(engine, "a", "도로에 포트홀이 있어요")
    text, _ = _say(engine, "a", "", attachments=[Attachment("location", lat=37.5665, long=126.9781)])
    assert "한빛로 118 (한빛동) 부근" in text and "37.56" not in text


def test_second_report_nearby_is_offered_the_first_ticket_and_yes_subscribes(shared_nlu) -> None:
    store = InMemoryRequestStore()
    engine = Engine(nlu=shared_nlu, requests=store)
    other = _file(engine, "a", "새솔로 3 앞에 포트홀이 생겼어요")  # elsewhere: not offered
    ticket = _file(engine, "a2", "중앙로 12 앞에 포트홀이 생겼어요")
    assert ticket != other
    text, _ = _say(engine, "b", "12 Jungang-ro 도로에 포트홀 있어요")
    assert f"이미 접수된 신고가 있어요 ({ticket}" in text
    text, events = _say(engine, "b", "네")
    assert ticket in text and "request_subscribed" in events
    assert store.subscribers_of(ticket) == ["rest:b"]
    assert engine.states.load("rest:b").active_form is None  # the form ended: no second ticket


def test_no_to_the_offer_files_a_new_report(shared_nlu) -> None:
    engine = Engine(nlu=shared_nlu, requests=InMemoryRequestStore())
    ticket = _file(engine, "a", "중앙로 12 앞에 포트홀이 생겼어요")
    text, _ = _say(engine, "b", "pothole at 12 Jungang-ro")
    assert ticket in text
    text, events = _say(engine, "b", "no")
    assert "duplicate_declined" in events and "new report" in text
    assert _file(engine, "b", "big hole, dangerous") != ticket


def test_rest_second_report_at_the_same_address_quotes_the_open_ticket(db_url, tmp_path) -> None:
    server = ServerThread(create_app(_settings(db_url, tmp_path))).start()

    def say(sender: str, text: str) -> str:
        r = httpx.post(server.url + WEBHOOK, json={"sender": sender, "message": text}, timeout=60)
        assert r.status_code == 200
        return " ".join(m.get("text", "") for m in r.json())

    try:
        text = say("alice", "새솔로 40 앞 가로등이 꺼져 있어요")
        for answer in ("네", "네"):
            if TICKET.search(text):
                break
            text = say("alice", answer)
        ticket = TICKET.search(text).group(0)  # type: ignore[union-attr]
        text = say("bob", "새솔로 40 가로등 고장 신고할게요")
        assert ticket in text and "이미 접수된" in text
        text = say("bob", "예")
        assert ticket in text
    finally:
        server.stop()
    rows = _rows(db_url, "SELECT s.conversation_key FROM request_subscriptions s JOIN service_requests r "
                         "ON r.id = s.request_id WHERE r.service_request_id = :t", t=ticket)
    assert [r.conversation_key for r in rows] == ["rest:bob"]
    assert _rows(db_url, "SELECT count(*) FROM service_requests")[0][0] == 1


def _asked_if_fixed(engine: Engine, sender: str, ticket: str) -> None:
    """What bot/field.py does when a crew marks ``ticket`` done: the resident's chat waits for the answer."""
    from bot.dialogue import followup

    state = engine.states.load(f"rest:{sender}")
    followup.prepare(state, ticket, "roads.pothole", ["location", "description", "consent"])
    engine.states.save(state)


def test_a_bare_no_to_is_it_fixed_asks_what_is_wrong_then_reopens(shared_nlu) -> None:
    store = InMemoryRequestStore()
    engine = Engine(nlu=shared_nlu, requests=store)
    ticket = _file(engine, "a", "중앙로 30 앞에 포트홀이 생겼어요")
    store.get(ticket).sub_status = "resolved"  # type: ignore[union-attr]
    _asked_if_fixed(engine, "a", ticket)
    text, _ = _say(engine, "a", "아니요")
    assert ticket in text and "다시 열어" in text
    text, events = _say(engine, "a", "아직도 구멍이 그대로예요")
    assert "request_reopened" in events and "다시 열고" in text
    assert store.get(ticket).sub_status == "received"  # type: ignore[union-attr]
    assert engine.states.load("rest:a").active_form is None


def test_yes_to_is_it_fixed_closes_the_loop_and_a_question_is_asked_again(shared_nlu) -> None:
    store = InMemoryRequestStore()
    engine = Engine(nlu=shared_nlu, requests=store)
    ticket = _file(engine, "a", "중앙로 40 앞에 포트홀이 생겼어요")
    store.get(ticket).sub_status = "resolved"  # type: ignore[union-attr]
    _asked_if_fixed(engine, "a", ticket)
    text, _ = _say(engine, "a", "음")
    assert ticket in text  # not an answer: asked once more
    text, events = _say(engine, "a", "네 고쳐졌어요")
    assert "request_confirmed_fixed" in events and ticket in text
    assert store.get(ticket).sub_status == "resolved"  # type: ignore[union-attr]
