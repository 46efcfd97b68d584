"""Migrations build the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from crm_store.db import make_engine, resolve_url, upgrade
from crm_store.models import Base


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


def test_schema_option_rejects_sql_and_non_postgres() -> None:
    with pytest.raises(ValueError):
        make_engine("postgresql://u@h/x", schema="x; drop table y")
    with pytest.raises(ValueError):
        upgrade("sqlite:///ignored.db", schema="other")
