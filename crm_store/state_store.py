"""Dialogue states in the SQL store, so a restart does not lose a half-filled form.

The state JSON lives in ``Conversation.state``.  ``DialogueState.version`` is
compared with ``Conversation.state_version`` on save: a mismatch means another
worker saved in between (two messages of one sender handled at once).  By default
the later save wins, as with the in-memory store, and a warning is logged; with
``strict=True`` a :class:`StaleStateError` is raised instead.
"""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from bot.dialogue.state import DialogueState, StateStore
from crm_store.conversations import by_key, get_or_create
from crm_store.models import Conversation
from crm_store.timeutil import utcnow

log = logging.getLogger(__name__)


class StaleStateError(RuntimeError):
    """The state was saved by someone else since it was loaded."""


class SqlStateStore(StateStore):
    """:class:`StateStore` on ``Conversation.state``."""

    def __init__(self, session_factory: sessionmaker[Session], strict: bool = False) -> None:
        self._sessions = session_factory
        self._strict = strict

    def load(self, key: str) -> DialogueState:
        with self._sessions() as session:
            conv = by_key(session, key)
            if conv is None or not conv.state:
                return DialogueState(key=key)
            state = DialogueState.from_json(conv.state)
            state.version = conv.state_version
            return state

    def save(self, state: DialogueState) -> None:
        loaded = state.version
        state.version = loaded + 1
        values = {
            "state": state.to_json(),
            "state_version": state.version,
            "handed_off": state.handed_off,
            "department": state.handoff_department if state.handed_off else None,
            "updated_at": utcnow(),
        }
        with self._sessions.begin() as session:
            conv = by_key(session, state.key)
            if conv is None:
                channel = state.key.split(":", 1)[0]
                conv = get_or_create(session, state.key, channel, None)
                session.flush()
            result = session.execute(
                update(Conversation)
                .where(Conversation.id == conv.id, Conversation.state_version == loaded)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return
            if self._strict:
                state.version = loaded
                raise StaleStateError(f"{state.key}: saved by another worker since version {loaded}")
            log.warning("dialogue state %s: concurrent save, last write wins", state.key)
            session.refresh(conv)
            state.version = values["state_version"] = max(conv.state_version, loaded) + 1
            values["state"] = state.to_json()
            session.execute(
                update(Conversation)
                .where(Conversation.id == conv.id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def delete(self, key: str) -> None:
        with self._sessions.begin() as session:
            conv = by_key(session, key)
            if conv is not None:
                conv.state = None  # the version keeps counting, so stale savers are detected
