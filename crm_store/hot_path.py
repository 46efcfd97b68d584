"""The per-message statements of the inbox, in SQLAlchemy Core (no ORM unit of work).

Every inbound message costs, in the common case (a known sender), two transactions:

1. :func:`lookup` (identity, its resident's tags and the conversation with its dialogue
   state: one ``SELECT``), :func:`insert_inbound` (``INSERT ... ON CONFLICT DO NOTHING
   RETURNING id``: a retried delivery inserts nothing, no SAVEPOINT), and at most once a
   minute per identity :func:`touch` (``last_seen_at``);
2. the state save (:meth:`crm_store.state_store.SqlStateStore.save_in`) and :func:`store_turn`
   (the NLU results on the inbound row, the replies in one multi-row ``INSERT``).

First contacts, phone channels and shared contacts go through the ORM functions of
:mod:`crm_store.residents` (identity creation, phone linking, merges).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from bot.messages import Message, Turn
from crm_store.models import ChannelIdentity, Conversation, Interaction, Resident

#: ``last_seen_at`` of an identity and its resident is written at most this often.
LAST_SEEN_EVERY = timedelta(seconds=60)

_CI, _C, _R, _I = (ChannelIdentity.__table__, Conversation.__table__, Resident.__table__,
                   Interaction.__table__)

_LOOKUP = (
    select(_CI.c.id, _CI.c.resident_id, _CI.c.last_seen_at, _R.c.needs_tags,
           _C.c.id.label("conversation_id"), _C.c.resident_id.label("conversation_resident_id"),
           _C.c.state, _C.c.state_version)
    .select_from(_CI.join(_R, _R.c.id == _CI.c.resident_id)
                 .outerjoin(_C, _C.c.key == bindparam("key")))
    .where(_CI.c.channel == bindparam("channel"), _CI.c.external_id == bindparam("external_id"))
)
_TOUCH_IDENTITY = update(_CI).where(_CI.c.id == bindparam("iid")).values(last_seen_at=bindparam("now"))
_TOUCH_RESIDENT = update(_R).where(_R.c.id == bindparam("rid")).values(last_seen_at=bindparam("now"))
_SET_RESIDENT = update(_C).where(_C.c.id == bindparam("cid")).values(resident_id=bindparam("rid"))
_TURN_INBOUND = (
    update(_I).where(_I.c.id == bindparam("iid"))
    .values({c: bindparam(c) for c in ("label", "confidence", "lang", "entities", "latency_ms", "handled_by")})
)
_OUTBOUND = insert(_I)
_TAGS = select(_R.c.needs_tags).where(_R.c.id == bindparam("rid")).with_for_update()
_SET_TAGS = update(_R).where(_R.c.id == bindparam("rid")).values(needs_tags=bindparam("tags"))
_INBOUND: dict[str, Any] = {}
_NEW_RESIDENT = insert(_R).values(needs_tags=[], created_at=bindparam("now"),
                                  last_seen_at=bindparam("now")).returning(_R.c.id)
_DROP_RESIDENT = _R.delete().where(_R.c.id == bindparam("rid"))
_NEW: dict[tuple[str, str], Any] = {}


def _dialect_insert(dialect: str, table: Any) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


def _new_identity(dialect: str) -> Any:
    stmt = _NEW.get(("identity", dialect))
    if stmt is None:
        stmt = _NEW["identity", dialect] = _dialect_insert(dialect, _CI).values(
            channel=bindparam("channel"), external_id=bindparam("external_id"), resident_id=bindparam("rid"),
            reachable=True, created_at=bindparam("now"), last_seen_at=bindparam("now"),
        ).on_conflict_do_nothing().returning(_CI.c.id)
    return stmt


def _new_conversation(dialect: str) -> Any:
    stmt = _NEW.get(("conversation", dialect))
    if stmt is None:
        stmt = _NEW["conversation", dialect] = _dialect_insert(dialect, _C).values(
            key=bindparam("key"), channel=bindparam("channel"), resident_id=bindparam("rid"), state=None,
            state_version=0, handed_off=False, department=None, status="active", created_at=bindparam("now"),
            updated_at=bindparam("now"),
        ).on_conflict_do_nothing().returning(_C.c.id)
    return stmt


def lookup(conn: Connection, channel: str, external_id: str, key: str) -> Row[Any] | None:
    """The identity (id, resident_id, last_seen_at), the resident's ``needs_tags`` and the
    conversation ``key`` (conversation_id, conversation_resident_id, state, state_version;
    all None if it does not exist yet), or None for an unknown sender."""
    return conn.execute(_LOOKUP, {"key": key, "channel": channel, "external_id": external_id}).first()


def seen_long_ago(last_seen_at: datetime | None, now: datetime) -> bool:
    """Whether ``last_seen_at`` (naive = UTC, as the column stores it) is due to be written again."""
    if last_seen_at is not None and last_seen_at.tzinfo is None:
        last_seen_at = last_seen_at.replace(tzinfo=UTC)
    return last_seen_at is None or now - last_seen_at >= LAST_SEEN_EVERY


def touch(conn: Connection, found: Row[Any], now: datetime) -> None:
    """``last_seen_at`` of the identity and its resident, if older than :data:`LAST_SEEN_EVERY`."""
    if seen_long_ago(found.last_seen_at, now):
        conn.execute(_TOUCH_IDENTITY, {"iid": found.id, "now": now})
        conn.execute(_TOUCH_RESIDENT, {"rid": found.resident_id, "now": now})


def set_conversation_resident(conn: Connection, conversation_id: int, resident_id: int) -> None:
    conn.execute(_SET_RESIDENT, {"cid": conversation_id, "rid": resident_id})


def add_needs_tags(conn: Connection, resident_id: int, tags: list[str]) -> None:
    """Add ``tags`` to the resident's ``needs_tags`` (read under a row lock, so a concurrent
    merge, which unions both residents' tags, is not overwritten)."""
    current = conn.execute(_TAGS, {"rid": resident_id}).scalar()
    if current is None:
        return
    new = [t for t in tags if t not in current]
    if new:
        conn.execute(_SET_TAGS, {"rid": resident_id, "tags": [*current, *new]})


def register(conn: Connection, channel: str, external_id: str, key: str, now: datetime) -> Row[Any] | None:
    """First contact of a sender on a non-phone channel: a resident, its identity and the
    conversation, in three ``INSERT``s; the same row as :func:`lookup`. None when another
    worker registered the sender at the same moment or the conversation exists already
    (the caller then takes the ORM path, which handles both)."""
    rid = conn.execute(_NEW_RESIDENT, {"now": now}).scalar_one()
    iid = conn.execute(_new_identity(conn.dialect.name), {
        "channel": channel, "external_id": external_id, "rid": rid, "now": now}).scalar()
    if iid is None:
        conn.execute(_DROP_RESIDENT, {"rid": rid})
        return None
    cid = conn.execute(_new_conversation(conn.dialect.name), {
        "key": key, "channel": channel, "rid": rid, "now": now}).scalar()
    if cid is None:
        return None
    return lookup(conn, channel, external_id, key)


def supports_insert_ignore(conn: Connection) -> bool:
    return conn.dialect.name in ("postgresql", "sqlite")


def _inbound_stmt(dialect: str) -> Any:
    stmt = _INBOUND.get(dialect)
    if stmt is None:
        stmt = _INBOUND[dialect] = _dialect_insert(dialect, _I).on_conflict_do_nothing().returning(_I.c.id)
    return stmt


def insert_inbound(conn: Connection, message: Message, conversation_id: int, resident_id: int | None) -> int | None:
    """Store an inbound message; its id, or None if this delivery was recorded already.

    The unique (channel, direction, message_id) makes a retried delivery insert nothing,
    also when two deliveries race (``ON CONFLICT DO NOTHING``: no SAVEPOINT needed).
    """
    row = conn.execute(_inbound_stmt(conn.dialect.name), {
        "conversation_id": conversation_id, "resident_id": resident_id, "channel": message.channel,
        "direction": "in", "text": message.text, "lang": message.lang, "entities": [], "handled_by": "bot",
        "message_id": message.message_id, "created_at": datetime.fromtimestamp(message.received_at, UTC),
    }).first()
    return None if row is None else int(row[0])


def store_turn(conn: Connection, turn: Turn, conversation_id: int, channel: str, resident_id: int | None,
               inbound_id: int | None, now: datetime, handled_by: str = "bot") -> None:
    """:func:`crm_store.interactions.record_turn` in two statements (the conversation's
    ``handed_off``/``department``/``updated_at`` go with the state save)."""
    if inbound_id is not None:
        conn.execute(_TURN_INBOUND, {
            "iid": inbound_id, "label": turn.label, "confidence": turn.confidence, "lang": turn.lang,
            "entities": list(turn.entities), "latency_ms": turn.latency_ms,
            "handled_by": "system" if turn.routing.action == "paused" else "bot",
        })
    if turn.replies:
        conn.execute(_OUTBOUND, [
            {"conversation_id": conversation_id, "resident_id": resident_id, "channel": channel,
             "direction": "out", "text": reply.text, "lang": turn.lang, "entities": [], "handled_by": handled_by,
             "message_id": None, "created_at": now, "label": None, "confidence": None, "latency_ms": None}
            for reply in turn.replies
        ])
