""" "Delete my data" erases personal data and keeps anonymous aggregates; export shows everything."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.messages import Message, Reply, Turn
from bot.service_requests import RequestDraft
from crm_store import conversations, handoffs, message_log, otp, residents
from crm_store.message_log import MessageLog, Stored
from crm_store.models import (
    AuditLog,
    ChannelIdentity,
    Conversation,
    Handoff,
    HandoffNote,
    Interaction,
    OtpCode,
    ServiceRequest,
)
from crm_store.requests import SqlRequestStore
from crm_store.state_store import SqlStateStore
from crm_store.timeutil import utcnow

PHONE = "+821098765432"


def _seed(factory: sessionmaker[Session]) -> int:
    msg = Message(channel="twilio_sms", sender_id=PHONE, text="우리 집 앞 가로등 고장, 제 번호 010-9876-5432")
    with factory.begin() as s:
        r = residents.identify(s, msg.channel, msg.sender_id)
        r.needs_tags = ["hearing"]
        conv = conversations.get_or_create(s, msg.conversation_key, msg.channel, r)
        inbound = message_log.insert_inbound(s, msg, conv.id, r.id)
        assert inbound is not None
        turn = Turn(
            msg.conversation_key,
            "ko",
            "request.streetlight",
            0.8,
            replies=[Reply("접수할게요.")],
            entities=[{"entity": "location", "value": "한빛로 5"}],
        )
        MessageLog.turn_in(s.connection(), Stored(r.id, conv.id, inbound, msg.channel), turn, utcnow())
        handoffs.open_handoff(s, conv, r, "roads", 0, "asked_for_person", "가로등, 한빛로 5, 010-9876-5432")
        otp.issue(s, "telegram:1", PHONE)
        resident_id = r.id
    state_store = SqlStateStore(factory)
    state = state_store.load(msg.conversation_key)
    state.slots["location"] = "한빛로 5"
    state_store.save(state)
    SqlRequestStore(factory).open(
        RequestDraft(
            service_code="roads.streetlight",
            department="roads",
            description="가로등이 깜빡여요",
            address_string="한빛로 5",
            lat=37.5,
            long=127.0,
            channel="twilio_sms",
            sender_id=PHONE,
            consent=True,
        )
    )
    return resident_id


def test_export_contains_everything_and_is_json(session_factory: sessionmaker[Session]) -> None:
    resident_id = _seed(session_factory)
    with session_factory() as s:
        data = residents.export_resident(s, resident_id)
    json.dumps(data, ensure_ascii=False)
    assert data["resident"]["needs_tags"] == ["hearing"]
    assert {i["external_id"] for i in data["identities"]} == {PHONE}
    assert [i["direction"] for i in data["interactions"]] == ["in", "out"]
    assert data["service_requests"][0]["address_string"] == "한빛로 5"
    assert len(data["handoffs"]) == 1


def test_delete_resident_erases_personal_data(session_factory: sessionmaker[Session]) -> None:
    resident_id = _seed(session_factory)
    with session_factory.begin() as s:
        residents.delete_resident(s, resident_id)

    with session_factory() as s:
        assert (
            s.scalars(select(ChannelIdentity).where(ChannelIdentity.resident_id == resident_id)).all() == []
        )
        assert s.scalars(select(OtpCode)).all() == []
        texts = s.scalars(select(Interaction.text)).all()
        assert texts and set(texts) == {"[deleted]"}
        assert all(i.entities == [] for i in s.scalars(select(Interaction)))
        # labels stay for the statistics
        assert "request.streetlight" in s.scalars(select(Interaction.label)).all()
        req = s.scalars(select(ServiceRequest)).one()
        assert req.description == "[deleted]" and req.address_string is None and req.lat is None
        assert req.service_code == "roads.streetlight" and req.agency_responsible == "roads"
        conv = s.scalars(select(Conversation)).one()
        assert PHONE not in conv.key and conv.state is None
        data = residents.export_resident(s, resident_id)
        assert data["resident"]["deleted_at"] is not None
        dump = json.dumps(data, ensure_ascii=False)
        assert "9876" not in dump and "한빛로" not in dump and "hearing" not in dump
        assert s.scalars(select(AuditLog.action)).all() == ["resident.delete"]
        # a new message from the same number starts afresh
        assert residents.identify(s, "twilio_sms", PHONE).id != resident_id
    assert SqlStateStore(session_factory).load(f"twilio_sms:{PHONE}").slots == {}


def test_delete_resident_deletes_the_notes_of_their_handoffs(session_factory: sessionmaker[Session]) -> None:
    resident_id = _seed(session_factory)
    other = Message(channel="telegram", sender_id="555", text="다른 주민")
    with session_factory.begin() as s:
        mine = s.scalars(select(Handoff).where(Handoff.resident_id == resident_id)).one()
        r2 = residents.identify(s, other.channel, other.sender_id)
        conv2 = conversations.get_or_create(s, other.conversation_key, other.channel, r2)
        theirs = handoffs.open_handoff(s, conv2, r2, "waste", 0, "asked_for_person", "수거 문의")
        s.add_all([HandoffNote(handoff_id=mine.id, who="roads1", text="주민 010-9876-5432, 한빛로 5 현장 확인"),
                   HandoffNote(handoff_id=mine.id, who="roads1", text="화요일 보수 예정"),
                   HandoffNote(handoff_id=theirs.id, who="waste1", text="다른 주민의 메모")])
        # a note written before migration 0003 kept its text in the audit row
        s.add_all([AuditLog(who="roads1", action="console.note", target=f"handoff:{mine.id}|한빛로 5 현장"),
                   AuditLog(who="roads1", action="console.note", target=f"handoff:{mine.id}"),
                   AuditLog(who="waste1", action="console.note", target=f"handoff:{theirs.id}|다른 주민")])
        mine_id, theirs_id = mine.id, theirs.id
    with session_factory.begin() as s:
        residents.delete_resident(s, resident_id)

    with session_factory() as s:
        notes = s.scalars(select(HandoffNote)).all()
        assert [(n.handoff_id, n.text) for n in notes] == [(theirs_id, "다른 주민의 메모")]
        assert s.get(Handoff, mine_id) is not None  # the hand-off itself stays (blanked) for the statistics
        targets = s.scalars(select(AuditLog.target).where(AuditLog.action == "console.note")
                            .order_by(AuditLog.id)).all()
        assert targets == [f"handoff:{mine_id}", f"handoff:{mine_id}", f"handoff:{theirs_id}|다른 주민"]
