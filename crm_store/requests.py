"""Service requests (민원) in SQL: the engine's :class:`RequestStore` plus agent updates.

The calls the bot makes during a turn — :meth:`SqlRequestStore.get` (status by ticket),
:meth:`SqlRequestStore.recent_for`, :meth:`SqlRequestStore.find_duplicate` and
:meth:`SqlRequestStore.open` (a form's ticket) — are SQLAlchemy Core statements built once:
no ORM session, identity map or unit of work per message; on PostgreSQL they run straight
through psycopg (:mod:`crm_store.direct`).
A first ticket of the year and a request from a sender with no conversation or resident
yet (the standalone action server) take the ORM path, which creates those rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, Row, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.municipality import DEFAULT_TIMEZONE
from bot.service_requests import (
    CLOSED_SUB_STATUSES,
    SUB_STATUSES,
    TICKET_RE,
    DuplicateRule,
    RequestDraft,
    RequestRecord,
    RequestStore,
    address_key,
    format_ticket,
    pick_duplicate,
)
from crm_store import residents
from crm_store.conversations import by_key
from crm_store.direct import for_engine
from crm_store.models import Conversation, RequestSubscription, RequestUpdate, ServiceRequest, TicketCounter
from crm_store.tickets import next_ticket
from crm_store.timeutil import as_utc, utcnow

_SR, _C, _TC = ServiceRequest.__table__, Conversation.__table__, TicketCounter.__table__
_SUB = RequestSubscription.__table__
#: Metres per degree of latitude: the bounding box the duplicate lookup narrows by before measuring.
_M_PER_DEG = 111_320.0

#: Requests with their conversations' keys: what :func:`to_record` reads.
_RECORDS = (
    select(_SR.c.service_request_id, _SR.c.service_code, _SR.c.agency_responsible, _SR.c.sub_status,
           _SR.c.description, _SR.c.address_string, _SR.c.requested_datetime, _SR.c.updated_datetime,
           _SR.c.expected_datetime, _SR.c.status_notes, _C.c.key, _SR.c.lat, _SR.c.long, _SR.c.media_url,
           select(func.count()).where(_SUB.c.request_id == _SR.c.id).scalar_subquery().label("subscribers"))
    .select_from(_SR.outerjoin(_C, _C.c.id == _SR.c.conversation_id))
)
#: One request and its conversation's key (one round trip; the ORM took two).
_BY_TICKET = _RECORDS.where(_SR.c.service_request_id == bindparam("ticket"))
_NEWEST_FIRST = (_SR.c.requested_datetime.desc(), _SR.c.id.desc())
#: A resident's requests, newest first.
_OF_RESIDENT = _RECORDS.where(_SR.c.resident_id == bindparam("resident")).order_by(*_NEWEST_FIRST)
#: The latest requests of the resident behind a conversation key.
_RECENT_FOR = (
    _RECORDS
    .where(_SR.c.resident_id == select(_C.c.resident_id).where(_C.c.key == bindparam("key")).scalar_subquery())
    .order_by(*_NEWEST_FIRST)
    .limit(bindparam("limit"))
)


def _duplicates(box: bool, same_address: bool) -> Any:
    """Open, unmerged requests of one service since ``since`` near a point (``box``: the bounding
    box ``lat0``–``lat1``, ``long0``–``long1``) or at the same ``akey`` (both: either), oldest first."""
    near = []
    if box:
        near.append(and_(_SR.c.lat.between(bindparam("lat0"), bindparam("lat1")),
                         _SR.c.long.between(bindparam("long0"), bindparam("long1"))))
    if same_address:
        near.append(_SR.c.address_key == bindparam("akey"))
    return (_RECORDS.add_columns(_SR.c.address_key.label("akey"))
            .where(_SR.c.service_code == bindparam("code"), _SR.c.status == "open",
                   _SR.c.duplicate_of_id.is_(None),
                   _SR.c.requested_datetime >= bindparam("since", type_=_SR.c.requested_datetime.type), or_(*near))
            .order_by(_SR.c.requested_datetime).limit(50))


#: :meth:`SqlRequestStore.find_duplicate`'s statement by (point known, address key known).
_DUPLICATES = {(box, key): _duplicates(box, key) for box in (True, False) for key in (True, False) if box or key}
#: The statement of :func:`crm_store.tickets.next_seq` (its row lock keeps tickets gap-free).
_BUMP = (
    update(_TC).where(_TC.c.year == bindparam("y"))
    .values(last_seq=_TC.c.last_seq + 1).returning(_TC.c.last_seq)
)
#: The columns a new request's ``INSERT`` takes from the caller (the rest: defaults).
_NEW_COLUMNS = ("service_request_id", "service_code", "status", "sub_status", "agency_responsible", "description",
                "address_string", "lat", "long", "media_url", "reported_when", "requested_datetime",
                "updated_datetime", "expected_datetime", "channel", "lang", "consent", "address_key",
                "public_consent")
#: The request with its conversation and resident looked up by key inside the ``INSERT``.
_NEW_REQUEST = (
    insert(_SR)
    .values(resident_id=select(_C.c.resident_id).where(_C.c.key == bindparam("key")).scalar_subquery(),
            conversation_id=select(_C.c.id).where(_C.c.key == bindparam("key")).scalar_subquery(),
            **{c: bindparam(c, type_=_SR.c[c].type) for c in _NEW_COLUMNS})
    .returning(_SR.c.resident_id)
)


class _GiveBack(Exception):
    """Roll :meth:`SqlRequestStore.open`'s transaction back (its ticket number is given back)."""


def to_record(row: ServiceRequest | Row[Any], sender_key: str | None = None) -> RequestRecord:
    """The engine's view of a stored request (an ORM object or a Core row with the same names)."""
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
        lat=row.lat,
        long=row.long,
        media_url=row.media_url,
        subscribers=int(getattr(row, "subscribers", 0) or 0),
    )


class SqlRequestStore(RequestStore):
    """:class:`RequestStore` on ``service_requests``.

    Ticket years follow the municipality's clock (``tz``), not UTC: a request made
    at 00:30 on 1 January in Seoul belongs to the new year.  ``clock`` is for tests.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        tz: str = DEFAULT_TIMEZONE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = session_factory
        #: The Core statements run on the engine the sessions are bound to (``make_session_factory``).
        self._engine: Engine = session_factory.kw["bind"]
        # A status lookup is one SELECT: on PostgreSQL without BEGIN and ROLLBACK around it (two
        # round trips, most of its CPU: README, "Figures behind choices in the code"). SQLite keeps
        # its transaction (the write gate, db.py).
        self._reader: Engine = (self._engine.execution_options(isolation_level="AUTOCOMMIT")
                                if self._engine.dialect.name == "postgresql" else self._engine)
        #: PostgreSQL on psycopg: the statements run straight through it (crm_store/direct.py).
        self._direct = for_engine(self._engine)
        self._tz = ZoneInfo(tz)
        self._clock = clock

    def open(self, draft: RequestDraft) -> RequestRecord:
        """Store ``draft`` with the next ticket of the year, in one transaction.

        The ticket is allocated first so the transaction takes its write lock
        before reading anything (SQLite cannot upgrade a read snapshot safely).
        Core: the counter ``UPDATE … RETURNING`` and one ``INSERT`` that finds the
        conversation and resident itself. When the year has no counter row yet or the
        sender no resident, that transaction is rolled back (the ticket number given
        back) and :meth:`_open_orm` creates the missing rows.
        """
        now = as_utc(self._clock())
        year = now.astimezone(self._tz).year
        key = f"{draft.channel}:{draft.sender_id}" if draft.sender_id else None
        expected = now + timedelta(hours=draft.expected_hours)
        try:
            with self._transaction() as run:
                bumped = run(_BUMP, {"y": year})
                if not bumped:
                    raise _GiveBack
                ticket = format_ticket(year, bumped[0][0])
                resident_id = run(_NEW_REQUEST, {
                    "key": key, "service_request_id": ticket, "service_code": draft.service_code,
                    "status": "open", "sub_status": "received", "agency_responsible": draft.department,
                    "description": draft.description, "address_string": draft.address_string,
                    "lat": draft.lat, "long": draft.long, "media_url": draft.media_url,
                    "reported_when": draft.when, "requested_datetime": now, "updated_datetime": now,
                    "expected_datetime": expected, "channel": draft.channel, "lang": draft.lang,
                    "consent": draft.consent, "address_key": address_key(draft.address_string),
                    "public_consent": draft.publish_consent})[0][0]
                if resident_id is None and draft.sender_id:
                    raise _GiveBack
                return RequestRecord(
                    ticket=ticket, service_code=draft.service_code, department=draft.department,
                    sub_status="received", description=draft.description,
                    address_string=draft.address_string, requested_at=now, updated_at=now,
                    expected_at=expected, status_notes=None, sender_key=key,
                    lat=draft.lat, long=draft.long, media_url=draft.media_url)
        except _GiveBack:
            pass
        return self._open_orm(draft, now)

    def _open_orm(self, draft: RequestDraft, now: datetime) -> RequestRecord:
        """:meth:`open` with the ORM: creates the year's counter row and the sender's resident."""
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
                address_key=address_key(draft.address_string),
                public_consent=draft.publish_consent,
            )
            session.add(row)
            session.flush()
            return to_record(row, key)

    def get(self, ticket: str) -> RequestRecord | None:
        """The request with ``ticket``; ``None`` if unknown or malformed."""
        if not TICKET_RE.match(ticket.strip()):
            return None
        found = self._records(_BY_TICKET, {"ticket": ticket.strip()})
        return found[0] if found else None

    def find_duplicate(self, service_code: str, location: str | None, lat: float | None, long: float | None,
                       now: datetime | None = None, rule: DuplicateRule | None = None) -> RequestRecord | None:
        """The open request this report repeats (:func:`bot.service_requests.pick_duplicate`).

        One indexed SELECT (service, ``open``, inside the time window) narrowed to the bounding box
        of ``rule.meters`` around the point, or to the same ``address_key``; the exact distance is
        measured in Python on the few rows left. Merged requests are never offered.
        """
        rule = rule or DuplicateRule()
        if rule.days <= 0:
            return None
        now = as_utc(now or self._clock())
        key = address_key(location)
        box = lat is not None and long is not None
        if not box and key is None:
            return None
        params: dict[str, Any] = {"code": service_code, "since": now - timedelta(days=rule.days), "akey": key}
        if box:
            assert lat is not None and long is not None
            dlat = rule.meters / _M_PER_DEG
            dlon = dlat / max(0.01, math.cos(math.radians(lat)))
            params.update(lat0=lat - dlat, lat1=lat + dlat, long0=long - dlon, long1=long + dlon)
        rows = self._rows(_DUPLICATES[box, key is not None], params)
        recs = [to_record(row, row.key) for row in rows]
        return pick_duplicate(recs, key, lat, long, rule, now, {row.service_request_id: row.akey for row in rows})

    def subscribe(self, ticket: str, sender_key: str) -> int | None:
        """Follow ``ticket`` as ``sender_key`` (once; the reporter already does); the count after it."""
        with self._sessions.begin() as session:
            row = self._row(session, ticket.strip())
            if row is None:
                return None
            conv = by_key(session, sender_key)
            own = conv is not None and conv.id == row.conversation_id
            exists = session.scalar(select(RequestSubscription.id).where(
                RequestSubscription.request_id == row.id, RequestSubscription.conversation_key == sender_key))
            if not own and exists is None:
                session.add(RequestSubscription(request_id=row.id, conversation_key=sender_key,
                                                resident_id=conv.resident_id if conv else None))
                session.add(RequestUpdate(request_id=row.id, kind="subscribed", who="resident"))
                session.flush()
            return int(session.scalar(select(func.count()).select_from(_SUB).where(_SUB.c.request_id == row.id)) or 0)

    def subscribers_of(self, ticket: str) -> list[str]:
        stmt = (select(_SUB.c.conversation_key).join(_SR, _SR.c.id == _SUB.c.request_id)
                .where(_SR.c.service_request_id == ticket).order_by(_SUB.c.id))
        with self._reader.connect() as conn:
            return list(conn.scalars(stmt))

    def merge(self, duplicate: str, into: str, who: str = "system") -> RequestRecord | None:
        """An agent merges ``duplicate`` into ``into`` (same service, both open): the duplicate closes
        (``rejected``, pointing at ``into``), its reporter and subscribers follow ``into``. None if
        either is unknown, closed, the same, or of another service."""
        with self._sessions.begin() as session:
            dup, main = self._row(session, duplicate.strip()), self._row(session, into.strip())
            if dup is None or main is None or dup.id == main.id or dup.service_code != main.service_code \
                    or dup.status != "open" or main.status != "open" or main.duplicate_of_id is not None:
                return None
            keys = [c.key for c in [session.get(Conversation, dup.conversation_id)] if c is not None] \
                if dup.conversation_id else []
            keys += list(session.scalars(select(RequestSubscription.conversation_key)
                                         .where(RequestSubscription.request_id == dup.id)))
            have = set(session.scalars(select(RequestSubscription.conversation_key)
                                       .where(RequestSubscription.request_id == main.id)))
            main_key = session.get(Conversation, main.conversation_id).key if main.conversation_id else None
            for key in dict.fromkeys(keys):
                if key not in have and key != main_key:
                    conv = by_key(session, key)
                    session.add(RequestSubscription(request_id=main.id, conversation_key=key,
                                                    resident_id=conv.resident_id if conv else None))
            now = as_utc(self._clock())
            dup.duplicate_of_id, dup.status, dup.sub_status, dup.updated_datetime = main.id, "closed", "rejected", now
            dup.status_notes = (f"{main.service_request_id} 민원과 함께 처리해요 / "
                                f"handled with {main.service_request_id}")
            session.add(RequestUpdate(request_id=dup.id, kind="merged", note=main.service_request_id, who=who,
                                      sub_status="rejected"))
            session.add(RequestUpdate(request_id=main.id, kind="merged_in", note=dup.service_request_id, who=who))
            session.flush()
            return self._record(session, main.service_request_id)

    def split(self, ticket: str, who: str = "system") -> RequestRecord | None:
        """Undo a merge: ``ticket`` is its own open request again (its followers stay on both)."""
        with self._sessions.begin() as session:
            row = self._row(session, ticket.strip())
            if row is None or row.duplicate_of_id is None:
                return None
            row.duplicate_of_id, row.status, row.sub_status = None, "open", "received"
            row.status_notes, row.updated_datetime = None, as_utc(self._clock())
            session.add(RequestUpdate(request_id=row.id, kind="split", sub_status="received", who=who))
            session.flush()
            return self._record(session, row.service_request_id)

    def duplicates_of(self, ticket: str, rule: DuplicateRule | None = None) -> list[RequestRecord]:
        """Other open requests this one might repeat or be repeated by (what the agent is shown to merge)."""
        rec = self.get(ticket)
        if rec is None or rec.status != "open":
            return []
        rule = rule or DuplicateRule()
        key = address_key(rec.address_string)
        near = [_SR.c.address_key == key] if key else []
        if rec.lat is not None and rec.long is not None:
            dlat = rule.meters / _M_PER_DEG
            dlon = dlat / max(0.01, math.cos(math.radians(rec.lat)))
            near.append(and_(_SR.c.lat.between(rec.lat - dlat, rec.lat + dlat),
                             _SR.c.long.between(rec.long - dlon, rec.long + dlon)))
        if not near:
            return []
        stmt = (_RECORDS.where(_SR.c.service_code == rec.service_code, _SR.c.status == "open",
                               _SR.c.service_request_id != rec.ticket, or_(*near))
                .order_by(_SR.c.requested_datetime).limit(20))
        with self._reader.connect() as conn:  # built per call: SQLAlchemy (direct.py is for statements built once)
            return [to_record(row, row.key) for row in conn.execute(stmt)]

    def reopen(self, ticket: str, words: str, sender_key: str) -> RequestRecord | None:
        """Open a resolved request again with the resident's words (its work orders go back to the crew)."""
        from crm_store.models import WorkOrder

        with self._sessions.begin() as session:
            row = self._row(session, ticket.strip())
            if row is None:
                return None
            row.status, row.sub_status = "open", "received"
            row.updated_datetime = as_utc(self._clock())
            session.add(RequestUpdate(request_id=row.id, kind="reopened", sub_status="received",
                                      note=words[:1000] or None, who=f"resident:{sender_key[:50]}"))
            for order in session.scalars(select(WorkOrder).where(WorkOrder.request_id == row.id,
                                                                 WorkOrder.status == "done")):
                order.status = "assigned"
                order.updated_at = row.updated_datetime
            session.flush()
            return self._record(session, row.service_request_id)

    def confirm_fixed(self, ticket: str, sender_key: str) -> bool:
        with self._sessions.begin() as session:
            row = self._row(session, ticket.strip())
            if row is None:
                return False
            session.add(RequestUpdate(request_id=row.id, kind="confirmed", who=f"resident:{sender_key[:50]}"))
            return True

    def update_status(
        self, ticket: str, sub_status: str, note: str | None = None, expected: datetime | None = None,
        who: str = "system",
    ) -> RequestRecord | None:
        """Move a request along (agent console, crews); ``None`` if the ticket is unknown.

        ``status`` (Open311 open/closed) follows from ``sub_status``. Each move is a step of the
        request's history (``request_updates``); a note given with it is public (written for residents).
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
            session.add(RequestUpdate(request_id=row.id, kind="status", sub_status=sub_status, note=note,
                                      public=note is not None, who=who))
            session.flush()
            return self._record(session, ticket)

    def list_for_resident(self, resident_id: int) -> list[RequestRecord]:
        """A resident's requests, newest first (across all their channels)."""
        return self._records(_OF_RESIDENT, {"resident": resident_id})

    def recent_for(self, sender_key: str, limit: int = 3) -> list[RequestRecord]:
        """The requests of the resident behind conversation ``sender_key``, on any of their channels
        (one autocommit SELECT, like :meth:`get`: the ORM's two sessions were a visible share of the
        load test's PostgreSQL CPU on status turns; README, "Figures behind choices in the code")."""
        return self._records(_RECENT_FOR, {"key": sender_key, "limit": limit})

    def _records(self, stmt: Any, params: dict[str, Any]) -> list[RequestRecord]:
        return [to_record(row, row.key) for row in self._rows(stmt, params)]

    @contextmanager
    def _transaction(self) -> Iterator[Callable[[Any, dict[str, Any]], list[Any]]]:
        """Run statements in one transaction (committed on leaving, rolled back on an exception):
        straight through psycopg on PostgreSQL (:mod:`crm_store.direct`), else on the engine."""
        if self._direct is not None:
            direct = self._direct
            with direct.transaction() as pg:
                yield lambda stmt, params: direct.execute(pg, stmt, params)
        else:
            with self._engine.begin() as conn:
                yield lambda stmt, params: list(conn.execute(stmt, params))

    def _rows(self, stmt: Any, params: dict[str, Any]) -> list[Any]:
        """``stmt``'s rows (a statement built once, at import) in a statement of its own: straight
        through psycopg on PostgreSQL (:mod:`crm_store.direct`), else on the reader engine."""
        if self._direct is not None:
            return self._direct.rows(stmt, params)
        with self._reader.connect() as conn:
            return list(conn.execute(stmt, params))

    @staticmethod
    def _row(session: Session, ticket: str) -> ServiceRequest | None:
        stmt = select(ServiceRequest).where(ServiceRequest.service_request_id == ticket)
        return session.scalars(stmt).one_or_none()

    @staticmethod
    def _record(conn: Connection | Session, ticket: str) -> RequestRecord | None:
        row = conn.execute(_BY_TICKET, {"ticket": ticket}).first()
        return None if row is None else to_record(row, row.key)
