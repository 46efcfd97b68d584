"""Call-back tasks: the number a resident left, when it is due, and what happened when we called.

Written by the inbox when the dialogue emits a ``callback`` event (:func:`record`); read and
updated by the console (:func:`for_handoff`, :func:`attempt`).  A hand-off has at most one
open task: a corrected number or a message given later updates it instead of adding another.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.models import CallbackTask, Handoff
from crm_store.timeutil import utcnow

#: What an agent records after dialling: ``reached`` closes the task, the others keep it open.
OUTCOMES = ("reached", "no_answer", "retry")


def for_handoff(session: Session, handoff_id: int) -> CallbackTask | None:
    """The hand-off's latest call-back task (open or done), or None."""
    return session.scalars(select(CallbackTask).where(CallbackTask.handoff_id == handoff_id)
                           .order_by(CallbackTask.id.desc())).first()


def record(session: Session, handoff: Handoff, data: dict[str, object], due_at: datetime | None) -> CallbackTask:
    """Create or update the hand-off's open task from a ``callback`` event's data.

    ``note=True`` events carry only the message the resident added after the number.
    """
    task = session.scalars(select(CallbackTask).where(CallbackTask.handoff_id == handoff.id,
                                                      CallbackTask.status == "open")).first()
    if task is None:
        task = CallbackTask(handoff_id=handoff.id, conversation_id=handoff.conversation_id,
                            resident_id=handoff.resident_id, department=handoff.department, phone="",
                            message="", reason=str(data.get("reason") or "")[:64], status="open",
                            due_at=due_at or utcnow(), attempts=0)
        session.add(task)
    phone = str(data.get("phone") or "")
    if phone and not data.get("note"):
        task.phone = phone[:32]
    message = str(data.get("message") or "").strip()
    if message:
        task.message = (f"{task.message} / {message}" if task.message and data.get("note") else message)[:1000]
    session.flush()
    return task


def attempt(session: Session, task: CallbackTask, outcome: str, agent_id: int) -> CallbackTask:
    """One call made: count it and keep its outcome (``reached`` closes the task)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}")
    task.attempts += 1
    task.outcome = outcome
    task.last_attempt_at = utcnow()
    task.agent_id = agent_id
    if outcome == "reached":
        task.status = "done"
    session.flush()
    return task
