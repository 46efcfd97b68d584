"""Core statements run straight through psycopg (crm_store/direct.py) give what SQLAlchemy gives.

The request store's per-message reads and its ticket transaction take this way on PostgreSQL;
these tests hold it to SQLAlchemy's own results on the same rows (types processed, constants
bound, rollbacks), and check that SQLite keeps SQLAlchemy's path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from bot.service_requests import DuplicateRule, RequestDraft
from crm_store import conversations, residents
from crm_store.db import make_session_factory
from crm_store.direct import for_engine
from crm_store.models import ServiceRequest
from crm_store.requests import _BY_TICKET, SqlRequestStore

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_schema_url: str) -> sessionmaker[Session]:
    from tests.conftest import _truncate_all

    _truncate_all(postgres_schema_url)
    factory = make_session_factory(postgres_schema_url)
    yield factory
    factory.kw["bind"].dispose()


def _resident_with_conversation(factory: sessionmaker[Session], sender: str) -> None:
    with factory.begin() as s:
        r = residents.identify(s, "rest", sender)
        conversations.get_or_create(s, f"rest:{sender}", "rest", r)


def test_rows_match_sqlalchemys_own_for_the_same_statement(pg: sessionmaker[Session]) -> None:
    _resident_with_conversation(pg, "amy")
    store = SqlRequestStore(pg)
    rec = store.open(RequestDraft(service_code="roads.pothole", department="roads", description="구멍",
                                  address_string="중앙로 7", lat=37.5, long=127.0, channel="rest", sender_id="amy"))
    direct = for_engine(pg.kw["bind"])
    assert direct is not None
    fast = direct.rows(_BY_TICKET, {"ticket": rec.ticket})
    with pg.kw["bind"].connect() as conn:
        slow = list(conn.execute(_BY_TICKET, {"ticket": rec.ticket}))
    assert len(fast) == len(slow) == 1
    assert tuple(fast[0]) == tuple(slow[0])
    assert fast[0].key == "rest:amy" and fast[0].lat == 37.5
    assert fast[0].requested_datetime.tzinfo is not None and fast[0].requested_datetime.utcoffset() == timedelta(0)


def test_a_statements_own_constants_and_typed_parameters_are_bound(pg: sessionmaker[Session]) -> None:
    _resident_with_conversation(pg, "bo")
    store = SqlRequestStore(pg)
    store.open(RequestDraft(service_code="roads.pothole", department="roads", description="구멍",
                            address_string="중앙로 8", channel="rest", sender_id="bo"))
    direct = for_engine(pg.kw["bind"])
    assert direct is not None
    sr = ServiceRequest.__table__
    since = bindparam("since", type_=sr.c.requested_datetime.type)
    stmt = select(sr.c.service_request_id).where(sr.c.status == "open",  # a constant the statement carries
                                                 sr.c.requested_datetime >= since)
    seoul = datetime.now(UTC).astimezone().replace(tzinfo=None)  # naive: the bind processor makes it UTC
    assert len(direct.rows(stmt, {"since": seoul - timedelta(hours=30)})) == 1
    assert direct.rows(stmt, {"since": datetime.now(UTC) + timedelta(hours=1)}) == []


def test_an_exception_in_a_transaction_rolls_it_back(pg: sessionmaker[Session]) -> None:
    direct = for_engine(pg.kw["bind"])
    assert direct is not None
    from crm_store.requests import _BUMP
    from crm_store.tickets import next_ticket

    with pg.begin() as s:
        next_ticket(s, 2026)  # the year's counter row: 2026-000001
    with pytest.raises(RuntimeError), direct.transaction() as conn:
        assert direct.execute(conn, _BUMP, {"y": 2026})[0][0] == 2
        raise RuntimeError("the caller gave up")
    assert direct.rows(_BUMP, {"y": 2026})[0][0] == 2, "the first bump was rolled back"


def test_the_request_stores_reads_and_tickets_go_straight_through_psycopg(pg: sessionmaker[Session]) -> None:
    _resident_with_conversation(pg, "cy")
    store = SqlRequestStore(pg)
    direct = for_engine(pg.kw["bind"])
    assert direct is not None
    store.open(RequestDraft(service_code="roads.water", department="water", description="누수",
                            address_string="중앙로 1", channel="rest", sender_id="cy"))  # the year's first: ORM
    before = direct.statements
    rec = store.open(RequestDraft(service_code="roads.pothole", department="roads", description="구멍",
                                  address_string="중앙로 9", lat=37.5, long=127.0, channel="rest", sender_id="cy"))
    assert store.get(rec.ticket) is not None
    assert [r.ticket for r in store.recent_for("rest:cy")][0] == rec.ticket
    dup = store.find_duplicate("roads.pothole", "중앙로 9", 37.5, 127.0, rule=DuplicateRule())
    assert dup is not None and dup.ticket == rec.ticket and dup.sender_key == "rest:cy"
    assert direct.statements - before >= 5, "bump + insert, get, recent_for, find_duplicate"


def test_sqlite_keeps_sqlalchemys_path(tmp_path) -> None:  # noqa: ANN001
    from crm_store.db import upgrade

    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    factory = make_session_factory(url)
    assert for_engine(factory.kw["bind"]) is None
    _resident_with_conversation(factory, "di")
    store = SqlRequestStore(factory)
    rec = store.open(RequestDraft(service_code="roads.pothole", department="roads", description="구멍",
                                  address_string="중앙로 10", channel="rest", sender_id="di"))
    got = store.get(rec.ticket)
    assert got is not None and got.sender_key == "rest:di"
    factory.kw["bind"].dispose()


def test_a_connection_the_database_dropped_is_reported_once_then_replaced(pg: sessionmaker[Session]) -> None:
    """A kept connection whose server process is gone (a database restart): the call raises
    ConnectionLost (``connection_invalidated``, so the inbox retries once), and the next call works
    on a new connection; none of the kept ones is used again."""
    from sqlalchemy import create_engine, text

    from crm_store.direct import ConnectionLost

    _resident_with_conversation(pg, "ed")
    store = SqlRequestStore(pg)
    rec = store.open(RequestDraft(service_code="roads.pothole", department="roads", description="구멍",
                                  address_string="중앙로 11", channel="rest", sender_id="ed"))
    direct = for_engine(pg.kw["bind"])
    assert direct is not None
    assert store.get(rec.ticket) is not None
    kept = [conn.info.backend_pid for conn, _gen in direct._idle]  # noqa: SLF001
    assert kept, "the connection is kept between uses"
    admin = create_engine(pg.kw["bind"].url)
    with admin.begin() as conn:
        for pid in kept:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    admin.dispose()
    with pytest.raises(ConnectionLost) as lost:
        store.get(rec.ticket)
    assert lost.value.connection_invalidated
    got = store.get(rec.ticket)
    assert got is not None and got.ticket == rec.ticket
    assert all(conn.info.backend_pid not in kept for conn, _gen in direct._idle)  # noqa: SLF001


def test_disposing_the_engine_closes_the_kept_connections(pg: sessionmaker[Session]) -> None:
    direct = for_engine(pg.kw["bind"])
    assert direct is not None
    assert direct.rows(_BY_TICKET, {"ticket": "2026-000001"}) == []
    conns = [conn for conn, _gen in direct._idle]  # noqa: SLF001
    assert conns
    pg.kw["bind"].dispose()
    assert all(conn.closed for conn in conns)


def test_a_statement_built_per_call_cannot_grow_the_compiled_cache_without_end(pg: sessionmaker[Session]) -> None:
    from crm_store import direct as direct_module

    direct = for_engine(pg.kw["bind"])
    assert direct is not None
    sr = ServiceRequest.__table__
    with pytest.raises(ValueError, match="build it at import"):
        for i in range(direct_module.MAX_PREPARED + 1):
            direct.rows(select(sr.c.id).where(sr.c.id == i))
    assert len(direct._prepared) == direct_module.MAX_PREPARED  # noqa: SLF001


def test_a_sqlite_server_does_not_import_psycopg_to_start() -> None:
    """The direct path names psycopg's idle status by value, so importing it costs a SQLite
    start-up nothing (psycopg loads when a PostgreSQL engine connects)."""
    import subprocess
    import sys

    from psycopg.pq import TransactionStatus

    from crm_store import direct as direct_module

    assert direct_module._IDLE == TransactionStatus.IDLE  # noqa: SLF001
    code = "import sys, bot.app, bot.serve, bot.cli; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
