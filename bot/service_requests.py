"""Service requests (민원) as the engine sees them, and the interface of their store.

The engine opens requests and looks up their status through :class:`RequestStore`.
The in-process implementation serves tests and `pcrm chat`; the SQL one lives in
``crm_store.requests`` and is what the web app uses.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

TICKET_RE = re.compile(r"^(\d{4})-(\d{6})$")

#: Internal sub-statuses, in the order agents move requests through them.
SUB_STATUSES = ("received", "assigned", "in_progress", "resolved", "rejected")
CLOSED_SUB_STATUSES = ("resolved", "rejected")


def format_ticket(year: int, seq: int) -> str:
    """``2026-000871``: the ticket number residents quote."""
    return f"{year:04d}-{seq:06d}"


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
    channel: str = "rest"
    sender_id: str = ""
    lang: str = "ko"
    expected_hours: float = 72.0


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


class InMemoryRequestStore(RequestStore):
    """Requests in a dict; ticket numbers count up per year."""

    def __init__(self) -> None:
        self._by_ticket: dict[str, RequestRecord] = {}
        self._seq: dict[int, int] = {}
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
            )
            self._by_ticket[rec.ticket] = rec
        return rec

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
