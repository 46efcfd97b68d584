"""Engines, sessions and migrations.

URL precedence: an explicit ``url`` argument, then ``DATABASE_URL``, then the
local default ``sqlite:///var/pcrm.db`` (so ``make run`` needs no database server).
``postgresql://`` URLs are rewritten to the psycopg 3 driver we ship.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from bot.settings import StoreSettings

if TYPE_CHECKING:
    from alembic.config import Config

DEFAULT_URL = "sqlite:///var/pcrm.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: One lock per SQLite file, shared by every engine of this process on that file.
_SQLITE_GATES: dict[str, threading.Lock] = {}
_GATE_TIMEOUT_S = 30.0


def resolve_url(url: str | URL | None = None) -> str:
    """The database URL to use, with the driver made explicit.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://`` (SQLAlchemy
    would otherwise look for psycopg2, which we do not install).
    """
    raw = url if url is not None else StoreSettings().database_url or DEFAULT_URL
    parsed = make_url(raw)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _check_schema(schema: str) -> str:
    """Schema names go into SQL and connection options: only plain identifiers."""
    if not _SCHEMA_RE.match(schema):
        raise ValueError(f"invalid schema name: {schema!r}")
    return schema


def _sqlite_setup(engine: Engine) -> None:
    """WAL, foreign keys, a busy timeout, and real transactions on SQLite.

    pysqlite opens transactions lazily and never around SAVEPOINTs; taking over
    ``BEGIN`` (the recipe from the SQLAlchemy docs) makes ``begin_nested`` work,
    which duplicate-delivery detection relies on.
    """

    synchronous = _sqlite_synchronous()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    # One writer at a time, and waiting in line in-process. A deferred ``BEGIN`` that reads
    # and then writes fails at once with "database is locked" (WAL never busy-waits there)
    # when another connection wrote in between, which concurrent conversations on one
    # server do all the time; so transactions start ``IMMEDIATE``. And SQLite's own busy
    # wait polls with sleeps of up to 100 ms, which under load starves some waiters for
    # seconds; so threads of this process first queue on a lock (woken on release).
    # The lock is released once the COMMIT (or ROLLBACK) has *run*: SQLAlchemy's
    # ``commit``/``rollback`` events fire before it, and a lock released there let the next
    # thread's ``BEGIN IMMEDIATE`` meet the still-open transaction and sleep in SQLite's busy
    # loop while holding the lock, every other thread queued behind it (a thread that lost
    # the GIL between the event and its COMMIT made that a wait of tens of milliseconds).
    path = engine.url.database
    gate = _SQLITE_GATES.setdefault(os.path.abspath(path), threading.Lock()) if path not in (None, "", ":memory:") \
        else None

    def _release(info: dict[str, Any]) -> None:
        if gate is not None and info.pop("pcrm_gate", False):
            gate.release()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if gate is not None:
            if not gate.acquire(timeout=_GATE_TIMEOUT_S):
                raise TimeoutError(f"SQLite {path}: no turn to write within {_GATE_TIMEOUT_S:.0f} s")
            conn.info["pcrm_gate"] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(conn.info)
            raise

    dialect = engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    def _info(dbapi_conn: Any) -> dict[str, Any]:
        try:
            return dbapi_conn.info
        except (AttributeError, NotImplementedError):  # a raw or ad-hoc connection (first connect)
            return {}

    def _commit_then_release(dbapi_conn: Any) -> None:
        try:
            do_commit(dbapi_conn)
        finally:
            _release(_info(dbapi_conn))

    def _rollback_then_release(dbapi_conn: Any) -> None:
        try:
            do_rollback(dbapi_conn)
        finally:
            _release(_info(dbapi_conn))

    dialect.do_commit = _commit_then_release  # type: ignore[method-assign]  # this engine's dialect only
    dialect.do_rollback = _rollback_then_release  # type: ignore[method-assign]

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:  # a connection dropped mid-transaction
        _release(record.info)


def _sqlite_synchronous() -> str:
    """``PCRM_SQLITE_SYNCHRONOUS`` (default ``NORMAL``).

    SQLite's default, FULL, syncs the write-ahead log to disk on every commit: two fsyncs per
    message, each taken while holding the one write lock every conversation queues on, so one
    slow fsync on a busy disk stalls them all. In WAL mode NORMAL syncs only at checkpoints; the
    database cannot be corrupted by a crash, but a power cut may lose the last commits (the
    SQLite documentation's recommended setting for WAL). FULL for those who prefer that.
    """
    return StoreSettings().pcrm_sqlite_synchronous


def make_engine(url: str | URL | None = None, schema: str | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (see :func:`resolve_url`).

    ``schema`` (PostgreSQL only) sets the connection's ``search_path`` so a test run
    or a second municipality can live in its own schema of a shared database.
    SQLite files get their directory created (``var/`` on a fresh checkout).
    """
    parsed = make_url(resolve_url(url))
    connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        _sqlite_setup(engine)
        return engine
    if schema is not None:
        if parsed.get_backend_name() != "postgresql":
            raise ValueError("the schema option is for PostgreSQL only")
        connect_args["options"] = f"-csearch_path={_check_schema(schema)}"
    # No ping on every checkout (a round trip and its CPU per transaction): connections
    # are reused LIFO, and only one that sat idle in the pool for a while is pinged first
    # (a database restart is then noticed before use). A connection that fails in use
    # invalidates the whole pool (SQLAlchemy's disconnect handling); the inbox retries once.
    ping_idle = kwargs.pop("pool_ping_idle_s", PING_IDLE_S)
    kwargs.setdefault("pool_pre_ping", False)
    kwargs.setdefault("pool_use_lifo", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 30)
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    if not kwargs["pool_pre_ping"]:
        _ping_idle_connections(engine, ping_idle)
    return engine


#: A pooled connection idle for longer than this is pinged before use.
PING_IDLE_S = 2.0


def _ping_idle_connections(engine: Engine, idle_s: float) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["pcrm_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("pcrm_idle_since")
        if since is None or time.monotonic() - since <= idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool retries with a new connection
            raise DisconnectionError(f"idle connection is dead: {type(exc).__name__}") from exc


def make_session_factory(
    url: str | URL | None = None, schema: str | None = None, engine: Engine | None = None
) -> sessionmaker[Session]:
    """A session factory on ``engine`` (or a new engine for ``url``/``schema``).

    ``expire_on_commit=False`` lets a web request hand objects from one short
    transaction (identify the resident, record the message) to the next (record the
    bot's answer) without reloading them.
    """
    return sessionmaker(bind=engine or make_engine(url, schema), expire_on_commit=False)


def alembic_config(url: str | URL | None = None, schema: str | None = None) -> Config:
    """An Alembic ``Config`` built in code: no ``alembic.ini`` at the repo root needed.

    ``script_location`` is this package's ``migrations`` directory, so it works from
    an installed wheel; the URL and schema travel in ``config.attributes``.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = resolve_url(url)
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(url: str | URL | None = None, schema: str | None = None, revision: str = "head") -> None:
    """``alembic upgrade head`` for ``url`` (creating ``schema`` on PostgreSQL if needed)."""
    from alembic import command

    if schema is not None:
        if make_url(resolve_url(url)).get_backend_name() != "postgresql":
            raise ValueError("the schema option is for PostgreSQL only")
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{_check_schema(schema)}"'))
        finally:
            engine.dispose()
    command.upgrade(alembic_config(url, schema), revision)
