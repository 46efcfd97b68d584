"""Ticket numbers: per-year, gap-free, distinct under concurrent allocation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.service_requests import TICKET_RE, RequestDraft
from crm_store import conversations, residents
from crm_store.models import Conversation, ServiceRequest
from crm_store.requests import SqlRequestStore, to_record
from crm_store.tickets import next_ticket


def _draft(**kw: object) -> RequestDraft:
    base: dict[str, object] = dict(
        service_code="roads.pothole", department="roads", description="큰 구멍", address_string="중앙로 100"
    )
    base.update(kw)
    return RequestDraft(**base)  # type: ignore[arg-type]


def test_tickets_count_up_per_year_in_seoul_time(session_factory: sessionmaker[Session]) -> None:
    clock = [datetime(2026, 3, 1, 3, 0, tzinfo=UTC)]
    store = SqlRequestStore(session_factory, clock=lambda: clock[0])
    assert store.open(_draft()).ticket == "2026-000001"
    assert store.open(_draft()).ticket == "2026-000002"
    clock[0] = datetime(2026, 12, 31, 15, 30, tzinfo=UTC)  # 00:30 on 1 January in Seoul
    assert store.open(_draft()).ticket == "2027-000001"


def test_rolled_back_transaction_leaves_no_gap(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError), session_factory.begin() as s:
        next_ticket(s, 2030)
        raise RuntimeError("request failed after allocating")
    with session_factory.begin() as s:
        assert next_ticket(s, 2030) == "2030-000001"


def test_concurrent_allocation_gives_distinct_sequential_numbers(
    session_factory: sessionmaker[Session],
) -> None:
    store = SqlRequestStore(session_factory)
    with ThreadPoolExecutor(max_workers=8) as pool:
        tickets = list(
            pool.map(lambda i: store.open(_draft(sender_id=f"s{i}", channel="webchat")).ticket, range(40))
        )
    assert len(set(tickets)) == 40
    seqs = sorted(int(TICKET_RE.match(t).group(2)) for t in tickets)  # type: ignore[union-attr]
    assert seqs == list(range(1, 41))


def test_get_update_status_and_list_for_resident(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        r = residents.identify(s, "twilio_sms", "01033334444")
        conversations.get_or_create(s, "twilio_sms:+821033334444", "twilio_sms", r)
    store = SqlRequestStore(session_factory)
    rec = store.open(_draft(channel="twilio_sms", sender_id="+821033334444", expected_hours=48))
    assert rec.status == "open" and rec.sender_key == "twilio_sms:+821033334444"
    got = store.get(rec.ticket)
    assert got is not None and got.description == "큰 구멍" and got.expected_at is not None
    assert store.get("2026-999999") is None and store.get("nonsense") is None

    later = datetime.now(UTC) + timedelta(days=1)
    updated = store.update_status(rec.ticket, "in_progress", note="작업 배정", expected=later)
    assert updated is not None and updated.sub_status == "in_progress" and updated.status_notes == "작업 배정"
    assert updated.expected_at is not None and abs((updated.expected_at - later).total_seconds()) < 1
    closed = store.update_status(rec.ticket, "resolved")
    assert closed is not None and closed.status == "closed"
    assert store.update_status("2026-999999", "resolved") is None
    with pytest.raises(ValueError):
        store.update_status(rec.ticket, "done")

    second = store.open(_draft(channel="twilio_sms", sender_id="010-3333-4444"))
    assert [x.ticket for x in store.list_for_resident(r.id)] == [second.ticket, rec.ticket]


def test_core_open_and_get_match_the_orm_path(session_factory: sessionmaker[Session]) -> None:
    """``open``/``get`` are Core statements; the rows and records are what the ORM path makes."""
    now = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
    with session_factory.begin() as s:
        r = residents.identify(s, "telegram", "777")
        conversations.get_or_create(s, "telegram:777", "telegram", r)
        next_ticket(s, 2026)  # the year's counter row exists, so the Core path runs
    store = SqlRequestStore(session_factory, clock=lambda: now)
    draft = _draft(channel="telegram", sender_id="777", lat=37.5, long=127.0, when="어제", media_url="u",
                   consent=True, lang="en", expected_hours=48)
    core = store.open(draft)
    orm = store._open_orm(draft, now)
    assert (core.ticket, orm.ticket) == ("2026-000002", "2026-000003")
    assert replace(core, ticket="") == replace(orm, ticket="")
    cols = [c for c in ServiceRequest.__table__.c if c.name not in ("id", "service_request_id")]
    with session_factory() as s:
        rows = s.execute(select(*cols).order_by(ServiceRequest.id)).all()
    assert rows[0] == rows[1] and rows[0].resident_id == r.id and rows[0].conversation_id is not None
    no_sender = store.open(_draft())  # no sender: no conversation, no resident
    for rec in (core, orm, no_sender):
        with session_factory() as s:
            row = s.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == rec.ticket)).one()
            conv = s.get(Conversation, row.conversation_id) if row.conversation_id else None
            want = to_record(row, conv.key if conv else None)
        assert store.get(rec.ticket) == want and store.get(f" {rec.ticket} ") == want
    assert store.get(no_sender.ticket).sender_key is None  # type: ignore[union-attr]


def test_sender_with_conversation_but_no_resident_gets_one(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        conversations.get_or_create(s, "webchat:w1", "webchat", None)
        next_ticket(s, datetime.now(UTC).year)
    store = SqlRequestStore(session_factory)
    rec = store.open(_draft(channel="webchat", sender_id="w1"))
    assert rec.ticket.endswith("-000002")  # the Core attempt gave its number back
    with session_factory() as s:
        row = s.scalars(select(ServiceRequest)).one()
        assert row.resident_id is not None and row.conversation_id is not None


def test_status_lookup_leaves_pooled_connections_transactional(session_factory: sessionmaker[Session]) -> None:
    """The lookup runs without a transaction on PostgreSQL; the pool must not keep that mode."""
    store = SqlRequestStore(session_factory)
    rec = store.open(_draft(sender_id="s1"))
    assert store.get(rec.ticket) is not None
    with pytest.raises(RuntimeError), session_factory.begin() as s:
        next_ticket(s, 2031)
        raise RuntimeError("rolled back")
    with session_factory.begin() as s:
        assert next_ticket(s, 2031) == "2031-000001"


def test_recent_for_lists_the_residents_requests_on_every_channel(session_factory: sessionmaker[Session]) -> None:
    """"제 민원 어떻게 됐어요?" on Telegram finds what the same resident reported by SMS; nobody else's."""
    with session_factory.begin() as s:
        r = residents.identify(s, "twilio_sms", "01055556666")
        conversations.get_or_create(s, "twilio_sms:+821055556666", "twilio_sms", r)
        tg = residents.link_phone(s, "telegram", "4242", "010-5555-6666")  # the same person on Telegram
        assert tg.id == r.id
        conversations.get_or_create(s, "telegram:4242", "telegram", tg)
        other = residents.identify(s, "webchat", "other-session")
        conversations.get_or_create(s, "webchat:other-session", "webchat", other)
    store = SqlRequestStore(session_factory)
    first = store.open(_draft(channel="twilio_sms", sender_id="+821055556666"))
    store.open(_draft(channel="webchat", sender_id="other-session"))
    second = store.open(_draft(channel="twilio_sms", sender_id="+821055556666", service_code="roads.streetlight"))
    third = store.open(_draft(channel="twilio_sms", sender_id="+821055556666"))
    fourth = store.open(_draft(channel="twilio_sms", sender_id="+821055556666"))
    assert [x.ticket for x in store.recent_for("twilio_sms:+821055556666")] == [fourth.ticket, third.ticket,
                                                                                 second.ticket]
    assert [x.ticket for x in store.recent_for("twilio_sms:+821055556666", limit=10)][-1] == first.ticket
    assert [x.ticket for x in store.recent_for("telegram:4242", limit=1)] == [fourth.ticket]
    assert store.recent_for("telegram:nobody") == []
