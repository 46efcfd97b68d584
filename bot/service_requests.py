"""Service requests (민원) as the engine sees them, and the interface of their store.

The engine opens requests and looks up their status through :class:`RequestStore`.
The in-process implementation serves tests and `pcrm chat`; the SQL one lives in
``crm_store.requests`` and is what the web app uses.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.geo import distance_m, gazetteer
from bot.municipality import DEFAULT_EXPECTED_HOURS, Municipality

TICKET_RE = re.compile(r"^(\d{4})-(\d{6})$")

#: Internal sub-statuses, in the order agents move requests through them.
SUB_STATUSES = ("received", "assigned", "in_progress", "resolved", "rejected")
CLOSED_SUB_STATUSES = ("resolved", "rejected")


def format_ticket(year: int, seq: int) -> str:
    """``2026-000871``: the ticket number residents quote."""
    return f"{year:04d}-{seq:06d}"


@dataclass(frozen=True)
class DuplicateRule:
    """When a new report is "the same" as an open request of its service: within ``meters`` of it
    (coordinates), or at the same address (no coordinates), and made at most ``days`` after it."""

    meters: float = 50.0
    days: float = 14.0


def duplicate_rules(config: Municipality | Mapping[str, Any]) -> dict[str, DuplicateRule]:
    """Per service from ``config.yml`` (``services.<code>.duplicate: {meters, days}``), over the
    district default ``duplicates: {meters, days}``; ``"*"`` holds that default."""
    windows = Municipality.of(config).duplicate_windows
    return {code: DuplicateRule(w.meters, w.days) for code, w in windows.items()}


def address_key(location: str | None) -> str | None:
    """What addresses are compared by (``road:number`` for a district address), see :mod:`bot.geo`."""
    return gazetteer().address_key(location)


def pick_duplicate(candidates: Iterable[RequestRecord], key: str | None, lat: float | None,
                   long: float | None, rule: DuplicateRule, now: datetime,
                   key_of: dict[str, str | None] | None = None) -> RequestRecord | None:
    """The open request among ``candidates`` a report at (``key``, ``lat``, ``long``) repeats.

    Coordinates on both sides decide by distance; otherwise the address keys must be equal.
    The nearest wins, then the oldest (the one everybody else is already following). Both stores
    use this one rule; the SQL store only narrows the candidates first. A rule of 0 days (a bulky
    pickup: each household's own) never matches.
    """
    if rule.days <= 0:
        return None
    since = now - timedelta(days=rule.days)
    best: tuple[float, datetime, RequestRecord] | None = None
    for rec in candidates:
        if rec.status != "open" or rec.requested_at < since or rec.requested_at > now + timedelta(minutes=1):
            continue
        if lat is not None and long is not None and rec.lat is not None and rec.long is not None:
            d = distance_m(lat, long, rec.lat, rec.long)
            if d > rule.meters:
                continue
        else:
            rec_key = key_of.get(rec.ticket) if key_of is not None else address_key(rec.address_string)
            if key is None or rec_key != key:
                continue
            d = 0.0
        if best is None or (d, rec.requested_at) < best[:2]:
            best = (d, rec.requested_at, rec)
    return best[2] if best else None


@dataclass
class RequestDraft:
    """What the form collected; everything the store needs to open a request."""

    service_code: str
    department: str
    description: str = ""
    address_string: str | None = None
    lat: float | None = None
    long: float | None = None
    when: str | None = None
    media_url: str | None = None
    consent: bool = False
    #: The resident agreed to publish their words and the exact address in the public feed.
    publish_consent: bool = False
    channel: str = "rest"
    sender_id: str = ""
    lang: str = "ko"
    expected_hours: float = DEFAULT_EXPECTED_HOURS


@dataclass
class RequestRecord:
    """A stored request, as the status lookup reports it."""

    ticket: str
    service_code: str
    department: str
    sub_status: str = "received"
    description: str = ""
    address_string: str | None = None
    requested_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    expected_at: datetime | None = None
    status_notes: str | None = None
    sender_key: str | None = None
    lat: float | None = None
    long: float | None = None
    media_url: str | None = None
    #: Residents following this request besides its reporter (duplicates they were offered and took).
    subscribers: int = 0

    @property
    def status(self) -> str:
        """Open311 status: ``open`` or ``closed``."""
        return "closed" if self.sub_status in CLOSED_SUB_STATUSES else "open"


class RequestStore(ABC):
    """Opens requests and answers status lookups."""

    @abstractmethod
    def open(self, draft: RequestDraft) -> RequestRecord:
        """Store a new request and give it the next ticket number of the year."""

    @abstractmethod
    def get(self, ticket: str) -> RequestRecord | None:
        """The request with this ticket number, or None."""

    def recent_for(self, sender_key: str, limit: int = 3) -> list[RequestRecord]:
        """The latest requests of the resident writing as ``sender_key`` (``channel:sender``), newest
        first: what "제 민원 어떻게 됐어요?" asks about when no ticket number is given. A store
        that cannot tell whose a request is has none."""
        return []

    def find_duplicate(self, service_code: str, location: str | None, lat: float | None, long: float | None,
                       now: datetime | None = None, rule: DuplicateRule | None = None) -> RequestRecord | None:
        """The open request of ``service_code`` that a new report at this place repeats, if any
        (:func:`pick_duplicate`; ``rule`` defaults to :class:`DuplicateRule`'s). A store that
        cannot search has none."""
        return None

    def subscribe(self, ticket: str, sender_key: str) -> int | None:
        """Have the resident writing as ``sender_key`` told of ``ticket``'s updates; the number of
        subscribers after it (a repeated subscription counts once), None for an unknown ticket."""
        return None

    def subscribers_of(self, ticket: str) -> list[str]:
        """The conversation keys told of ``ticket``'s updates besides its reporter's."""
        return []

    def reopen(self, ticket: str, words: str, sender_key: str) -> RequestRecord | None:
        """A resident says a request marked done is not fixed: it is open again (``received``), their
        words kept in its history for the department. None for an unknown ticket."""
        return None

    def confirm_fixed(self, ticket: str, sender_key: str) -> bool:
        """A resident confirms the fix (the loop is closed); False for an unknown ticket."""
        return False


class InMemoryRequestStore(RequestStore):
    """Requests in a dict; ticket numbers count up per year."""

    def __init__(self) -> None:
        self._by_ticket: dict[str, RequestRecord] = {}
        self._seq: dict[int, int] = {}
        self._subs: dict[str, list[str]] = {}
        self._keys: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def open(self, draft: RequestDraft) -> RequestRecord:
        now = datetime.now(UTC)
        with self._lock:
            seq = self._seq.get(now.year, 0) + 1
            self._seq[now.year] = seq
            rec = RequestRecord(
                ticket=format_ticket(now.year, seq),
                service_code=draft.service_code,
                department=draft.department,
                description=draft.description,
                address_string=draft.address_string,
                requested_at=now,
                updated_at=now,
                expected_at=now + timedelta(hours=draft.expected_hours),
                sender_key=f"{draft.channel}:{draft.sender_id}",
                lat=draft.lat,
                long=draft.long,
                media_url=draft.media_url,
            )
            self._by_ticket[rec.ticket] = rec
            self._keys[rec.ticket] = address_key(draft.address_string)
        return rec

    def find_duplicate(self, service_code: str, location: str | None, lat: float | None, long: float | None,
                       now: datetime | None = None, rule: DuplicateRule | None = None) -> RequestRecord | None:
        with self._lock:
            same = [r for r in self._by_ticket.values() if r.service_code == service_code]
            keys = {r.ticket: self._keys.get(r.ticket, address_key(r.address_string)) for r in same}
        return pick_duplicate(same, address_key(location), lat, long, rule or DuplicateRule(),
                              now or datetime.now(UTC), keys)

    def subscribe(self, ticket: str, sender_key: str) -> int | None:
        with self._lock:
            rec = self._by_ticket.get(ticket)
            if rec is None:
                return None
            subs = self._subs.setdefault(ticket, [])
            if sender_key not in subs and sender_key != rec.sender_key:
                subs.append(sender_key)
            rec.subscribers = len(subs)
            return rec.subscribers

    def subscribers_of(self, ticket: str) -> list[str]:
        with self._lock:
            return list(self._subs.get(ticket, []))

    def reopen(self, ticket: str, words: str, sender_key: str) -> RequestRecord | None:
        with self._lock:
            rec = self._by_ticket.get(ticket)
            if rec is None:
                return None
            rec.sub_status, rec.updated_at = "received", datetime.now(UTC)
            return rec

    def confirm_fixed(self, ticket: str, sender_key: str) -> bool:
        with self._lock:
            return ticket in self._by_ticket

    def get(self, ticket: str) -> RequestRecord | None:
        with self._lock:
            return self._by_ticket.get(ticket)

    def recent_for(self, sender_key: str, limit: int = 3) -> list[RequestRecord]:
        with self._lock:
            mine = [r for r in self._by_ticket.values() if r.sender_key == sender_key]
        return sorted(mine, key=lambda r: (r.requested_at, r.ticket), reverse=True)[:limit]

    def add(self, rec: RequestRecord) -> None:
        """Seed a request (tests and demos)."""
        with self._lock:
            self._by_ticket[rec.ticket] = rec
            self._keys[rec.ticket] = address_key(rec.address_string)
