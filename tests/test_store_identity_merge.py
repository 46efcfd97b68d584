"""One resident across channels: phone normalisation, linking a phone merges residents."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.messages import Message, Turn
from crm_store import conversations, handoffs, interactions, message_log, residents
from crm_store.message_log import MessageLog, Stored
from crm_store.models import ChannelIdentity, Feedback, Resident
from crm_store.timeutil import utcnow


def test_phone_spellings_are_one_resident(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        a = residents.identify(s, "twilio_sms", "+82 10-1234-5678")
        b = residents.identify(s, "twilio_sms", "010-1234-5678")
        c = residents.identify(s, "twilio_sms", "+821012345678")
        voice = residents.identify(s, "twilio_voice", "01012345678")
        assert a.id == b.id == c.id == voice.id
        ids = s.scalars(select(ChannelIdentity.external_id).where(ChannelIdentity.resident_id == a.id))
        assert set(ids) == {"+821012345678"}
        assert s.scalar(select(func.count()).select_from(Resident)) == 1


def test_other_channels_are_new_residents_until_a_phone_links_them(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as s:
        tg = residents.identify(s, "telegram", "555001")
        web = residents.identify(s, "webchat", "sess-1")
        assert tg.id != web.id
        assert residents.identify(s, "telegram", "555001").id == tg.id
        # A Telegram shared contact: the number is linked right away.
        kakao = residents.identify(s, "kakao", "kk-9", phone="010-2222-3333")
        assert residents.identify(s, "twilio_sms", "+821022223333").id == kakao.id


def _chat(s: Session, channel: str, sender: str, text: str, resident: Resident) -> None:
    msg = Message(channel=channel, sender_id=sender, text=text)
    conv = conversations.get_or_create(s, msg.conversation_key, channel, resident)
    inbound = message_log.insert_inbound(s, msg, conv.id, resident.id)
    assert inbound is not None
    turn = Turn(conversation_key=msg.conversation_key, lang="ko", label="faq.office_hours", confidence=0.9)
    MessageLog.turn_in(s.connection(), Stored(resident.id, conv.id, inbound, channel), turn, utcnow())


def test_link_phone_merges_into_older_resident_and_keeps_history(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as s:
        sms = residents.identify(s, "twilio_sms", "010-7777-8888")
        sms.sms_opt_out = True
        _chat(s, "twilio_sms", "+821077778888", "쓰레기 안 가져갔어요", sms)
    with session_factory.begin() as s:
        tg = residents.identify(s, "telegram", "42")
        tg.needs_tags = ["large_text"]
        tg.contact_consent = True
        _chat(s, "telegram", "42", "민원실 몇 시까지 해요?", tg)
        conv = conversations.by_key(s, "telegram:42")
        assert conv is not None
        ho = handoffs.open_handoff(s, conv, tg, "general", 0, "asked_for_person", "wants a person")
        s.add(Feedback(conversation_id=conv.id, resident_id=tg.id, handoff_id=ho.id, rating=5))
        older_id, newer_id = sms.id, tg.id

    with session_factory.begin() as s:
        survivor = residents.link_phone(s, "telegram", "42", "+82 10 7777 8888")
        assert survivor.id == older_id
        assert survivor.sms_opt_out is True  # an opt-out is never lost
        assert survivor.contact_consent is True
        assert survivor.needs_tags == ["large_text"]
        absorbed = s.get_one(Resident, newer_id)
        assert absorbed.merged_into_id == older_id and absorbed.deleted_at is not None

    with session_factory() as s:
        history = interactions.history_for_resident(s, older_id)
        assert [i.channel for i in history if i.direction == "in"] == ["twilio_sms", "telegram"]
        assert interactions.history_for_resident(s, newer_id) == []
        assert residents.identify(s, "telegram", "42").id == older_id
        data = residents.export_resident(s, older_id)
        assert {i["channel"] for i in data["identities"]} == {"twilio_sms", "telegram", "phone"}
        assert len(data["conversations"]) == 2
        assert len(data["handoffs"]) == 1 and len(data["feedback"]) == 1


def test_linking_the_same_phone_again_changes_nothing(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        r = residents.identify(s, "webchat", "w1")
        assert residents.link_phone(s, "webchat", "w1", "01055556666").id == r.id
        assert residents.link_phone(s, "webchat", "w1", "+821055556666").id == r.id
        assert s.scalar(select(func.count()).select_from(Resident)) == 1
