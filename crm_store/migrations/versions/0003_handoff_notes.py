"""Agents' internal notes get their own table: ``handoff_notes``.

Notes used to be audit rows (``action='console.note'``, ``target='handoff:<id>|<text>'``, cut
at 255 characters).  The upgrade creates ``handoff_notes`` and copies every such note into it
(``who``, ``text`` and ``created_at`` as they were, oldest first), skipping notes whose hand-off
no longer exists.  The audit rows stay where they are: they are the trail that a note was
written.  The parsing is done in Python (one rule on every backend), so ``--sql`` (offline) mode
creates the table but cannot copy the notes; it says so in a warning.

The downgrade drops the table: notes written after the upgrade (whose audit rows no longer
carry the text) are lost with it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 02:30:00
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

NOTE_ACTION = "console.note"
#: The old note target; the id as the console wrote it (``f"handoff:{id}|{text}"``).
_TARGET = re.compile(r"handoff:([1-9][0-9]{0,17})\|(.*)", re.DOTALL)
_CHUNK = 500

# Lightweight tables: ``created_at`` untyped, so the stored value is copied as it is on each backend.
_audit = sa.table("audit_log", sa.column("id", sa.Integer), sa.column("who", sa.String), sa.column("action", sa.String),
                  sa.column("target", sa.String), sa.column("created_at"))
_handoffs = sa.table("handoffs", sa.column("id", sa.Integer))
_notes = sa.table("handoff_notes", sa.column("handoff_id", sa.Integer), sa.column("who", sa.String),
                  sa.column("text", sa.Text), sa.column("created_at"))


def upgrade() -> None:
    op.create_table(
        "handoff_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=False),
        sa.Column("who", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["handoff_id"], ["handoffs.id"], name=op.f("fk_handoff_notes_handoff_id_handoffs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handoff_notes")),
    )
    op.create_index(op.f("ix_handoff_notes_handoff_id"), "handoff_notes", ["handoff_id"], unique=False)
    if context.is_offline_mode():
        log.warning("offline mode: notes in audit_log ('%s') are not copied to handoff_notes", NOTE_ACTION)
        return
    _copy_notes(op.get_bind())


def _copy_notes(bind: sa.engine.Connection) -> None:
    rows = bind.execute(
        sa.select(_audit.c.who, _audit.c.target, _audit.c.created_at)
        .where(_audit.c.action == NOTE_ACTION, _audit.c.target.like("handoff:%|%"))
        .order_by(_audit.c.created_at, _audit.c.id)
    ).all()
    notes = []
    for who, target, created_at in rows:
        m = _TARGET.fullmatch(target)
        if m is not None:
            notes.append({"handoff_id": int(m.group(1)), "who": who, "text": m.group(2), "created_at": created_at})
    wanted = sorted({n["handoff_id"] for n in notes})
    existing: set[int] = set()
    for i in range(0, len(wanted), _CHUNK):
        existing.update(bind.scalars(sa.select(_handoffs.c.id).where(_handoffs.c.id.in_(wanted[i:i + _CHUNK]))))
    notes = [n for n in notes if n["handoff_id"] in existing]
    for i in range(0, len(notes), _CHUNK):
        bind.execute(_notes.insert(), notes[i:i + _CHUNK])
    if rows:
        log.info("copied %d of %d console notes into handoff_notes", len(notes), len(rows))


def downgrade() -> None:
    op.drop_index(op.f("ix_handoff_notes_handoff_id"), table_name="handoff_notes")
    op.drop_table("handoff_notes")
