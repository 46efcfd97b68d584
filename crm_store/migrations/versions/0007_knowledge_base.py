"""The knowledge base staff edit in the console: articles, their versions, the published revision.

* ``kb_articles``: one row per article id, with a summary of its newest version (titles,
  department, search text) and pointers to its newest and published version numbers.
* ``kb_article_versions``: every edit as a new row holding the whole article as JSON, with its
  status (draft, in_review, published, archived), author and reviewer; a partial unique index
  keeps at most one published version per article.
* ``kb_state``: one row, ``revision``, bumped whenever the published set changes; every worker
  polls it to reload the answers without a restart.
* ``kb_learned``: not-understood messages already dealt with in the learning loop.
* ``agents.role`` may now be ``editor`` (the content editors of the console).

The downgrade drops the four tables (every edit made in the console is lost; export the
published articles first with ``pcrm kb export DIR``) and turns editors into agents before
restoring the old role check.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 17:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_ROLES = "role IN ('agent', 'supervisor', 'admin', 'field')"
_NEW_ROLES = "role IN ('agent', 'supervisor', 'admin', 'field', 'editor')"


def upgrade() -> None:
    op.create_table(
        "kb_articles",
        sa.Column("id", sa.String(length=120), nullable=False),
        sa.Column("area", sa.String(length=64), nullable=False),
        sa.Column("department", sa.String(length=32), nullable=True),
        sa.Column("title_ko", sa.String(length=255), nullable=False),
        sa.Column("title_en", sa.String(length=255), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("latest_status", sa.String(length=16), nullable=False),
        sa.Column("published_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_articles")),
    )
    op.create_index(op.f("ix_kb_articles_area"), "kb_articles", ["area"], unique=False)
    op.create_table(
        "kb_article_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.String(length=120), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=True),
        sa.Column("note", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('draft', 'in_review', 'published', 'archived')",
                           name=op.f("ck_kb_article_versions_status")),
        sa.ForeignKeyConstraint(["article_id"], ["kb_articles.id"],
                                name=op.f("fk_kb_article_versions_article_id_kb_articles")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_article_versions")),
        sa.UniqueConstraint("article_id", "version", name="uq_kb_article_versions_article_id"),
    )
    op.create_index("ix_kb_article_versions_one_published", "kb_article_versions", ["article_id"], unique=True,
                    postgresql_where=sa.text("status = 'published'"), sqlite_where=sa.text("status = 'published'"))
    op.create_table(
        "kb_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_state")),
    )
    op.create_table(
        "kb_learned",
        sa.Column("interaction_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=120), nullable=True),
        sa.Column("who", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"],
                                name=op.f("fk_kb_learned_interaction_id_interactions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("interaction_id", name=op.f("pk_kb_learned")),
    )
    with op.batch_alter_table("agents") as batch:
        batch.drop_constraint(op.f("ck_agents_role"), type_="check")
        batch.create_check_constraint(op.f("ck_agents_role"), sa.text(_NEW_ROLES))


def downgrade() -> None:
    op.execute(sa.text("UPDATE agents SET role = 'agent' WHERE role = 'editor'"))
    with op.batch_alter_table("agents") as batch:
        batch.drop_constraint(op.f("ck_agents_role"), type_="check")
        batch.create_check_constraint(op.f("ck_agents_role"), sa.text(_OLD_ROLES))
    op.drop_table("kb_learned")
    op.drop_table("kb_state")
    op.drop_index("ix_kb_article_versions_one_published", table_name="kb_article_versions")
    op.drop_table("kb_article_versions")
    op.drop_index(op.f("ix_kb_articles_area"), table_name="kb_articles")
    op.drop_table("kb_articles")
