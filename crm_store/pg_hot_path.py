"""The inbox's per-message SQL on PostgreSQL: one statement per transaction, in autocommit.

:mod:`crm_store.hot_path` (SQLAlchemy Core) needs, per message, a ``BEGIN``, the lookup,
the ``INSERT`` and a ``COMMIT`` before the engine runs, and a ``BEGIN``, the state save, the
inbound row's NLU results, the replies and a ``COMMIT`` after: about ten round trips and the
SQLAlchemy execution machinery around each. On PostgreSQL each of the two writes is one
statement here (data-modifying ``WITH`` queries, which run in one snapshot and commit or fail
as one), sent in autocommit mode straight through psycopg, which prepares them server-side
after a few uses. The guarantees are the same:

* :meth:`PgHotPath.inbound` stores the inbound message *and* returns the dialogue state in
  one statement, committed before the engine runs; ``ON CONFLICT DO NOTHING`` on the delivery
  id makes a retried delivery insert nothing;
* :meth:`PgHotPath.register` creates the resident, its identity, the conversation and the
  inbound message of a first contact in one statement;
* :meth:`PgHotPath.turn` writes the versioned state save, the inbound row's NLU results, the
  replies, a hand-off and new ``needs_tags`` in one statement; every part but the state save
  is conditional on the save having matched the loaded version, so a clash writes nothing
  and the caller takes the general path (which knows the strict and the last-write-wins
  rules).

Anything else (phone channels, shared contacts, merges, feedback, erasure, a paused
conversation, SQLite) takes the general path of :mod:`bot.inbox`. Written by hand because
SQLAlchemy compiles no data-modifying CTE with conditional parts for us any more cheaply than
this text, and its execution layer is the cost being avoided.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from bot.messages import Message, Turn

log = logging.getLogger("pcrm.store.pg")

#: Inbound message + the sender's identity, resident tags and conversation state (known sender).
_INBOUND = """
WITH f AS (
  SELECT ci.id, ci.resident_id, ci.last_seen_at, r.needs_tags::text AS needs_tags,
         c.id AS conversation_id, c.resident_id AS conversation_resident_id, c.state, c.state_version
  FROM channel_identities ci
  JOIN residents r ON r.id = ci.resident_id
  LEFT JOIN conversations c ON c.key = %(key)s
  WHERE ci.channel = %(channel)s AND ci.external_id = %(external_id)s
), ins AS (
  INSERT INTO interactions (conversation_id, resident_id, channel, direction, text, lang, entities,
                            handled_by, message_id, created_at)
  SELECT f.conversation_id, f.resident_id, %(channel)s, 'in', %(text)s, %(lang)s, '[]'::json, 'bot',
         %(message_id)s, %(created_at)s
  FROM f WHERE f.conversation_id IS NOT NULL AND f.conversation_resident_id = f.resident_id
  ON CONFLICT DO NOTHING
  RETURNING id
)
SELECT f.id, f.resident_id, f.last_seen_at, f.needs_tags, f.conversation_id, f.conversation_resident_id,
       f.state, f.state_version, (SELECT id FROM ins) AS inbound_id
FROM f
"""

#: A first contact on a non-phone channel: resident, identity, conversation, inbound message.
_REGISTER = """
WITH r AS (
  INSERT INTO residents (preferred_lang, contact_consent, sms_opt_out, needs_tags, created_at, last_seen_at)
  VALUES ('ko', false, false, '[]'::json, %(now)s, %(now)s)
  RETURNING id
), i AS (
  INSERT INTO channel_identities (channel, external_id, resident_id, reachable, created_at, last_seen_at)
  SELECT %(channel)s, %(external_id)s, r.id, true, %(now)s, %(now)s FROM r
  ON CONFLICT DO NOTHING
  RETURNING id, resident_id
), c AS (
  INSERT INTO conversations (key, channel, resident_id, state, state_version, handed_off, status,
                             created_at, updated_at)
  SELECT %(key)s, %(channel)s, i.resident_id, NULL, 0, false, 'active', %(now)s, %(now)s FROM i
  ON CONFLICT DO NOTHING
  RETURNING id
), m AS (
  INSERT INTO interactions (conversation_id, resident_id, channel, direction, text, lang, entities,
                            handled_by, message_id, created_at)
  SELECT c.id, i.resident_id, %(channel)s, 'in', %(text)s, %(lang)s, '[]'::json, 'bot',
         %(message_id)s, %(created_at)s
  FROM c, i
  ON CONFLICT DO NOTHING
  RETURNING id
)
SELECT (SELECT id FROM r), (SELECT id FROM i), (SELECT id FROM c), (SELECT id FROM m)
"""
_DROP_RESIDENT = "DELETE FROM residents WHERE id = %(rid)s"
_TOUCH = """
WITH a AS (UPDATE channel_identities SET last_seen_at = %(now)s WHERE id = %(iid)s)
UPDATE residents SET last_seen_at = %(now)s WHERE id = %(rid)s
"""

#: The turn: state save first; everything else only if it matched the loaded version.
_TURN = """
WITH st AS (
  UPDATE conversations
  SET state = %(state)s, state_version = %(version)s, handed_off = %(handed_off)s,
      department = %(department)s, updated_at = %(now)s
  WHERE id = %(cid)s AND state_version = %(loaded)s
  RETURNING id
), nlu AS (
  UPDATE interactions
  SET label = %(label)s, confidence = %(confidence)s, lang = %(lang)s, entities = %(entities)s::json,
      latency_ms = %(latency_ms)s, handled_by = %(inbound_handled_by)s
  WHERE id = %(iid)s AND EXISTS (SELECT 1 FROM st)
), out AS (
  INSERT INTO interactions (conversation_id, resident_id, channel, direction, text, lang, entities,
                            handled_by, message_id, created_at)
  SELECT %(cid)s, %(rid)s, %(channel)s, 'out', t.text, %(lang)s, '[]'::json, 'bot', NULL, %(now)s
  FROM unnest(%(replies)s::text[]) WITH ORDINALITY AS t(text, n)
  WHERE EXISTS (SELECT 1 FROM st)
  ORDER BY t.n
), tags AS (
  UPDATE residents
  SET needs_tags = (needs_tags::jsonb || (
        SELECT coalesce(jsonb_agg(x.t ORDER BY x.n), '[]'::jsonb)
        FROM jsonb_array_elements(%(tags)s::jsonb) WITH ORDINALITY AS x(t, n)
        WHERE NOT needs_tags::jsonb @> jsonb_build_array(x.t)))::json
  WHERE id = %(rid)s AND %(has_tags)s AND EXISTS (SELECT 1 FROM st)
), hu AS (
  UPDATE handoffs
  SET priority = greatest(priority, %(h_priority)s),
      reason = CASE WHEN %(h_callback)s THEN %(h_reason)s ELSE reason END
  WHERE conversation_id = %(cid)s AND status <> 'closed' AND %(handoff)s AND EXISTS (SELECT 1 FROM st)
  RETURNING id, department, priority
), hi AS (
  INSERT INTO handoffs (conversation_id, resident_id, department, priority, reason, summary, status, queued_at)
  SELECT %(cid)s, %(rid)s, %(h_department)s, %(h_priority)s, %(h_reason)s, %(h_summary)s, 'queued', %(now)s
  WHERE %(handoff)s AND EXISTS (SELECT 1 FROM st)
    AND NOT EXISTS (SELECT 1 FROM handoffs WHERE conversation_id = %(cid)s AND status <> 'closed')
  RETURNING id, department, priority
), h AS (SELECT * FROM hi UNION ALL SELECT * FROM hu)
SELECT EXISTS (SELECT 1 FROM st), (SELECT id FROM h LIMIT 1), (SELECT department FROM h LIMIT 1),
       (SELECT priority FROM h LIMIT 1)
"""

#: Event types whose consequences :meth:`PgHotPath.turn` writes itself.
HANDLED_EVENTS = frozenset({"handoff", "request_opened"})


class ConnectionLost(RuntimeError):
    """The pooled connection was dead (the database restarted or went away); the pool's older
    connections are invalidated, so one retry gets a new one, as with SQLAlchemy's
    ``DBAPIError.connection_invalidated``."""

    connection_invalidated = True


@dataclass(slots=True)
class Found:
    """The sender as :func:`crm_store.hot_path.lookup` returns it, plus the inbound row's id."""

    id: int
    resident_id: int
    last_seen_at: datetime | None
    needs_tags: list[str]
    conversation_id: int | None
    conversation_resident_id: int | None
    state: str | None
    state_version: int | None
    inbound_id: int | None


class PgHotPath:
    """The statements above on connections of ``engine``'s pool, in autocommit mode."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: Statements sent (bench/hot_path.py counts them; SQLAlchemy's events do not see them).
        self.statements = 0

    @staticmethod
    def usable(engine: Engine | None) -> bool:
        """PostgreSQL through psycopg 3 (the statements are PostgreSQL's; psycopg's placeholders)."""
        return engine is not None and engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        """A pooled psycopg connection in autocommit mode; dead connections are invalidated,
        and with them every connection of the pool older than them (a database restart)."""
        fairy = self.engine.raw_connection()
        dbapi = fairy.driver_connection
        assert dbapi is not None
        try:
            dbapi.autocommit = True
            yield dbapi
        except Exception as exc:
            if dbapi.closed or dbapi.broken:
                self.engine.pool._invalidate(fairy, exc)  # noqa: SLF001 - as SQLAlchemy does on a disconnect
                raise ConnectionLost(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
            raise
        finally:
            if not (dbapi.closed or dbapi.broken):
                dbapi.autocommit = False
            fairy.close()

    def _one(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        with self._conn() as conn:
            self.statements += 1
            return conn.execute(sql, params).fetchone()

    def inbound(self, message: Message) -> Found | None:
        """Store ``message`` of a known sender and read its state; None for an unknown sender.

        ``inbound_id`` is None when nothing was inserted: a retried delivery (the conversation
        exists and belongs to the sender's resident), or a case for the general path (no
        conversation yet, or it belongs to another resident).
        """
        row = self._one(_INBOUND, {
            "key": message.conversation_key, "channel": message.channel, "external_id": message.sender_id,
            "text": message.text, "lang": message.lang, "message_id": message.message_id,
            "created_at": datetime.fromtimestamp(message.received_at, UTC)})
        if row is None:
            return None
        found = Found(*row)
        found.needs_tags = json.loads(found.needs_tags) if found.needs_tags else []  # type: ignore[arg-type]
        return found

    def register(self, message: Message, now: datetime) -> Found | None:
        """A first contact in one statement; None when it raced another worker (or the
        conversation key exists already): the general path then handles it."""
        row = self._one(_REGISTER, {
            "key": message.conversation_key, "channel": message.channel, "external_id": message.sender_id,
            "text": message.text, "lang": message.lang, "message_id": message.message_id,
            "created_at": datetime.fromtimestamp(message.received_at, UTC), "now": now})
        assert row is not None
        rid, iid, cid, mid = row
        if iid is None:  # the identity exists (a concurrent first message): drop our resident
            self._one(_DROP_RESIDENT, {"rid": rid})
            return None
        if cid is None or mid is None:
            return None
        return Found(iid, rid, now, [], cid, rid, None, 0, mid)

    def touch(self, found: Found, now: datetime) -> None:
        """``last_seen_at`` of the identity and its resident."""
        with self._conn() as conn:
            self.statements += 1
            conn.execute(_TOUCH, {"iid": found.id, "rid": found.resident_id, "now": now})

    def turn(self, turn: Turn, *, conversation_id: int, resident_id: int, channel: str, inbound_id: int,
             state_json: str, loaded: int, handed_off: bool, department: str | None, now: datetime,
             new_tags: list[str]) -> tuple[bool, dict[str, Any] | None]:
        """Write the turn; (whether the state save matched version ``loaded``, the hand-off
        opened or reused as {"id", "department", "priority"} or None)."""
        h = turn.event("handoff")
        hd: dict[str, Any] = h.data if h is not None else {}
        callback = bool(hd.get("after_hours"))
        reason = str(hd.get("reason", ""))
        # JSON written as SQLAlchemy's JSON type writes it (json.dumps defaults), so rows match.
        row = self._one(_TURN, {
            "cid": conversation_id, "rid": resident_id, "channel": channel, "iid": inbound_id, "now": now,
            "state": state_json, "version": loaded + 1, "loaded": loaded, "handed_off": handed_off,
            "department": department,
            "label": turn.label, "confidence": turn.confidence, "lang": turn.lang,
            "entities": json.dumps(list(turn.entities)), "latency_ms": turn.latency_ms,
            "inbound_handled_by": "system" if turn.routing.action == "paused" else "bot",
            "replies": [r.text for r in turn.replies],
            "tags": json.dumps(new_tags), "has_tags": bool(new_tags),
            "handoff": h is not None, "h_department": hd.get("department"), "h_priority": int(hd.get("priority") or 0),
            "h_reason": f"callback:{reason}" if callback else reason, "h_callback": callback,
            "h_summary": hd.get("summary", ""),
        })
        assert row is not None
        matched, hid, hdept, hprio = row
        return bool(matched), ({"id": hid, "department": hdept, "priority": hprio} if hid is not None else None)
