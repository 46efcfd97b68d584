"""Dialogue states in the SQL store, so a restart does not lose a half-filled form.

The state JSON lives in ``Conversation.state``.  ``DialogueState.version`` is
compared with ``Conversation.state_version`` on save: a mismatch means another
worker saved in between (two messages of one sender handled at once).  By default
the later save wins, as with the in-memory store, and a warning is logged; with
``strict=True`` a :class:`StaleStateError` is raised instead.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.dialogue.state import DialogueState, StateStore
from crm_store.conversations import by_key, get_or_create
from crm_store.models import Conversation
from crm_store.timeutil import utcnow

log = logging.getLogger(__name__)

_T = Conversation.__table__
#: The versioned save: only if nobody saved since the state was loaded.
_SAVE = (
    update(_T)
    .where(_T.c.id == bindparam("cid"), _T.c.state_version == bindparam("loaded"))
    .values({c: bindparam(c) for c in ("state", "state_version", "handed_off", "department", "updated_at")})
)


class StaleStateError(RuntimeError):
    """The state was saved by someone else since it was loaded."""


class SqlStateStore(StateStore):
    """:class:`StateStore` on ``Conversation.state``."""

    def __init__(self, session_factory: sessionmaker[Session], strict: bool = False) -> None:
        self._sessions = session_factory
        self._strict = strict

    @property
    def bind(self) -> Any:
        """The database engine the states live in (the inbox saves them in its own transactions
        when it is the same database)."""
        return self._sessions.kw.get("bind")

    def load(self, key: str) -> DialogueState:
        with self._sessions() as session:
            conv = by_key(session, key)
            if conv is None or not conv.state:
                return DialogueState(key=key)
            state = DialogueState.from_json(conv.state)
            state.version = conv.state_version
            return state

    def save(self, state: DialogueState) -> None:
        with self._sessions.begin() as session:
            conv = by_key(session, state.key)
            if conv is None:
                channel = state.key.split(":", 1)[0]
                conv = get_or_create(session, state.key, channel, None)
                session.flush()
            self.save_in(session.connection(), state, conv.id)

    def save_in(self, conn: Connection, state: DialogueState, conversation_id: int,
                extra: dict[str, Any] | None = None) -> str:
        """Save ``state`` of conversation ``conversation_id`` in the caller's transaction.

        The inbox uses this to save the state together with the turn (one transaction);
        ``extra`` overrides ``handed_off``/``department`` in the same ``UPDATE`` (a hand-off turn).
        Versions are checked as in :meth:`save`; on a strict clash the version is restored.
        Returns the JSON saved.
        """
        loaded = state.version
        state.version = loaded + 1
        values = {
            "state": state.to_json(),
            "state_version": state.version,
            "handed_off": state.handed_off,
            "department": state.handoff_department if state.handed_off else None,
            "updated_at": utcnow(),
            **(extra or {}),
        }
        result = conn.execute(_SAVE, {"cid": conversation_id, "loaded": loaded, **values})
        if result.rowcount == 1:
            return str(values["state"])
        if self._strict:
            state.version = loaded
            raise StaleStateError(f"{state.key}: saved by another worker since version {loaded}")
        log.warning("dialogue state %s: concurrent save, last write wins", state.key)
        current = conn.execute(select(_T.c.state_version).where(_T.c.id == conversation_id)).scalar_one()
        state.version = values["state_version"] = max(current, loaded) + 1
        values["state"] = state.to_json()
        conn.execute(update(_T).where(_T.c.id == conversation_id).values(**values))
        return str(values["state"])

    def delete(self, key: str) -> None:
        with self._sessions.begin() as session:
            conv = by_key(session, key)
            if conv is not None:
                conv.state = None  # the version keeps counting, so stale savers are detected
