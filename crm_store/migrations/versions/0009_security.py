"""Server-side console sessions and the resident's consent to publication.

* ``console_sessions``: one row per console login (the cookie holds a random token, the row its
  SHA-256), so sessions can be listed, revoked at logout or on a password change, and time out
  when idle. Stateless signed cookies of earlier versions stop working: staff log in again.
* ``service_requests.public_consent`` (default false): whether the resident agreed that their
  own words and exact address may appear in the public Open311 feed. Existing requests get
  false: nobody was asked.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 17:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_console_sessions_agent_id_agents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_sessions_token_hash")),
    )
    op.create_index(op.f("ix_console_sessions_agent_id"), "console_sessions", ["agent_id"], unique=False)
    with op.batch_alter_table("service_requests") as batch:
        batch.add_column(sa.Column("public_consent", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("service_requests") as batch:
        batch.drop_column("public_consent")
    op.drop_index(op.f("ix_console_sessions_agent_id"), table_name="console_sessions")
    op.drop_table("console_sessions")
