"""SQLite's one writer: the process's threads wait for it in a line of their own, never in SQLite's busy loop.

``crm_store.db`` makes every transaction ``BEGIN IMMEDIATE`` behind an in-process lock. The
lock must be handed on only once the previous transaction's COMMIT or ROLLBACK has run: handed
on earlier (SQLAlchemy's ``commit`` event fires *before* the COMMIT), the next thread's
``BEGIN IMMEDIATE`` met a transaction still open and slept in SQLite's busy handler (sleeps of
1 to 100 ms) while holding the lock, with every other thread queued behind it.

The busy timeout is set to 0 here, so a ``BEGIN IMMEDIATE`` that meets an open transaction
fails at once instead of waiting: the tests see the overlap instead of timing it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from crm_store.db import make_engine

SLOW_S = 0.2  # how long the first writer dawdles between the commit event and its COMMIT


def _engine(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_conn: Any, _record: Any) -> None:  # after crm_store's own listener
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (who TEXT)"))
    return engine


def _second_writer_after_a_slow_first(engine: Any, finish: str) -> list[str]:
    """Thread A writes and then dawdles (like a thread that lost the GIL) just before its
    COMMIT or ROLLBACK; thread B starts a transaction meanwhile. What B met, in order."""
    seen: list[str] = []
    a_writing = threading.Event()

    @event.listens_for(engine, finish)
    def _dawdle(_conn: Any) -> None:  # registered after crm_store's listeners
        if threading.current_thread().name == "A":
            time.sleep(SLOW_S)

    def a() -> None:
        with engine.connect() as c:
            c.begin()
            c.execute(text("INSERT INTO t VALUES ('a')"))
            a_writing.set()
            if finish == "commit":
                c.commit()
            else:
                c.rollback()
        seen.append(f"A: {finish} done")

    def b() -> None:
        a_writing.wait(5)
        try:
            with engine.begin() as c:
                c.execute(text("INSERT INTO t VALUES ('b')"))
            seen.append("B wrote")
        except Exception as exc:  # noqa: BLE001 - "database is locked" is what this test looks for
            seen.append(f"B failed: {exc.__class__.__name__}")

    threads = [threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return seen


def test_the_next_writer_begins_only_after_the_commit_has_run(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        assert _second_writer_after_a_slow_first(engine, "commit") == ["A: commit done", "B wrote"]
        with engine.connect() as c:
            assert sorted(r[0] for r in c.execute(text("SELECT who FROM t"))) == ["a", "b"]
    finally:
        engine.dispose()


def test_the_next_writer_begins_only_after_the_rollback_has_run(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        assert _second_writer_after_a_slow_first(engine, "rollback") == ["A: rollback done", "B wrote"]
        with engine.connect() as c:
            assert [r[0] for r in c.execute(text("SELECT who FROM t"))] == ["b"]
    finally:
        engine.dispose()


def test_a_connection_returned_mid_transaction_hands_the_lock_on(tmp_path: Path) -> None:
    """A transaction abandoned without commit or rollback (its connection closed) must not keep
    the other threads waiting for the lock's 30 s timeout."""
    engine = _engine(tmp_path)
    try:
        c = engine.connect()
        c.begin()
        c.execute(text("INSERT INTO t VALUES ('lost')"))
        c.close()  # back to the pool: rolled back there
        started = time.monotonic()
        with engine.begin() as c2:
            c2.execute(text("INSERT INTO t VALUES ('next')"))
        assert time.monotonic() - started < 5
    finally:
        engine.dispose()
