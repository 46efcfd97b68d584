"""In-process actions run through ``Engine.call_action``, not rasa_sdk's ``ActionExecutor.run``.

The executor is what a real action server runs (``tests/test_action_server.py``); the engine
skips its per-call overhead. These tests pin that both give the same events and responses for
every action, and the same whole turns over multi-turn conversations.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rasa_sdk.interfaces import ActionNotFoundException

from bot.dialogue.state import DialogueState
from bot.engine import Engine, _drive
from bot.messages import Message
from bot.service_requests import InMemoryRequestStore, RequestDraft, RequestRecord, format_ticket

OPEN = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)     # Thursday 11:00 KST
CLOSED = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)  # Thursday 23:00 KST


class FixedClockStore(InMemoryRequestStore):
    """Requests opened at a fixed time, so two stores fed alike give equal tickets and times."""

    def open(self, draft: RequestDraft) -> RequestRecord:
        with self._lock:
            seq = self._seq.get(OPEN.year, 0) + 1
            self._seq[OPEN.year] = seq
            rec = RequestRecord(ticket=format_ticket(OPEN.year, seq), service_code=draft.service_code,
                                department=draft.department, description=draft.description,
                                address_string=draft.address_string, requested_at=OPEN, updated_at=OPEN,
                                expected_at=OPEN + timedelta(hours=draft.expected_hours),
                                sender_key=f"{draft.channel}:{draft.sender_id}")
            self._by_ticket[rec.ticket] = rec
        return rec


def _store() -> FixedClockStore:
    store = FixedClockStore()
    store.add(RequestRecord(ticket="2026-000042", service_code="roads.pothole", department="roads",
                            sub_status="in_progress", requested_at=OPEN, updated_at=OPEN + timedelta(hours=3),
                            expected_at=OPEN + timedelta(days=2)))
    store.add(RequestRecord(ticket="2026-000043", service_code="no.such.service", department="general",
                            requested_at=OPEN, updated_at=OPEN, expected_at=None))
    return store


def _via_executor(engine: Engine, name: str, tracker: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """What ``Engine._run_action`` used to do: the whole ``ActionExecutor.run`` round."""
    result = _drive(engine.executor.run({"next_action": name, "sender_id": tracker["sender_id"],
                                         "tracker": tracker, "domain": {}, "version": "3.6.0"}))
    return result.events, result.responses


def _tracker(slots: dict[str, Any], intent: str = "", sender: str = "rest:alice") -> dict[str, Any]:
    return {"sender_id": sender, "slots": slots,
            "latest_message": {"text": "x", "intent": {"name": intent, "confidence": 0.9}, "entities": [],
                               "intent_ranking": []},
            "events": [], "paused": False, "followup_action": None, "active_loop": {}, "latest_action_name": None}


FORM = {"service_code": "roads.pothole", "location": "한빛동 중앙로 12", "description": "큰 구멍", "consent": True,
        "lat": 37.5, "long": 127.0, "when": "어제", "media_url": "https://example.org/p.jpg"}
CASES = [
    ("action_answer_faq", {"lang": "ko"}, "faq.passport"),
    ("action_answer_faq", {"lang": "en"}, "faq.waste_schedule"),
    ("action_answer_faq", {}, ""),
    ("action_handoff", {"lang": "ko", "handoff_department": "roads", "office_open": True}, "conv.human"),
    ("action_handoff", {"lang": "en", "handoff_department": "tax", "office_open": False}, "conv.human"),
    ("action_handoff", {"lang": "ko"}, "conv.human"),
    ("action_open_service_request", {"lang": "ko", **FORM}, "roads.pothole"),
    ("action_open_service_request", {"lang": "en", "service_code": "roads.streetlight", "consent": False}, ""),
    ("action_check_status", {"lang": "ko", "ticket": "2026-000042"}, "conv.request_status"),
    ("action_check_status", {"lang": "en", "ticket": "2026-000043"}, "conv.request_status"),
    ("action_check_status", {"lang": "ko", "ticket": "2026-999999"}, "conv.request_status"),
    ("action_check_status", {"lang": "en"}, "conv.request_status"),
]


@pytest.mark.parametrize(("name", "slots", "intent"), CASES)
def test_direct_call_gives_what_the_executor_gives(name: str, slots: dict[str, Any], intent: str) -> None:
    direct_engine = Engine(nlu=lambda t, h: None, requests=_store())  # type: ignore[arg-type,return-value]
    executor_engine = Engine(nlu=lambda t, h: None, requests=_store())  # type: ignore[arg-type,return-value]
    from actions import backend

    backend.configure(executor_engine.knowledge, executor_engine.requests)
    want = _via_executor(executor_engine, name, _tracker(copy.deepcopy(slots), intent))
    backend.configure(direct_engine.knowledge, direct_engine.requests)
    got = direct_engine.call_action(name, _tracker(copy.deepcopy(slots), intent))
    assert got == want
    assert want[1], "every action says something"


def test_unknown_action_raises_like_the_executor() -> None:
    engine = Engine(nlu=lambda t, h: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ActionNotFoundException):
        _via_executor(engine, "action_nope", _tracker({}))
    with pytest.raises(ActionNotFoundException):
        engine.call_action("action_nope", _tracker({}))


@pytest.fixture(scope="module")
def shared_nlu():
    return Engine().nlu  # cached in var/model by data hash


CONVERSATIONS = [
    ["쓰레기 언제 버려요?", "여권 발급 얼마나 걸려요?", "도로에 구멍이 났어요", "한빛구 중앙로 12 앞", "네", "예",
     "민원 처리 상태 조회", "2026-000001", "상담원 연결해 주세요"],
    ["When is garbage collected?", "There is a pothole on the road", "12 Jungang-ro, Hanbit-gu", "yes", "yes",
     "What is the status of my request?", "2026-000001", "2026-000042", "I want to talk to a person"],
    ["불법 주차 신고할게요", "한빛로 45 편의점 앞", "오늘 아침부터요", "네", "예", "내 민원 2026-000777 어떻게 됐어요?",
     "상담원 연결해 주세요"],
    ["불이 났어요 살려주세요"],
]


@pytest.mark.parametrize("now", [OPEN, CLOSED], ids=["open", "after_hours"])
@pytest.mark.parametrize("script", CONVERSATIONS, ids=["ko", "en", "ko_status", "emergency"])
def test_whole_turns_equal_with_the_executor(shared_nlu, script: list[str], now: datetime) -> None:
    direct = Engine(nlu=shared_nlu, requests=_store(), clock=lambda: now)
    old = Engine(nlu=shared_nlu, requests=_store(), clock=lambda: now)
    old.call_action = lambda name, tracker: _via_executor(old, name, tracker)  # type: ignore[method-assign]
    states = {e: DialogueState(key="rest:bob") for e in (direct, old)}
    for text in script:
        turns = [e.decide(Message("rest", "bob", text), states[e]) for e in (direct, old)]
        for t in turns:
            t.latency_ms = 0.0
        assert turns[0] == turns[1], text
        assert states[direct].to_json() == states[old].to_json(), text
