"""A built SQLAlchemy Core statement run straight through psycopg 3 on PostgreSQL.

The bot's few statements per message (the message log's two writes, a status lookup, a form's
duplicate search and its ticket) are SQLAlchemy Core statements built once at import. Run
through ``Connection.execute`` each still pays SQLAlchemy's per-call machinery: a ``Connection``
object, the compiled-cache lookup, an execution context, a ``CursorResult``; and on the
autocommit engine the isolation level set and reset around every checkout. Measured on one
status lookup (``SELECT`` by ticket, PostgreSQL on loopback): ≈ 490 µs of CPU through
SQLAlchemy against ≈ 165 µs here. This is a way of *running* the same statement, not a second
copy of it: SQLAlchemy compiles it once (PostgreSQL text with the casts its psycopg dialect
renders), and its types' own bind and result processors are applied to parameters and rows
(``UTCDateTime`` still hands back aware UTC datetimes), so a caller gets what
``Connection.execute`` would have given it. Elsewhere (SQLite) callers keep SQLAlchemy's path:
:func:`for_engine` returns None.

Connections are opened through the engine's pool (its connect arguments and events apply),
then kept here between uses (:meth:`DirectPg.connection`), in psycopg's autocommit mode: one
statement is one transaction; :meth:`DirectPg.transaction` groups several.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event

#: Connections kept between uses, at most (an inbox uses ``PCRM_INBOX_THREADS``, 4, at once; other
#: threads a few more now and then).
KEEP_IDLE = 8
#: ``psycopg.pq.TransactionStatus.IDLE`` (psycopg is imported only where PostgreSQL is used: a
#: SQLite start-up does not pay for it).
_IDLE = 0
#: Statements compiled, at most (the bot's are a dozen).
MAX_PREPARED = 256


class ConnectionLost(RuntimeError):
    """The pooled connection was dead (the database restarted or went away); the pool's older
    connections are invalidated, so one retry gets a new one, as with SQLAlchemy's
    ``DBAPIError.connection_invalidated``."""

    connection_invalidated = True


@dataclass(slots=True)
class Prepared:
    """A statement compiled once: its text, its constant parameters, what to do with values."""

    text: str
    #: Parameters the statement carries itself (``status == "open"``), merged under the caller's.
    constants: dict[str, Any]
    #: The bind processors of the parameters whose type has one (``UTCDateTime``: to UTC).
    binds: dict[str, Callable[[Any], Any]]
    #: The row type (the statement's column names) and the columns' types.
    row: Any
    types: tuple[Any, ...]
    #: A result processor per column (or None), set on the first execution: some depend on the
    #: type the server reports (a ``Float`` column's processor on its numeric type's OID).
    results: tuple[Callable[[Any], Any] | None, ...] | None = None


class DirectPg:
    """Runs Core statements on ``engine`` (PostgreSQL through psycopg) without SQLAlchemy's per-call
    machinery; see the module docstring."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._prepared: dict[Any, Prepared] = {}
        #: Connections between uses (LIFO: the most recently used, warm one first), with the
        #: generation they were opened in; list append/pop are atomic, so no lock.
        self._idle: list[tuple[Any, int]] = []
        self._generation = 0
        self._pid = os.getpid()
        event.listen(engine, "engine_disposed", lambda _engine: self.close_idle())
        #: Statements sent and transactions committed (bench/hot_path.py reports them per message).
        self.statements = 0
        self.transactions = 0

    # --- connections ---------------------------------------------------------------------
    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A psycopg connection in autocommit mode, kept between uses.

        The engine's pool made it (its connect arguments, ``search_path`` and events apply), then
        let it go (``detach``): a checkout and check-in through the pool, with the autocommit
        switch on and off around each, were ≈ 11 % of an inbox thread's CPU, for connections
        that are busy all the time anyway. At most :data:`KEEP_IDLE` wait here; the rest close.
        A dead connection (the database restarted or went away) closes every one kept, marks the
        pool's older connections invalid, and raises :class:`ConnectionLost` (callers retry once).
        """
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours to use
            self._idle, self._pid = [], os.getpid()
        try:
            conn, generation = self._idle.pop()
        except IndexError:
            conn, generation = self._open(), self._generation
        try:
            yield conn
        except Exception as exc:
            if conn.closed or conn.broken:
                self._lost(exc)
                raise ConnectionLost(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
            raise
        finally:
            if (conn.closed or conn.broken or generation != self._generation or len(self._idle) >= KEEP_IDLE
                    or conn.info.transaction_status != _IDLE):
                with suppress(Exception):
                    conn.close()
            else:
                self._idle.append((conn, generation))

    def _open(self) -> Any:
        fairy = self.engine.raw_connection()
        conn = fairy.driver_connection
        assert conn is not None
        fairy.detach()  # ours now: closed by close_idle(), when the database is lost, or when not kept
        conn.autocommit = True
        return conn

    def _lost(self, exc: BaseException) -> None:
        """The database restarted or went away: no kept connection is used again, and the pool's
        connections older than now are replaced on their next checkout (as SQLAlchemy does on a
        disconnect)."""
        self.close_idle()
        self.engine.pool._invalidate(None, exc)  # type: ignore[arg-type]  # noqa: SLF001

    def close_idle(self) -> None:
        """Close the connections kept between uses, and those in use when they come back (the
        engine's ``dispose`` calls this)."""
        self._generation += 1
        idle, self._idle = self._idle, []
        if self._pid != os.getpid():
            return
        for conn, _generation in idle:
            with suppress(Exception):
                conn.close()

    # --- statements ----------------------------------------------------------------------
    def prepare(self, stmt: Any) -> Prepared:
        """``stmt`` compiled for this engine's dialect (once per statement object: for statements
        built once, at import; one built per call would be compiled every time, and is refused
        after :data:`MAX_PREPARED` so it cannot grow this cache without end)."""
        got = self._prepared.get(stmt)
        if got is not None:
            return got
        if len(self._prepared) >= MAX_PREPARED:
            raise ValueError("more statements than any caller builds once: build it at import, or use SQLAlchemy")
        dialect = self.engine.dialect
        compiled = stmt.compile(dialect=dialect)
        text = str(compiled)
        if "POSTCOMPILE" in text:
            raise ValueError("expanding (IN) and literal-execute parameters are not supported here")
        binds = {}
        for bind, name in compiled.bind_names.items():
            proc = bind.type._cached_bind_processor(dialect)  # noqa: SLF001 - SQLAlchemy's own per-type cache
            if proc is not None:
                binds[name] = proc
        exported = stmt.exported_columns  # a SELECT's columns, or what an INSERT/UPDATE returns
        names = list(exported.keys())
        got = Prepared(text, {k: v for k, v in compiled.params.items() if v is not None}, binds,
                       namedtuple("Row", names, rename=True) if names else tuple, tuple(c.type for c in exported))
        self._prepared[stmt] = got
        return got

    def execute(self, conn: Any, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Run ``stmt`` on ``conn`` (from :meth:`connection`); its rows, processed as SQLAlchemy would."""
        p = self.prepare(stmt)
        values = params or {}
        if p.constants or p.binds:  # a copy: the caller's dict is not changed
            values = {**p.constants, **values}
            for name, proc in p.binds.items():
                if name in values:
                    values[name] = proc(values[name])
        self.statements += 1
        cur = conn.execute(p.text, values)
        result = cur.pgresult
        if result is None or not result.nfields:  # no columns (not ``description``: a list built per access)
            return []
        results = p.results
        if results is None:
            dialect = self.engine.dialect
            results = p.results = tuple(
                t._cached_result_processor(dialect, d.type_code)  # noqa: SLF001 - SQLAlchemy's own per-type cache
                for t, d in zip(p.types, cur.description, strict=True))
        make = p.row._make if p.row is not tuple else tuple
        if not any(results):
            return [make(r) for r in cur.fetchall()]
        return [make(v if f is None else f(v) for f, v in zip(results, r, strict=True)) for r in cur.fetchall()]

    def rows(self, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """``stmt``'s rows, in a statement of its own (autocommit)."""
        with self.connection() as conn:
            self.transactions += 1
            return self.execute(conn, stmt, params)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A connection in one transaction (committed on leaving, rolled back on an exception);
        run statements on it with :meth:`execute`."""
        with self.connection() as conn, conn.transaction():
            self.transactions += 1
            yield conn


def for_engine(engine: Engine | None) -> DirectPg | None:
    """The :class:`DirectPg` of a PostgreSQL engine on psycopg 3 (one per engine, kept on it: the
    message log and the request store share its connections, statements and counts); None
    elsewhere (SQLite)."""
    if engine is None or engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return None
    got = engine.__dict__.get("_pcrm_direct")
    if got is None:
        got = engine.__dict__["_pcrm_direct"] = DirectPg(engine)
    return got
