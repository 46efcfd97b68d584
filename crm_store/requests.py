"""Service requests (민원) in SQL: the engine's :class:`RequestStore` plus agent updates."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.service_requests import (
    CLOSED_SUB_STATUSES,
    SUB_STATUSES,
    TICKET_RE,
    RequestDraft,
    RequestRecord,
    RequestStore,
)
from crm_store import residents
from crm_store.conversations import by_key
from crm_store.models import Conversation, ServiceRequest
from crm_store.tickets import next_ticket
from crm_store.timeutil import as_utc, utcnow


def to_record(row: ServiceRequest, sender_key: str | None = None) -> RequestRecord:
    """The engine's view of a stored request."""
    return RequestRecord(
        ticket=row.service_request_id,
        service_code=row.service_code,
        department=row.agency_responsible,
        sub_status=row.sub_status,
        description=row.description,
        address_string=row.address_string,
        requested_at=row.requested_datetime,
        updated_at=row.updated_datetime,
        expected_at=row.expected_datetime,
        status_notes=row.status_notes,
        sender_key=sender_key,
    )


class SqlRequestStore(RequestStore):
    """:class:`RequestStore` on ``service_requests``.

    Ticket years follow the municipality's clock (``tz``), not UTC: a request made
    at 00:30 on 1 January in Seoul belongs to the new year.  ``clock`` is for tests.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        tz: str = "Asia/Seoul",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = session_factory
        self._tz = ZoneInfo(tz)
        self._clock = clock

    def open(self, draft: RequestDraft) -> RequestRecord:
        """Store ``draft`` with the next ticket of the year, in one transaction.

        The ticket is allocated first so the transaction takes its write lock
        before reading anything (SQLite cannot upgrade a read snapshot safely).
        """
        now = as_utc(self._clock())
        with self._sessions.begin() as session:
            ticket = next_ticket(session, now.astimezone(self._tz).year)
            key = f"{draft.channel}:{draft.sender_id}" if draft.sender_id else None
            conv = by_key(session, key) if key else None
            resident_id = conv.resident_id if conv else None
            if resident_id is None and draft.sender_id:
                resident_id = residents.identify(session, draft.channel, draft.sender_id).id
            row = ServiceRequest(
                service_request_id=ticket,
                service_code=draft.service_code,
                status="open",
                sub_status="received",
                agency_responsible=draft.department,
                description=draft.description,
                address_string=draft.address_string,
                lat=draft.lat,
                long=draft.long,
                media_url=draft.media_url,
                reported_when=draft.when,
                requested_datetime=now,
                updated_datetime=now,
                expected_datetime=now + timedelta(hours=draft.expected_hours),
                resident_id=resident_id,
                conversation_id=conv.id if conv else None,
                channel=draft.channel,
                lang=draft.lang,
                consent=draft.consent,
            )
            session.add(row)
            session.flush()
            return to_record(row, key)

    def get(self, ticket: str) -> RequestRecord | None:
        """The request with ``ticket``; ``None`` if unknown or malformed."""
        if not TICKET_RE.match(ticket.strip()):
            return None
        with self._sessions() as session:
            return self._record(session, ticket.strip())

    def update_status(
        self, ticket: str, sub_status: str, note: str | None = None, expected: datetime | None = None
    ) -> RequestRecord | None:
        """Move a request along (agent console); ``None`` if the ticket is unknown.

        ``status`` (Open311 open/closed) follows from ``sub_status``.
        """
        if sub_status not in SUB_STATUSES:
            raise ValueError(f"unknown sub_status {sub_status!r}; expected one of {SUB_STATUSES}")
        with self._sessions.begin() as session:
            row = self._row(session, ticket)
            if row is None:
                return None
            row.sub_status = sub_status
            row.status = "closed" if sub_status in CLOSED_SUB_STATUSES else "open"
            row.updated_datetime = as_utc(self._clock())
            if note is not None:
                row.status_notes = note
            if expected is not None:
                row.expected_datetime = as_utc(expected)
            session.flush()
            return self._record(session, ticket)

    def list_for_resident(self, resident_id: int) -> list[RequestRecord]:
        """A resident's requests, newest first (across all their channels)."""
        with self._sessions() as session:
            stmt = (
                select(ServiceRequest, Conversation.key)
                .outerjoin(Conversation, Conversation.id == ServiceRequest.conversation_id)
                .where(ServiceRequest.resident_id == resident_id)
                .order_by(ServiceRequest.requested_datetime.desc(), ServiceRequest.id.desc())
            )
            return [to_record(row, key) for row, key in session.execute(stmt)]

    @staticmethod
    def _row(session: Session, ticket: str) -> ServiceRequest | None:
        stmt = select(ServiceRequest).where(ServiceRequest.service_request_id == ticket)
        return session.scalars(stmt).one_or_none()

    def _record(self, session: Session, ticket: str) -> RequestRecord | None:
        row = self._row(session, ticket)
        if row is None:
            return None
        conv = session.get(Conversation, row.conversation_id) if row.conversation_id else None
        return to_record(row, conv.key if conv else None)
