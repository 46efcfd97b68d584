"""Conversations: one per channel identity (key ``"channel:sender_id"``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store._session import insert_or_find
from crm_store.models import Conversation, Resident


def by_key(session: Session, key: str) -> Conversation | None:
    """The conversation with ``key``, if any."""
    return session.scalars(select(Conversation).where(Conversation.key == key)).one_or_none()


def get_or_create(session: Session, key: str, channel: str, resident: Resident | None) -> Conversation:
    """The conversation ``key``, created on the first message.

    The state store may have created it before the resident was known; the
    resident is attached (or updated after a merge) here.
    """
    conv = by_key(session, key)
    if conv is None:
        conv = insert_or_find(
            session,
            lambda: Conversation(key=key, channel=channel, resident_id=resident.id if resident else None),
            lambda: by_key(session, key),
        )
    if resident is not None and conv.resident_id != resident.id:
        conv.resident_id = resident.id
    return conv
