"""Interactions: every message in and out, with what the NLU made of it.

The web app records a message in one short transaction (so a retried delivery is
detected before the engine runs) and the engine's answer in another; that is why
:func:`record_turn` takes the inbound row back and updates it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.messages import Message, Turn
from crm_store._session import attached
from crm_store.models import Conversation, Interaction, Resident
from crm_store.timeutil import utcnow


def _find_inbound(session: Session, channel: str, message_id: str) -> Interaction | None:
    stmt = select(Interaction).where(
        Interaction.channel == channel,
        Interaction.direction == "in",
        Interaction.message_id == message_id,
    )
    return session.scalars(stmt).one_or_none()


def record_inbound(
    session: Session, message: Message, conversation: Conversation, resident: Resident | None
) -> Interaction | None:
    """Store an inbound message; ``None`` if this delivery was recorded already.

    Channels retry webhooks (Twilio, Telegram); the unique (channel, direction,
    message_id) turns the retry into a no-op, also when two deliveries race: the
    insert runs in a SAVEPOINT and a unique violation means "duplicate".
    """
    if _find_inbound(session, message.channel, message.message_id) is not None:
        return None
    received = datetime.fromtimestamp(message.received_at, UTC)
    row = Interaction(
        conversation_id=conversation.id,
        resident_id=resident.id if resident else None,
        channel=message.channel,
        direction="in",
        text=message.text,
        lang=message.lang,
        entities=[],
        handled_by="bot",
        message_id=message.message_id,
        created_at=received,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return None
    attached(session, conversation).updated_at = utcnow()
    return row


def record_turn(
    session: Session,
    turn: Turn,
    conversation: Conversation,
    resident: Resident | None,
    inbound: Interaction | None,
    handled_by: str = "bot",
) -> list[Interaction]:
    """Store the engine's answer: NLU results on the inbound row, one row per reply.

    Also mirrors a hand-off decision onto the conversation so the agent console
    can list handed-off conversations without parsing dialogue states.
    Returns the outbound rows.
    """
    conv = attached(session, conversation)
    if inbound is not None:
        row = attached(session, inbound)
        row.label = turn.label
        row.confidence = turn.confidence
        row.lang = turn.lang
        row.entities = list(turn.entities)
        row.latency_ms = turn.latency_ms
        if turn.routing.action == "paused":
            row.handled_by = "system"  # went to the agent queue, not to the bot
    now = utcnow()
    out = [
        Interaction(
            conversation_id=conv.id,
            resident_id=resident.id if resident else None,
            channel=conv.channel,
            direction="out",
            text=reply.text,
            lang=turn.lang,
            entities=[],
            handled_by=handled_by,
            created_at=now,
        )
        for reply in turn.replies
    ]
    session.add_all(out)
    if turn.routing.action == "handoff":
        conv.handed_off = True
        conv.department = turn.routing.department
    conv.updated_at = now
    session.flush()
    return out


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
