"""Ticket numbers: per-year, gap-free, distinct under concurrent allocation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.service_requests import TICKET_RE, RequestDraft
from crm_store import conversations, residents
from crm_store.requests import SqlRequestStore
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
