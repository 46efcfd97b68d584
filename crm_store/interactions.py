"""Interactions: every message in and out, with what the NLU made of it.

Residents' messages and the bot's answers are written by the message log
(:mod:`crm_store.message_log`); here: an agent's reply and the read side.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store._session import attached
from crm_store.models import Conversation, Interaction


def record_agent_reply(session: Session, conversation: Conversation, agent_id: int, text: str) -> Interaction:
    """Store a message an agent typed in the console (``handled_by="agent:<id>"``)."""
    conv = attached(session, conversation)
    row = Interaction(
        conversation_id=conv.id,
        resident_id=conv.resident_id,
        channel=conv.channel,
        direction="out",
        text=text,
        entities=[],
        handled_by=f"agent:{agent_id}",
    )
    session.add(row)
    session.flush()
    return row


def transcript(session: Session, conversation_id: int) -> list[Interaction]:
    """All messages of one conversation, oldest first."""
    stmt = (
        select(Interaction)
        .where(Interaction.conversation_id == conversation_id)
        .order_by(Interaction.created_at, Interaction.id)
    )
    return list(session.scalars(stmt))


def history_for_resident(session: Session, resident_id: int) -> list[Interaction]:
    """All messages of a resident across channels, oldest first (the agent's timeline)."""
    stmt = (
        select(Interaction)
        .where(Interaction.resident_id == resident_id)
        .order_by(Interaction.created_at, Interaction.id)
    )
    return list(session.scalars(stmt))
