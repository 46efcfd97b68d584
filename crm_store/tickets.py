"""Gap-free ticket numbers per year (``2026-000871``).

Residents quote these numbers and auditors expect no gaps, so a database sequence
(which skips on rollback) will not do.  :func:`next_ticket` bumps the year's row in
``ticket_counters`` with ``UPDATE ... RETURNING`` inside the caller's transaction:
on PostgreSQL the row lock makes concurrent allocations queue up behind each other
and a rolled-back request gives its number back.  SQLite serialises writers anyway.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.service_requests import format_ticket
from crm_store.models import TicketCounter


def next_seq(session: Session, year: int) -> int:
    """The next sequence number of ``year``, allocated in ``session``'s transaction."""
    bump = (
        update(TicketCounter)
        .where(TicketCounter.year == year)
        .values(last_seq=TicketCounter.last_seq + 1)
        .returning(TicketCounter.last_seq)
        .execution_options(synchronize_session=False)
    )
    seq = session.execute(bump).scalar_one_or_none()
    if seq is not None:
        return seq
    # First ticket of the year: create the row (a concurrent creator may win; fine).
    try:
        with session.begin_nested():
            session.add(TicketCounter(year=year, last_seq=0))
    except IntegrityError:
        pass
    return session.execute(bump).scalar_one()


def next_ticket(session: Session, year: int) -> str:
    """The next ticket number of ``year`` (``YYYY-NNNNNN``)."""
    return format_ticket(year, next_seq(session, year))


def last_seq(session: Session, year: int) -> int:
    """How many tickets ``year`` has had so far."""
    return session.scalar(select(TicketCounter.last_seq).where(TicketCounter.year == year)) or 0
