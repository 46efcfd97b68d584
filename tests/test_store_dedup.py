"""The message log stores a retried delivery once; a turn updates the inbound row and adds replies.

On SQLite and PostgreSQL (the ``session_factory`` fixture runs both): on PostgreSQL the log's
statements run as one autocommit statement each through psycopg, on SQLite as separate
statements in one transaction; the rows must be the same.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.messages import Attachment, Message, Reply, Routing, Turn
from crm_store import conversations, interactions, message_log, residents
from crm_store.message_log import Duplicate, MessageLog, Stored
from crm_store.models import ChannelIdentity, Conversation, Interaction, Resident
from crm_store.timeutil import utcnow


def test_duplicate_inbound_is_recorded_once(session_factory: sessionmaker[Session]) -> None:
    log = MessageLog(session_factory)
    msg = Message(channel="twilio_sms", sender_id="010-1234-5678", text="안녕하세요", message_id="SM123")
    first = log.store_inbound(msg)
    assert isinstance(first, Stored)
    # The webhook is retried later (the number spelled another way: the same resident).
    again = Message(channel="twilio_sms", sender_id="+821012345678", text="안녕하세요", message_id="SM123")
    assert isinstance(log.store_inbound(again), Duplicate)
    other_channel = Message(channel="telegram", sender_id="9", text="hi", message_id="SM123")
    tg = log.store_inbound(other_channel)
    assert isinstance(tg, Stored) and tg.resident_id != first.resident_id
    assert isinstance(log.store_inbound(other_channel), Duplicate)
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Interaction)) == 2
        row = s.get_one(Interaction, first.inbound_id)
        # What the columns' server defaults give a message nobody has answered yet.
        assert (row.direction, row.handled_by, row.entities, row.label, row.resident_id) == \
            ("in", "bot", [], None, first.resident_id)
        resident = s.get_one(Resident, tg.resident_id)
        assert (resident.preferred_lang, resident.contact_consent, resident.sms_opt_out, resident.needs_tags) == \
            ("ko", False, False, [])
        conv = s.get_one(Conversation, tg.conversation_id)
        assert (conv.key, conv.state_version, conv.handed_off, conv.status) == ("telegram:9", 0, False, "active")
        assert s.scalar(select(ChannelIdentity.reachable).where(ChannelIdentity.external_id == "9")) is True


def test_a_known_sender_gets_the_state_back_and_a_shared_contact_merges_first(
    session_factory: sessionmaker[Session],
) -> None:
    log = MessageLog(session_factory)
    sms = log.store_inbound(Message(channel="twilio_sms", sender_id="+821055556666", text="a"))
    tg = log.store_inbound(Message(channel="telegram", sender_id="77", text="b"))
    assert isinstance(sms, Stored) and isinstance(tg, Stored) and sms.resident_id != tg.resident_id
    with session_factory.begin() as s:
        s.get_one(Conversation, tg.conversation_id).state = '{"key": "telegram:77"}'
        s.get_one(Resident, tg.resident_id).needs_tags = ["faq.passport"]
    again = log.store_inbound(Message(channel="telegram", sender_id="77", text="c"))
    assert isinstance(again, Stored) and again.conversation_id == tg.conversation_id
    assert (again.state, again.needs_tags) == ('{"key": "telegram:77"}', ["faq.passport"])
    # The Telegram user shares their number: merged into the older (SMS) resident, then stored.
    contact = Message(channel="telegram", sender_id="77", text="d",
                      attachments=[Attachment(kind="contact", phone="010-5555-6666")])
    merged = log.store_inbound(contact)
    assert isinstance(merged, Stored) and merged.resident_id == sms.resident_id
    assert merged.conversation_id == tg.conversation_id
    with session_factory() as s:
        assert [i.text for i in interactions.history_for_resident(s, sms.resident_id)] == ["a", "b", "c", "d"]
    # Later messages of the merged conversation go the short way again.
    assert isinstance(log.store_inbound(Message(channel="telegram", sender_id="77", text="e")), Stored)


def test_turn_fills_nlu_fields_and_stores_replies(session_factory: sessionmaker[Session]) -> None:
    log = MessageLog(session_factory)
    msg = Message(channel="webchat", sender_id="abc", text="사람이랑 얘기하고 싶어요", message_id="m1")
    stored = log.store_inbound(msg)
    assert isinstance(stored, Stored)
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
    with session_factory.begin() as s:  # a second transaction
        MessageLog.turn_in(s.connection(), stored, turn, utcnow())
    with session_factory() as s:
        rows = interactions.transcript(s, stored.conversation_id)
        assert [(r.direction, r.handled_by) for r in rows] == [("in", "bot"), ("out", "bot"), ("out", "bot")]
        assert [r.text for r in rows[1:]] == ["상담원에게 연결합니다.", "잠시만 기다려 주세요."]
        assert rows[0].label == "handoff.human" and rows[0].confidence == 0.93
        assert rows[0].entities == [{"entity": "department", "value": "general"}]
        assert rows[0].latency_ms == 12.5
        assert rows[0].created_at.tzinfo is not None


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
            assert message_log.insert_inbound(s, m, conv.id, r.id) is not None
    with session_factory() as s:
        assert [i.text for i in interactions.history_for_resident(s, r.id)] == ["first", "second", "third"]
