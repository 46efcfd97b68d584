"""Hand-offs to people: open, the agent queue, claim and close.

Claiming is a conditional ``UPDATE ... WHERE status = 'queued'`` so two agents
clicking "take" on the same conversation cannot both get it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crm_store._session import attached
from crm_store.models import PRIORITY_EMERGENCY, Conversation, Handoff, Resident
from crm_store.timeutil import utcnow

__all__ = ["PRIORITY_EMERGENCY", "claim", "close", "open_handoff", "queue"]


def open_handoff(
    session: Session,
    conversation: Conversation,
    resident: Resident | None,
    department: str,
    priority: int,
    reason: str,
    summary: str,
) -> Handoff:
    """Queue ``conversation`` for an agent of ``department``.

    An already queued or claimed hand-off of the conversation is reused (and its
    priority raised if this one is more urgent) rather than queued twice.
    """
    conv = attached(session, conversation)
    conv.handed_off = True
    conv.department = department
    existing = session.scalars(
        select(Handoff).where(Handoff.conversation_id == conv.id, Handoff.status != "closed")
    ).first()
    if existing is not None:
        existing.priority = max(existing.priority, priority)
        return existing
    row = Handoff(
        conversation_id=conv.id,
        resident_id=resident.id if resident else conv.resident_id,
        department=department,
        priority=priority,
        reason=reason,
        summary=summary,
        status="queued",
    )
    session.add(row)
    session.flush()
    return row


def queue(session: Session, departments: Iterable[str] | None) -> list[Handoff]:
    """Waiting hand-offs of ``departments`` (all when ``None``): most urgent, then oldest, first."""
    stmt = select(Handoff).where(Handoff.status == "queued")
    if departments is not None:
        stmt = stmt.where(Handoff.department.in_(list(departments)))
    stmt = stmt.order_by(Handoff.priority.desc(), Handoff.queued_at, Handoff.id)
    return list(session.scalars(stmt))


def claim(session: Session, handoff_id: int, agent_id: int) -> Handoff | None:
    """Give a queued hand-off to ``agent_id``; ``None`` if someone else got it first."""
    result = session.execute(
        update(Handoff)
        .where(Handoff.id == handoff_id, Handoff.status == "queued")
        .values(status="claimed", agent_id=agent_id, claimed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = session.get_one(Handoff, handoff_id)
    session.refresh(row)
    return row


def close(session: Session, handoff_id: int, resolution_code: str, agent_id: int | None = None) -> Handoff:
    """Close a hand-off; the conversation's row no longer counts as handed off.

    The dialogue state is not rewritten here: the caller gives the conversation back to the
    bot through the inbox (``Inbox.release``), under the conversation's lock and through the
    state store, so a Redis-cached state is not left stale and no turn's save interleaves.
    """
    row = session.get(Handoff, handoff_id)
    if row is None:
        raise LookupError(f"no hand-off {handoff_id}")
    row.status = "closed"
    row.closed_at = utcnow()
    row.resolution_code = resolution_code
    if agent_id is not None and row.agent_id is None:
        row.agent_id = agent_id
    session.get_one(Conversation, row.conversation_id).handed_off = False
    session.flush()
    return row


def annotate(session: Session, conversation_id: int, kind: str, data: dict[str, object],
             due_at: datetime | None = None) -> Handoff | None:
    """Keep a call-back (``kind="callback"``) as a :class:`~crm_store.models.CallbackTask` of the
    conversation's open hand-off, or add an emergency's further words (``"emergency_note"``) to its
    summary, for the agent who takes it.

    A call-back marks the hand-off's reason ``callback:<why>`` (the console's call-back queue); its
    number is kept on the task only (the summary is shown masked everywhere), its message is also
    added to the summary so the queue's preview says what it is about.
    """
    h = session.scalars(select(Handoff).where(Handoff.conversation_id == conversation_id,
                                              Handoff.status != "closed").order_by(Handoff.id.desc())).first()
    if h is None:
        return None
    if kind == "callback":
        from crm_store import callbacks

        if not h.reason.startswith("callback:"):
            h.reason = f"callback:{data.get('reason') or h.reason or 'asked_for_person'}"[:255]
        callbacks.record(session, h, data, due_at)
        parts = [f"남긴 말: {data['message']}" if data.get("message") else ""]
    else:
        parts = [f"추가 내용: {data.get('text', '')}"]
    addition = " / ".join(p for p in parts if p)
    if addition:
        h.summary = f"{h.summary} / {addition}" if h.summary else addition
    return h


def withdraw(session: Session, conversation_id: int) -> Handoff | None:
    """The resident no longer wants a person ("됐어요, 그냥 챗봇이랑 할게요"): the open hand-off closes
    as ``withdrawn``. The dialogue state is the caller's (the turn that withdrew saves it)."""
    h = session.scalars(select(Handoff).where(Handoff.conversation_id == conversation_id,
                                              Handoff.status != "closed")).first()
    if h is None:
        return None
    h.status = "closed"
    h.closed_at = utcnow()
    h.resolution_code = "withdrawn"
    session.execute(update(Conversation).where(Conversation.id == conversation_id).values(handed_off=False))
    return h
