"""The message log: every message in and out, written by one implementation.

An inbound message costs, for a known sender, one write that is committed before the engine
runs (so it is never lost, and a retried delivery is recognised) and reads the dialogue state;
the engine's turn costs one more. :class:`MessageLog` holds both, built once from the table
metadata (``crm_store.models``; the columns a statement does not name take their
``server_default``), and runs them

* on PostgreSQL (psycopg 3) as one data-modifying ``WITH`` statement each, compiled once by
  SQLAlchemy and sent straight through psycopg in autocommit mode (prepared server-side after a
  few uses): the inbound message with the sender's identity, tags and state; a first contact
  (resident, identity, conversation, message); the turn (versioned state save, NLU results,
  replies, new ``needs_tags``, a hand-off), every part of it conditional on the state save
  having matched the loaded version;
* elsewhere (SQLite) as the same steps in separate statements, in one transaction.

Phone channels, shared contacts, merges, a conversation that changed hands and a first contact
that raced another worker resolve the identity first (:mod:`crm_store.residents`, which
links numbers and merges residents), then take the same path. Results are typed:
:class:`Stored` or :class:`Duplicate` for an inbound message, :class:`Written` or
:class:`Clash` for a turn.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Engine,
    Text,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by
from sqlalchemy.orm import Session, sessionmaker

from bot.messages import Message, Turn
from bot.phones import is_phone_channel, normalize_phone
from crm_store import conversations, residents
from crm_store.direct import DirectPg, for_engine
from crm_store.models import ChannelIdentity, Conversation, Handoff, Interaction, Resident
from crm_store.timeutil import utcnow

#: ``last_seen_at`` of an identity and its resident is written at most this often.
LAST_SEEN_EVERY = timedelta(seconds=60)
#: Turn events whose consequences :meth:`MessageLog.store_turn` writes itself.
HANDLED_EVENTS = frozenset({"handoff", "request_opened"})
#: Turn events that write to the store besides the turn itself.
STORE_EVENTS = frozenset({"handoff", "paused", "feedback", "delete_data", "request_opened", "contact_consent",
                          "callback", "emergency_note", "handoff_withdrawn", "request_subscribed"})


# --- results -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Stored:
    """An inbound message stored: whose it is, where, and the conversation's dialogue state."""

    resident_id: int
    conversation_id: int
    inbound_id: int
    channel: str
    needs_tags: list[str] = field(default_factory=list)
    state: str | None = None
    state_version: int = 0
    #: The state came from Redis (kept there during a database outage, not written back yet).
    pending_state: bool = False


@dataclass(frozen=True, slots=True)
class Duplicate:
    """This delivery was stored already (a retried webhook): nothing written."""


@dataclass(frozen=True, slots=True)
class Clash:
    """The dialogue state was saved by someone else since it was loaded: nothing written."""


@dataclass(frozen=True, slots=True)
class OpenHandoff:
    id: int
    department: str
    priority: int


@dataclass(frozen=True, slots=True)
class Written:
    """A turn stored; the hand-off it opened or reused, if any."""

    handoff: OpenHandoff | None = None


DUPLICATE, CLASH = Duplicate(), Clash()


# --- statements --------------------------------------------------------------------------------
_CI, _C, _R, _I, _H = (ChannelIdentity.__table__, Conversation.__table__, Resident.__table__,
                       Interaction.__table__, Handoff.__table__)


def _p(name: str, column: Any = None, type_: Any = None) -> Any:
    """A bind parameter typed as ``column`` (PostgreSQL then gets the cast SQLAlchemy renders)."""
    return bindparam(name, type_=type_ if type_ is not None else column.type)


_IN_COLUMNS = ("conversation_id", "resident_id", "channel", "direction", "text", "lang", "message_id", "created_at")
_MSG = {"channel": _p("channel", _I.c.channel), "text": _p("text", _I.c.text), "lang": _p("lang", _I.c.lang),
        "message_id": _p("message_id", _I.c.message_id), "created_at": _p("created_at", _I.c.created_at)}

#: The sender's identity, the resident's tags and the conversation with its state.
_LOOKUP = (
    select(_CI.c.id, _CI.c.resident_id, _CI.c.last_seen_at, _R.c.needs_tags,
           _C.c.id.label("conversation_id"), _C.c.resident_id.label("conversation_resident_id"),
           _C.c.state, _C.c.state_version)
    .select_from(_CI.join(_R, _R.c.id == _CI.c.resident_id)
                 .outerjoin(_C, _C.c.key == _p("key", _C.c.key)))
    .where(_CI.c.channel == _p("channel", _CI.c.channel), _CI.c.external_id == _p("external_id", _CI.c.external_id))
)


def _inbound_from(conversation_id: Any, resident_id: Any) -> list[Any]:
    return [conversation_id, resident_id, _MSG["channel"], literal_column("'in'"), _MSG["text"], _MSG["lang"],
            _MSG["message_id"], _MSG["created_at"]]


#: The inbound row for a resolved sender, per dialect (the parameters name the columns).
_INSERT_IN = {name: d.insert(_I).on_conflict_do_nothing().returning(_I.c.id)
              for name, d in (("postgresql", postgresql), ("sqlite", sqlite))}


def _insert_inbound(conn: Connection, params: dict[str, Any], conversation_id: int, resident_id: int | None,
                    **values: Any) -> int | None:
    """The inbound row; None if this delivery was stored already (the unique (channel, direction,
    message_id) makes a retried delivery insert nothing, also when two race: no SAVEPOINT)."""
    return conn.execute(_INSERT_IN[conn.dialect.name], {
        "conversation_id": conversation_id, "resident_id": resident_id, "direction": "in",
        **{k: params[k] for k in ("channel", "text", "lang", "message_id", "created_at")}, **values,
    }).scalar()


def _message_params(message: Message, now: datetime) -> dict[str, Any]:
    """The message's columns as the statements' parameters."""
    return {"key": message.conversation_key, "channel": message.channel, "text": message.text,
            "lang": message.lang, "message_id": message.message_id,
            "created_at": datetime.fromtimestamp(message.received_at, UTC), "now": now}


def insert_inbound(session: Session, message: Message, conversation_id: int, resident_id: int | None,
                   **values: Any) -> int | None:
    """Store ``message`` of a sender the caller resolved, in its transaction (channel events: an SMS
    keyword, a call's status); ``values`` sets other columns (``label``, ``handled_by``). Its id, or
    None for a retried delivery."""
    session.flush()
    return _insert_inbound(session.connection(), _message_params(message, utcnow()), conversation_id,
                           resident_id, **values)


#: A first contact's resident, identity and conversation (the parameters name the columns).
_NEW_RESIDENT = insert(_R).returning(_R.c.id)
_NEW = {name: (d.insert(_CI).on_conflict_do_nothing().returning(_CI.c.id),
               d.insert(_C).on_conflict_do_nothing().returning(_C.c.id))
        for name, d in (("postgresql", postgresql), ("sqlite", sqlite))}
_TOUCH_IDENTITY = update(_CI).where(_CI.c.id == _p("iid", _CI.c.id)).values(last_seen_at=_p("now", _CI.c.last_seen_at))
_TOUCH_RESIDENT = update(_R).where(_R.c.id == _p("rid", _R.c.id)).values(last_seen_at=_p("now", _R.c.last_seen_at))
_NLU = {c: _p(c, _I.c[c]) for c in ("label", "confidence", "lang", "latency_ms")}


def _nlu_update(*where: Any) -> Any:
    """The NLU results on the inbound row."""
    return (update(_I).where(_I.c.id == _p("iid", _I.c.id), *where)
            .values(**_NLU, entities=_p("entities", _I.c.entities),
                    handled_by=_p("inbound_handled_by", _I.c.handled_by)))


_TURN_INBOUND = _nlu_update()
_OUTBOUND = insert(_I)
_TAGS = select(_R.c.needs_tags).where(_R.c.id == _p("rid", _R.c.id)).with_for_update()
_SET_TAGS = update(_R).where(_R.c.id == _p("rid", _R.c.id)).values(needs_tags=_p("tags", _R.c.needs_tags))
_DROP_RESIDENT = _R.delete().where(_R.c.id == _p("rid", _R.c.id))


def _pg_inbound() -> Any:
    """Lookup + the message, inserted only if the conversation exists and is the sender's."""
    f = _LOOKUP.cte("f")
    ins = (postgresql.insert(_I)
           .from_select(_IN_COLUMNS, select(*_inbound_from(f.c.conversation_id, f.c.resident_id))
                        .where(f.c.conversation_id.is_not(None), f.c.conversation_resident_id == f.c.resident_id),
                        include_defaults=False)
           .on_conflict_do_nothing().returning(_I.c.id).cte("ins"))
    return select(*f.c, select(ins.c.id).scalar_subquery().label("inbound_id")).add_cte(ins)


def _pg_register() -> Any:
    """A first contact: resident, identity, conversation and message."""
    now = _p("now", _R.c.created_at)
    r = insert(_R).from_select(["created_at", "last_seen_at"], select(now, now), include_defaults=False) \
        .returning(_R.c.id).cte("r")
    i = (postgresql.insert(_CI).from_select(
        ["channel", "external_id", "resident_id", "created_at", "last_seen_at"],
        select(_p("channel", _CI.c.channel), _p("external_id", _CI.c.external_id), r.c.id, now, now),
        include_defaults=False).on_conflict_do_nothing().returning(_CI.c.id, _CI.c.resident_id).cte("i"))
    c = (postgresql.insert(_C).from_select(
        ["key", "channel", "resident_id", "created_at", "updated_at"],
        select(_p("key", _C.c.key), _p("channel", _C.c.channel), i.c.resident_id, now, now),
        include_defaults=False).on_conflict_do_nothing().returning(_C.c.id).cte("c"))
    m = (postgresql.insert(_I).from_select(_IN_COLUMNS, select(*_inbound_from(c.c.id, i.c.resident_id)),
                                           include_defaults=False)
         .on_conflict_do_nothing().returning(_I.c.id).cte("m"))
    return select(*(select(x.c.id).scalar_subquery() for x in (r, i, c, m)))


def _pg_touch() -> Any:
    return _TOUCH_RESIDENT.add_cte(_TOUCH_IDENTITY.cte("a"))


def _pg_turn(handoff: bool = True, tags: bool = True) -> Any:
    """The turn: state save first; everything else only if it matched the loaded version.

    Built without its hand-off part (``handoff=False``) and without its ``needs_tags`` part
    (``tags=False``) for the turns that have neither, most of them: PostgreSQL sets up and runs
    every part of a statement each time, whether its condition holds or not."""
    cid, rid, now = _p("cid", _C.c.id), _p("rid", _R.c.id), _p("now", _C.c.updated_at)
    st = (update(_C).where(_C.c.id == cid, _C.c.state_version == _p("loaded", _C.c.state_version))
          .values(state=_p("state", _C.c.state), state_version=_p("version", _C.c.state_version),
                  handed_off=_p("handed_off", _C.c.handed_off), department=_p("department", _C.c.department),
                  updated_at=now)
          .returning(_C.c.id).cte("st"))
    saved = exists(select(st.c.id))
    nlu = _nlu_update(saved).cte("nlu")
    replies = (func.unnest(bindparam("replies", type_=ARRAY(Text)))
               .table_valued("text", with_ordinality="n").render_derived(name="t"))
    out = (insert(_I).from_select(
        ["conversation_id", "resident_id", "channel", "direction", "text", "lang", "created_at"],
        select(cid, rid, _p("channel", _I.c.channel), literal_column("'out'"), replies.c.text, _NLU["lang"],
               _p("now", _I.c.created_at)).where(saved).order_by(replies.c.n),
        include_defaults=False).cte("out"))
    h = _handoff_cte(cid, rid, saved) if handoff else None
    stmt = select(saved, *(select(c).limit(literal_column("1")).scalar_subquery() for c in h.c) if h is not None
                  else (null(), null(), null()))
    return stmt.add_cte(nlu, out, *([_tags_cte(rid, saved)] if tags else []))


def _tags_cte(rid: Any, saved: Any) -> Any:
    """The resident's ``needs_tags`` plus the turn's new ones (those not there yet), if saved."""
    x = (func.jsonb_array_elements(bindparam("tags", type_=JSONB))
         .table_valued("value", with_ordinality="n").render_derived(name="x"))
    current = cast(_R.c.needs_tags, JSONB)
    added = (select(func.coalesce(func.jsonb_agg(aggregate_order_by(x.c.value, x.c.n)), literal_column("'[]'::jsonb")))
             .where(~current.contains(func.jsonb_build_array(x.c.value))).scalar_subquery())
    return (update(_R).where(_R.c.id == rid, saved)
            .values(needs_tags=cast(current.op("||")(added), JSON)).cte("tags"))


def _handoff_cte(cid: Any, rid: Any, saved: Any) -> Any:
    """The open hand-off updated (priority, a call-back's reason) or a new one queued, if saved;
    its id, department and priority."""
    open_ = (_H.c.conversation_id == cid) & (_H.c.status != literal_column("'closed'"))
    priority, reason = _p("h_priority", _H.c.priority), _p("h_reason", _H.c.reason)
    hu = (update(_H).where(open_, saved)
          .values(priority=func.greatest(_H.c.priority, priority),
                  reason=case((_p("h_callback", type_=Boolean()), reason), else_=_H.c.reason))
          .returning(_H.c.id, _H.c.department, _H.c.priority).cte("hu"))
    hi = (insert(_H).from_select(
        ["conversation_id", "resident_id", "department", "priority", "reason", "summary", "queued_at"],
        select(cid, rid, _p("h_department", _H.c.department), priority, reason, _p("h_summary", _H.c.summary),
               _p("now", _H.c.queued_at)).where(saved, ~exists(select(_H.c.id).where(open_))),
        include_defaults=False).returning(_H.c.id, _H.c.department, _H.c.priority).cte("hi"))
    return union_all(select(hi.c.id, hi.c.department, hi.c.priority),
                     select(hu.c.id, hu.c.department, hu.c.priority)).cte("h")


class _PgStatements:
    """The statements above, built once (on the first PostgreSQL log: a SQLite server never builds
    them); :class:`DirectPg` compiles each once and runs it."""

    def __init__(self) -> None:
        self.inbound = _pg_inbound()
        self.register = _pg_register()
        self.touch = _pg_touch()
        #: by (a hand-off, new tags): the turn's statement with only the parts it needs
        self.turn = {(h, t): _pg_turn(handoff=h, tags=t) for h in (False, True) for t in (False, True)}
        self.drop_resident = _DROP_RESIDENT


@functools.cache
def _pg_statements() -> _PgStatements:
    return _PgStatements()


def seen_long_ago(last_seen_at: datetime | None, now: datetime) -> bool:
    """Whether ``last_seen_at`` (naive = UTC) is due to be written again."""
    if last_seen_at is not None and last_seen_at.tzinfo is None:
        last_seen_at = last_seen_at.replace(tzinfo=UTC)
    return last_seen_at is None or now - last_seen_at >= LAST_SEEN_EVERY


def writes_all(turn: Turn) -> bool:
    """Whether :meth:`MessageLog.store_turn` writes everything ``turn`` needs (else the caller's
    general path: :meth:`MessageLog.turn_in` plus its own writes, in one transaction)."""
    kinds = [e.type for e in turn.events if e.type in STORE_EVENTS]
    return set(kinds) <= HANDLED_EVENTS and kinds.count("handoff") <= 1


@dataclass(slots=True)
class _Found:
    """The sender as the lookup returns it, plus the inbound row's id (None: not inserted)."""

    id: int
    resident_id: int
    last_seen_at: datetime | None
    needs_tags: Any
    conversation_id: int | None
    conversation_resident_id: int | None
    state: str | None
    state_version: int | None
    inbound_id: int | None = None

    @property
    def belongs(self) -> bool:
        """The conversation exists and is the sender's resident's (else: resolve first)."""
        return self.conversation_id is not None and self.conversation_resident_id == self.resident_id


# --- the log -----------------------------------------------------------------------------------
class MessageLog:
    """Stores inbound messages and turns on ``sessions``' database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        bind = sessions.kw.get("bind")
        self.engine: Engine | None = bind if isinstance(bind, Engine) else None
        #: PostgreSQL through psycopg 3: each write one statement, in autocommit.
        self.pg: _PgStatements | None = None
        #: How statements reach psycopg directly (None: SQLite, through SQLAlchemy).
        self.direct: DirectPg | None = for_engine(self.engine)
        if self.direct is not None:
            self.pg = _pg_statements()
        self._pg_run = _PgRun(self) if self.pg is not None else None

    # --- inbound ---------------------------------------------------------------------------
    def store_inbound(self, message: Message, now: datetime | None = None) -> Stored | Duplicate:
        """Commit ``message``; its ids and the conversation's dialogue state, or :data:`DUPLICATE`."""
        now = now or utcnow()
        if self.pg is not None:
            assert self._pg_run is not None
            return self._store(self._pg_run, message, now)
        with self.sessions.begin() as s:
            return self._store(_SqlRun(s), message, now)

    def store_inbound_in(self, session: Session, message: Message, now: datetime | None = None
                         ) -> Stored | Duplicate:
        """:meth:`store_inbound` in the caller's transaction (separate statements)."""
        return self._store(_SqlRun(session), message, now or utcnow())

    def _store(self, run: _Run, message: Message, now: datetime) -> Stored | Duplicate:
        params = _message_params(message, now)
        phone = is_phone_channel(message.channel)
        params["external_id"] = normalize_phone(message.sender_id) if phone else message.sender_id
        resolved = phone or bool(message.attachment("contact"))
        if resolved:  # a number: identify through it, link and merge
            run.resolve(message)
        found = run.inbound(params)
        if found is None and not resolved:  # a first contact
            found = run.register(params)
        if found is None or not found.belongs:  # raced a first contact, no conversation yet, or a merge
            run.resolve(message)
            resolved = True
            found = run.inbound(params)
        if found is None or not found.belongs:  # pragma: no cover - resolve() made both
            raise RuntimeError(f"{message.channel}: sender not resolved")
        if found.inbound_id is None:
            return DUPLICATE
        if not resolved and seen_long_ago(found.last_seen_at, now):
            run.touch(found, now)
        assert found.conversation_id is not None
        tags = found.needs_tags
        return Stored(found.resident_id, found.conversation_id, found.inbound_id, message.channel,
                      list(json.loads(tags) if isinstance(tags, str) else tags or []),
                      found.state, found.state_version or 0)

    # --- turn ------------------------------------------------------------------------------
    def store_turn(self, stored: Stored, turn: Turn, *, state_json: str, loaded: int, handed_off: bool,
                   department: str | None, new_tags: list[str], now: datetime | None = None) -> Written | Clash:
        """Write the turn on PostgreSQL in one statement when the state saved there is still version
        ``loaded`` (:data:`CLASH` and nothing written otherwise); only for :func:`writes_all` turns."""
        assert self.pg is not None, "one statement on PostgreSQL; elsewhere the caller uses turn_in"
        now = now or utcnow()
        h = turn.event("handoff")
        hd: dict[str, Any] = h.data if h is not None else {}
        callback = bool(hd.get("after_hours"))
        reason = str(hd.get("reason", ""))
        assert self._pg_run is not None
        row = self._pg_run.one(self.pg.turn[h is not None, bool(new_tags)], {
            "cid": stored.conversation_id, "rid": stored.resident_id, "channel": stored.channel,
            "iid": stored.inbound_id, "now": now, "state": state_json, "version": loaded + 1, "loaded": loaded,
            "handed_off": handed_off, "department": department, **self._nlu(turn),
            "replies": [r.text for r in turn.replies], "tags": new_tags,
            "h_department": hd.get("department"), "h_priority": int(hd.get("priority") or 0),
            "h_reason": f"callback:{reason}" if callback else reason, "h_callback": callback,
            "h_summary": hd.get("summary", ""),
        })
        assert row is not None
        matched, hid, hdept, hprio = row
        if not matched:
            return CLASH
        return Written(OpenHandoff(hid, hdept, hprio) if hid is not None else None)

    @staticmethod
    def _nlu(turn: Turn) -> dict[str, Any]:
        return {"label": turn.label, "confidence": turn.confidence, "lang": turn.lang,
                "entities": list(turn.entities), "latency_ms": turn.latency_ms,
                "inbound_handled_by": "system" if turn.routing.action == "paused" else "bot"}

    @staticmethod
    def turn_in(conn: Connection, stored: Stored, turn: Turn, now: datetime, handled_by: str = "bot") -> None:
        """The turn's messages in the caller's transaction (after its state save): the NLU results on
        the inbound row, the replies in one multi-row ``INSERT``."""
        conn.execute(_TURN_INBOUND, {"iid": stored.inbound_id, **MessageLog._nlu(turn)})
        if turn.replies:
            conn.execute(_OUTBOUND, [
                {"conversation_id": stored.conversation_id, "resident_id": stored.resident_id,
                 "channel": stored.channel, "direction": "out", "text": reply.text, "lang": turn.lang,
                 "handled_by": handled_by, "created_at": now}
                for reply in turn.replies])

    @staticmethod
    def add_needs_tags(conn: Connection, resident_id: int, tags: list[str]) -> None:
        """Add ``tags`` to the resident's ``needs_tags`` (read under a row lock, so a concurrent
        merge, which unions both residents' tags, is not overwritten)."""
        current = conn.execute(_TAGS, {"rid": resident_id}).scalar()
        if current is None:
            return
        new = [t for t in tags if t not in current]
        if new:
            conn.execute(_SET_TAGS, {"rid": resident_id, "tags": [*current, *new]})


def _resolve(session: Session, message: Message) -> None:
    """The sender's resident (created, linked to a number, merged) and conversation (created, or
    moved to that resident): what the message log's statements then find."""
    contact = message.attachment("contact")
    if contact and contact.phone:
        resident = residents.link_phone(session, message.channel, message.sender_id, contact.phone)
    else:
        phone = message.sender_id if is_phone_channel(message.channel) else None
        resident = residents.identify(session, message.channel, message.sender_id, phone=phone)
    conversations.get_or_create(session, message.conversation_key, message.channel, resident)
    session.flush()


class _Run:
    """How the steps of :meth:`MessageLog._store` run on one backend."""

    def resolve(self, message: Message) -> None:
        raise NotImplementedError

    def inbound(self, params: dict[str, Any]) -> _Found | None:
        raise NotImplementedError

    def register(self, params: dict[str, Any]) -> _Found | None:
        raise NotImplementedError

    def touch(self, found: _Found, now: datetime) -> None:
        raise NotImplementedError


class _PgRun(_Run):
    """Each step one statement in autocommit; identity resolution in a transaction of its own."""

    __slots__ = ("log", "sql")

    def __init__(self, log: MessageLog) -> None:
        assert log.pg is not None
        self.log, self.sql = log, log.pg

    def one(self, stmt: Any, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """``stmt``'s first row (the statements here return one row or none)."""
        direct = self.log.direct
        assert direct is not None
        rows = direct.rows(stmt, params)
        return rows[0] if rows else None

    def resolve(self, message: Message) -> None:
        with self.log.sessions.begin() as s:
            _resolve(s, message)

    def inbound(self, params: dict[str, Any]) -> _Found | None:
        row = self.one(self.sql.inbound, params)
        return None if row is None else _Found(*row)

    def register(self, params: dict[str, Any]) -> _Found | None:
        row = self.one(self.sql.register, params)
        assert row is not None
        rid, iid, cid, mid = row
        if iid is None:  # the identity exists (a concurrent first message): drop our resident
            self.one(self.sql.drop_resident, {"rid": rid})
            return None
        if cid is None:  # the conversation key exists already
            return None
        now = params["now"]
        return _Found(iid, rid, now, [], cid, rid, None, 0, mid)

    def touch(self, found: _Found, now: datetime) -> None:
        self.one(self.sql.touch, {"iid": found.id, "rid": found.resident_id, "now": now})


class _SqlRun(_Run):
    """Each step separate statements in the session's transaction."""

    __slots__ = ("session", "conn", "dialect")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.conn = session.connection()
        self.dialect = self.conn.dialect.name

    def resolve(self, message: Message) -> None:
        _resolve(self.session, message)

    def inbound(self, params: dict[str, Any]) -> _Found | None:
        row = self.conn.execute(_LOOKUP, params).first()
        if row is None:
            return None
        found = _Found(*row)
        if found.belongs:
            assert found.conversation_id is not None
            found.inbound_id = _insert_inbound(self.conn, params, found.conversation_id, found.resident_id)
        return found

    def register(self, params: dict[str, Any]) -> _Found | None:
        conn, now = self.conn, params["now"]
        rid = conn.execute(_NEW_RESIDENT, {"created_at": now, "last_seen_at": now}).scalar_one()
        new_identity, new_conversation = _NEW[self.dialect]
        iid = conn.execute(new_identity, {"channel": params["channel"], "external_id": params["external_id"],
                                          "resident_id": rid, "created_at": now, "last_seen_at": now}).scalar()
        if iid is None:
            conn.execute(_DROP_RESIDENT, {"rid": rid})
            return None
        cid = conn.execute(new_conversation, {"key": params["key"], "channel": params["channel"], "resident_id": rid,
                                              "created_at": now, "updated_at": now}).scalar()
        if cid is None:
            return None
        return self.inbound(params)

    def touch(self, found: _Found, now: datetime) -> None:
        self.conn.execute(_TOUCH_IDENTITY, {"iid": found.id, "now": now})
        self.conn.execute(_TOUCH_RESIDENT, {"rid": found.resident_id, "now": now})
