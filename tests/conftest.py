"""Shared fixtures.

``db_url``: a migrated, empty database, once on SQLite (a temporary file) and once
on PostgreSQL (a random schema of ``postgresql+psycopg://postgres@127.0.0.1:5432/test``,
created for the test session and dropped at its end).  The PostgreSQL URL carries
the schema in its ``options`` query, so ``create_engine(db_url)`` and
``crm_store.db.make_engine(db_url)`` both land in the right schema.
Without a reachable PostgreSQL its tests skip, unless ``CI=true`` (then they fail).

``session_factory``: a ``sessionmaker`` on ``db_url``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from crm_store.db import make_session_factory, upgrade
from crm_store.models import Base

pytest_plugins = ["tests.fixtures_server", "tests.fixtures_browser"]

# Engines under test answer from the fixture knowledge base, not the city's nlu_data/knowledge:
# content staff edit must not break dialogue tests (tests/data/kb holds the 12 catalog topics).
os.environ.setdefault("PCRM_KB_DIR", os.path.join(os.path.dirname(__file__), "data", "kb"))

POSTGRES_URL = os.environ.get("PCRM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    """A fresh migrated schema for this test session; yields a URL pinned to it."""
    schema = f"pcrm_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "not available"
        admin.dispose()
        reason = f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}: {exc}".splitlines()[0]
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        upgrade(POSTGRES_URL, schema=schema)
        yield f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _truncate_all(url: str) -> None:
    """Empty every table (PostgreSQL tests share one schema per session)."""
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a migrated, empty database (SQLite file or PostgreSQL schema)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'pcrm.db'}"
        upgrade(url)
        return url
    url = request.getfixturevalue("postgres_schema_url")
    _truncate_all(url)
    return url


@pytest.fixture
def session_factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A ``sessionmaker`` on ``db_url`` (engine disposed after the test)."""
    factory = make_session_factory(db_url)
    yield factory
    bind = factory.kw["bind"]
    bind.dispose()
