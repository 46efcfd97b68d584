"""Dialogue states survive a restart (a new engine) and detect concurrent saves."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.dialogue.state import DialogueState
from crm_store.conversations import by_key
from crm_store.db import make_session_factory
from crm_store.state_store import SqlStateStore, StaleStateError


def test_half_filled_form_survives_a_restart(db_url: str) -> None:
    before = make_session_factory(db_url)
    store = SqlStateStore(before)
    state = store.load("telegram:77")
    assert state == DialogueState(key="telegram:77")
    state.active_form = "roads.pothole"
    state.requested_slot = "description"
    state.slots["location"] = "중앙로 100 앞"
    state.remember_intent("request.pothole")
    store.save(state)
    before.kw["bind"].dispose()  # the server goes down

    after = make_session_factory(db_url)
    try:
        restored = SqlStateStore(after).load("telegram:77")
        assert restored.active_form == "roads.pothole"
        assert restored.requested_slot == "description"
        assert restored.slots == {"location": "중앙로 100 앞"}
        assert restored.recent_intents == ["request.pothole"]
        assert restored.version == 1
    finally:
        after.kw["bind"].dispose()


def test_delete_forgets_the_state(session_factory: sessionmaker[Session]) -> None:
    store = SqlStateStore(session_factory)
    state = store.load("webchat:s1")
    state.slots["x"] = 1
    store.save(state)
    store.delete("webchat:s1")
    assert store.load("webchat:s1").slots == {}


def test_concurrent_save_is_detected(session_factory: sessionmaker[Session]) -> None:
    lenient, strict = SqlStateStore(session_factory), SqlStateStore(session_factory, strict=True)
    a = lenient.load("kakao:k")
    lenient.save(a)
    b1, b2 = lenient.load("kakao:k"), lenient.load("kakao:k")
    b1.turns = 1
    lenient.save(b1)
    b2.turns = 2
    with pytest.raises(StaleStateError):
        strict.save(b2)
    lenient.save(b2)  # last write wins, version keeps increasing
    final = lenient.load("kakao:k")
    assert final.turns == 2 and final.version == 3


def test_hand_off_is_mirrored_on_the_conversation(session_factory: sessionmaker[Session]) -> None:
    store = SqlStateStore(session_factory)
    state = store.load("twilio_voice:+821012345678")
    state.handed_off, state.handoff_department = True, "safety"
    store.save(state)
    with session_factory() as s:
        conv = by_key(s, "twilio_voice:+821012345678")
        assert conv is not None and conv.handed_off and conv.department == "safety"
        assert conv.channel == "twilio_voice"
