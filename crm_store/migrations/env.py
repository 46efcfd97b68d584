"""Alembic environment.

The URL comes from ``config.attributes["url"]`` (set by :func:`crm_store.db.upgrade`),
else ``sqlalchemy.url`` from an ini file, else ``DATABASE_URL`` / the default.
Engines are built by :func:`crm_store.db.make_engine`, so migrations see the same
pragmas and ``search_path`` as the application.  ``render_as_batch`` lets later
revisions alter tables on SQLite, which cannot ``ALTER`` most things in place.
"""

from __future__ import annotations

from alembic import context

from crm_store.db import make_engine, resolve_url
from crm_store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return resolve_url(config.attributes.get("url") or config.get_main_option("sqlalchemy.url"))


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a live database (an existing connection if one was passed in)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url(), config.attributes.get("schema"))
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    # SQLAlchemy 2 connections autobegin; make sure the migration is committed.
    commit = getattr(connection, "commit", None)
    if callable(commit):
        commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
