"""Supervisor log indexes: trigrams for "text contains" (PostgreSQL), and messages handled by people.

``ix_interactions_people_created_at``: a partial index (``handled_by <> 'bot'``, both backends) on
``created_at``, for the "handled by an agent" filter (a small share of all rows).

``Interaction.text ILIKE '%…%'`` can use a GIN index with ``gin_trgm_ops`` (pg_trgm), Korean
included (multibyte characters form trigrams too). SQLite gets an empty partial index
(``WHERE 0``) of the same name, so the models (which declare it for both) match either backend.
When the extension cannot be created (no privilege, not installed) the index is skipped with a
warning: the search still works, just without the index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_interactions_text_trgm"
log = logging.getLogger("alembic.runtime.migration")


def _trgm_schema(bind: sa.engine.Connection) -> str | None:
    return bind.execute(sa.text(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'")).scalar()


def upgrade() -> None:
    op.create_index("ix_interactions_people_created_at", "interactions", ["created_at"],
                    postgresql_where=sa.text("handled_by <> 'bot'"), sqlite_where=sa.text("handled_by <> 'bot'"))
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON interactions (text) WHERE 0")
        return
    if _trgm_schema(bind) is None:
        try:
            with bind.begin_nested():
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        except sa.exc.DBAPIError as exc:  # no privilege / not installed: search works without the index
            log.warning("pg_trgm not available (%s); %s not created", str(exc).splitlines()[0], INDEX)
            return
    schema = _trgm_schema(bind)
    op.execute(f'CREATE INDEX IF NOT EXISTS {INDEX} ON interactions USING gin (text "{schema}".gin_trgm_ops)')


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.drop_index("ix_interactions_people_created_at", table_name="interactions")
