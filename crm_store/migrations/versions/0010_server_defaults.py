"""Column defaults in the database (``server_default``), not only in Python.

The message log (:mod:`crm_store.message_log`) inserts residents, identities, conversations,
messages and hand-offs with statements compiled once from the table metadata; the columns it
does not name (a new resident's language and consents, ``needs_tags``, a message's
``entities`` and ``handled_by``, a hand-off's ``status`` ...) take the database's defaults,
which used to be restated by hand in each statement. Existing rows are unchanged.

PostgreSQL only: there the statements are sent as compiled text, past SQLAlchemy's Python-side
defaults. On SQLite they run through SQLAlchemy, which fills the same defaults in, and altering a
column there means copying the table, which its foreign keys refuse while rows point at it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"

_LIST = sa.text("'[]'")
#: table -> (column, type, server default)
DEFAULTS: dict[str, list[tuple[str, sa.types.TypeEngine[object], object]]] = {
    "residents": [("preferred_lang", sa.String(8), "ko"), ("contact_consent", sa.Boolean(), sa.false()),
                  ("sms_opt_out", sa.Boolean(), sa.false()), ("needs_tags", sa.JSON(), _LIST)],
    "channel_identities": [("reachable", sa.Boolean(), sa.true())],
    "conversations": [("state_version", sa.Integer(), "0"), ("handed_off", sa.Boolean(), sa.false()),
                      ("status", sa.String(16), "active")],
    "interactions": [("text", sa.Text(), ""), ("entities", sa.JSON(), _LIST), ("handled_by", sa.String(64), "bot")],
    "handoffs": [("priority", sa.Integer(), "0"), ("reason", sa.String(255), ""), ("summary", sa.Text(), ""),
                 ("status", sa.String(8), "queued")],
}


def _set(defaults: bool) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in DEFAULTS.items():
        with op.batch_alter_table(table) as batch:
            for name, type_, default in columns:
                batch.alter_column(name, existing_type=type_, existing_nullable=False,
                                   server_default=default if defaults else None)


def upgrade() -> None:
    _set(True)


def downgrade() -> None:
    _set(False)
