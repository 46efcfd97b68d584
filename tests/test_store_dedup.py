"""Retried deliveries are recorded once; turns update the inbound row and add replies."""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.messages import Message, Reply, Routing, Turn
from crm_store import conversations, interactions, residents
from crm_store.models import Interaction


def test_duplicate_inbound_is_recorded_once(session_factory: sessionmaker[Session]) -> None:
    msg = Message(channel="twilio_sms", sender_id="+821012345678", text="안녕하세요", message_id="SM123")
    with session_factory.begin() as s:
        resident = residents.identify(s, msg.channel, msg.sender_id)
        conv = conversations.get_or_create(s, msg.conversation_key, msg.channel, resident)
        first = interactions.record_inbound(s, msg, conv, resident)
        assert first is not None
    with session_factory.begin() as s:  # the webhook is retried later
        again = interactions.record_inbound(s, msg, conv, resident)
        assert again is None
    other_channel = Message(channel="telegram", sender_id="9", text="hi", message_id="SM123")
    with session_factory.begin() as s:
        tg = residents.identify(s, "telegram", "9")
        tg_conv = conversations.get_or_create(s, other_channel.conversation_key, "telegram", tg)
        assert interactions.record_inbound(s, other_channel, tg_conv, tg) is not None
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Interaction)) == 2


def test_record_turn_fills_nlu_fields_and_stores_replies(session_factory: sessionmaker[Session]) -> None:
    msg = Message(channel="webchat", sender_id="abc", text="사람이랑 얘기하고 싶어요", message_id="m1")
    with session_factory.begin() as s:
        resident = residents.identify(s, msg.channel, msg.sender_id)
        conv = conversations.get_or_create(s, msg.conversation_key, msg.channel, resident)
        inbound = interactions.record_inbound(s, msg, conv, resident)
    turn = Turn(
        conversation_key=msg.conversation_key,
        lang="ko",
        label="handoff.human",
        confidence=0.93,
        replies=[Reply("상담원에게 연결합니다."), Reply("잠시만 기다려 주세요.")],
        routing=Routing("handoff", department="general"),
        entities=[{"entity": "department", "value": "general"}],
        latency_ms=12.5,
    )
    with session_factory.begin() as s:  # a second transaction, objects from the first
        out = interactions.record_turn(s, turn, conv, resident, inbound)
        assert [o.text for o in out] == ["상담원에게 연결합니다.", "잠시만 기다려 주세요."]
    with session_factory() as s:
        rows = interactions.transcript(s, conv.id)
        assert [(r.direction, r.handled_by) for r in rows] == [("in", "bot"), ("out", "bot"), ("out", "bot")]
        assert rows[0].label == "handoff.human" and rows[0].confidence == 0.93
        assert rows[0].entities == [{"entity": "department", "value": "general"}]
        assert rows[0].latency_ms == 12.5
        assert rows[0].created_at.tzinfo is not None
        stored = conversations.by_key(s, msg.conversation_key)
        assert stored is not None and stored.handed_off and stored.department == "general"


def test_history_for_resident_is_time_ordered_across_channels(session_factory: sessionmaker[Session]) -> None:
    now = time.time()
    with session_factory.begin() as s:
        r = residents.identify(s, "twilio_sms", "01011112222")
        residents.link_phone(s, "telegram", "t1", "01011112222")
        for channel, sender, text, at in [
            ("telegram", "t1", "second", now - 10),
            ("twilio_sms", "+821011112222", "first", now - 20),
            ("telegram", "t1", "third", now),
        ]:
            m = Message(channel=channel, sender_id=sender, text=text, received_at=at)
            conv = conversations.get_or_create(s, m.conversation_key, channel, r)
            interactions.record_inbound(s, m, conv, r)
    with session_factory() as s:
        assert [i.text for i in interactions.history_for_resident(s, r.id)] == ["first", "second", "third"]
