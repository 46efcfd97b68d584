"""Call-backs become records of their own: ``callback_tasks``.

A call-back used to be two phrases appended to the hand-off's summary ("콜백 요청 번호: …"),
masked on every screen, with nowhere to record that the agent called.  The table keeps the
number (revealed to staff with an audit row), the resident's message, the due time from
business hours, the attempts and the outcome.  Existing summaries are left as they are.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 18:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "callback_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=True),
        sa.Column("department", sa.String(length=32), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('open', 'done')", name=op.f("ck_callback_tasks_status")),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_callback_tasks_agent_id_agents")),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name=op.f("fk_callback_tasks_conversation_id_conversations")),
        sa.ForeignKeyConstraint(["handoff_id"], ["handoffs.id"], name=op.f("fk_callback_tasks_handoff_id_handoffs")),
        sa.ForeignKeyConstraint(["resident_id"], ["residents.id"],
                                name=op.f("fk_callback_tasks_resident_id_residents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_tasks")),
    )
    op.create_index(op.f("ix_callback_tasks_handoff_id"), "callback_tasks", ["handoff_id"], unique=False)
    op.create_index(op.f("ix_callback_tasks_resident_id"), "callback_tasks", ["resident_id"], unique=False)
    op.create_index("ix_callback_tasks_status_due", "callback_tasks", ["status", "due_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_callback_tasks_status_due", table_name="callback_tasks")
    op.drop_index(op.f("ix_callback_tasks_resident_id"), table_name="callback_tasks")
    op.drop_index(op.f("ix_callback_tasks_handoff_id"), table_name="callback_tasks")
    op.drop_table("callback_tasks")
