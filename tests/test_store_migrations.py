"""Migrations build the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, insert, inspect, select, text
from sqlalchemy.orm import Session

from crm_store.db import alembic_config, make_engine, resolve_url, upgrade
from crm_store.models import AuditLog, Base, Conversation, Handoff, HandoffNote
from tests.conftest import POSTGRES_URL


def test_upgrade_creates_every_table_and_matches_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert set(Base.metadata.tables) <= tables
            assert "alembic_version" in tables
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_trigram_index_flushes_its_pending_list_in_small_steps(postgres_schema_url: str) -> None:
    """Migration 0011: a 4 MB pending list was one 50-70 ms flush inside some resident's insert
    every few thousand messages; 128 kB makes each flush small (bench/load.py's tail)."""
    engine = make_engine(postgres_schema_url)
    try:
        with engine.connect() as conn:
            options = conn.execute(text(
                "SELECT c.reloptions FROM pg_class c WHERE c.relname = 'ix_interactions_text_trgm' "
                "AND pg_table_is_visible(c.oid)")).scalar_one()
        assert "gin_pending_list_limit=128" in options
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is not None
    engine.dispose()


def test_default_url_creates_var_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    upgrade()
    assert (tmp_path / "var" / "pcrm.db").exists()


def test_database_url_env_wins_over_default_and_postgres_gets_psycopg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/pcrm")
    assert resolve_url() == "postgresql+psycopg://u:p@db:5432/pcrm"
    assert resolve_url("postgres://u@h/x") == "postgresql+psycopg://u@h/x"
    assert resolve_url("sqlite:///a.db") == "sqlite:///a.db"
    monkeypatch.delenv("DATABASE_URL")
    assert resolve_url() == "sqlite:///var/pcrm.db"


def test_sqlite_durability_is_a_checked_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydantic import ValidationError

    from bot.settings import Settings

    def synchronous(name: str) -> int:
        with make_engine(f"sqlite:///{tmp_path / name}").connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())

    assert synchronous("default.db") == 1  # NORMAL
    monkeypatch.setenv("PCRM_SQLITE_SYNCHRONOUS", "full")
    assert Settings().pcrm_sqlite_synchronous == "FULL" and synchronous("full.db") == 2
    monkeypatch.setenv("PCRM_SQLITE_SYNCHRONOUS", "sometimes")  # was silently NORMAL: now named at start
    with pytest.raises(ValidationError, match="pcrm_sqlite_synchronous"):
        Settings()


def test_schema_option_rejects_sql_and_non_postgres() -> None:
    with pytest.raises(ValueError):
        make_engine("postgresql://u@h/x", schema="x; drop table y")
    with pytest.raises(ValueError):
        upgrade("sqlite:///ignored.db", schema="other")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of a database migrated to 0002 only: notes were still audit rows."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        upgrade(url, revision="0002")
        yield url, None
        return
    request.getfixturevalue("postgres_schema_url")  # skips (or fails on CI) without PostgreSQL
    schema = f"pcrm_mig_{uuid.uuid4().hex[:10]}"
    upgrade(POSTGRES_URL, schema=schema, revision="0002")
    try:
        yield POSTGRES_URL, schema
    finally:
        admin = create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def test_upgrade_moves_old_audit_notes_into_handoff_notes(at_0002: tuple[str, str | None]) -> None:
    url, schema = at_0002
    t0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    engine = make_engine(url, schema)
    try:
        with engine.begin() as conn:
            assert "handoff_notes" not in inspect(conn).get_table_names()
            conv = conn.execute(insert(Conversation).values(key="rest:old", channel="rest")
                                .returning(Conversation.id)).scalar_one()
            hid = conn.execute(insert(Handoff).values(conversation_id=conv, department="waste", queued_at=t0)
                               .returning(Handoff.id)).scalar_one()
            conn.execute(insert(AuditLog), [
                # inserted out of order: the second note was written later but lands first here
                {"who": "lee", "action": "console.note", "target": f"handoff:{hid}|둘째 메모",
                 "created_at": t0.replace(hour=11)},
                {"who": "kim", "action": "console.note", "target": f"handoff:{hid}|첫 메모 | 파이프 포함",
                 "created_at": t0.replace(hour=10)},
                {"who": "kim", "action": "console.note", "target": f"handoff:{hid + 1000}|지워진 상담",
                 "created_at": t0},
                {"who": "kim", "action": "console.claim", "target": f"handoff:{hid}", "created_at": t0},
                {"who": "kim", "action": "console.transfer", "target": f"handoff:{hid}|waste->tax|x",
                 "created_at": t0},
            ])
        cfg = alembic_config(url, schema)
        command.upgrade(cfg, "head")
        with Session(engine) as s:
            notes = s.scalars(select(HandoffNote).order_by(HandoffNote.created_at, HandoffNote.id)).all()
            assert [(n.handoff_id, n.who, n.text, n.created_at) for n in notes] == [
                (hid, "kim", "첫 메모 | 파이프 포함", t0.replace(hour=10)),
                (hid, "lee", "둘째 메모", t0.replace(hour=11)),
            ]
            assert len(s.scalars(select(AuditLog)).all()) == 5  # the audit rows stay
        command.downgrade(cfg, "0002")
        with engine.connect() as conn:
            assert "handoff_notes" not in inspect(conn).get_table_names()
            assert conn.execute(select(AuditLog.target).where(AuditLog.action == "console.note")).all()
    finally:
        engine.dispose()
