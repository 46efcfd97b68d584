"""Requests reach the field: duplicate detection, subscriptions and a request history.

* ``service_requests.address_key`` (``road:number``, bot/geo.py) and ``duplicate_of_id`` (a merge),
  with an index on ``(service_code, status, requested_datetime)`` for the duplicate lookup;
  existing rows get their ``address_key`` computed from ``address_string`` (Python: one rule on
  every backend; ``--sql`` mode leaves them NULL and says so);
* ``request_subscriptions``: residents following a request they reported again;
* ``request_updates``: the request's history (status, notes, photos, merges, reopenings), with the
  crew app's ``client_id`` (an offline update synced twice is applied once);
* ``work_orders``: requests handed to field crews, and the agents' role ``field``.

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-06 18:00:00
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0006"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

_requests = sa.table("service_requests", sa.column("id", sa.Integer), sa.column("address_string", sa.Text),
                     sa.column("address_key", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("service_requests") as batch:
        batch.add_column(sa.Column("address_key", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("duplicate_of_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_service_requests_duplicate_of_id_service_requests"), "service_requests",
                                 ["duplicate_of_id"], ["id"])
    op.create_index("ix_service_requests_service_open", "service_requests",
                    ["service_code", "status", "requested_datetime"], unique=False)
    op.create_table(
        "request_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("conversation_key", sa.String(length=300), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["service_requests.id"],
                                name=op.f("fk_request_subscriptions_request_id_service_requests")),
        sa.ForeignKeyConstraint(["resident_id"], ["residents.id"],
                                name=op.f("fk_request_subscriptions_resident_id_residents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_subscriptions")),
        sa.UniqueConstraint("request_id", "conversation_key", name=op.f("uq_request_subscriptions_request_key")),
    )
    op.create_index(op.f("ix_request_subscriptions_request_id"), "request_subscriptions", ["request_id"])
    op.create_index(op.f("ix_request_subscriptions_resident_id"), "request_subscriptions", ["resident_id"])
    op.create_table(
        "request_updates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("sub_status", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("media_url", sa.Text(), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("who", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["service_requests.id"],
                                name=op.f("fk_request_updates_request_id_service_requests")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_updates")),
        sa.UniqueConstraint("client_id", name=op.f("uq_request_updates_client_id")),
    )
    op.create_index(op.f("ix_request_updates_request_id"), "request_updates", ["request_id"])
    op.create_index(op.f("ix_request_updates_created_at"), "request_updates", ["created_at"])
    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("crew", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("before_url", sa.Text(), nullable=True),
        sa.Column("after_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('assigned', 'on_site', 'done', 'cancelled')",
                           name=op.f("ck_work_orders_status")),
        sa.ForeignKeyConstraint(["request_id"], ["service_requests.id"],
                                name=op.f("fk_work_orders_request_id_service_requests")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_orders")),
    )
    op.create_index(op.f("ix_work_orders_request_id"), "work_orders", ["request_id"])
    op.create_index(op.f("ix_work_orders_crew"), "work_orders", ["crew"])
    with op.batch_alter_table("agents") as batch:
        batch.drop_constraint(op.f("ck_agents_role"), type_="check")
        batch.create_check_constraint(op.f("ck_agents_role"), "role IN ('agent', 'supervisor', 'admin', 'field')")
    if context.is_offline_mode():
        log.warning("offline mode: service_requests.address_key is left NULL for existing requests")
        return
    _fill_keys(op.get_bind())


def _fill_keys(bind: sa.engine.Connection) -> None:
    from bot.geo import gazetteer

    g = gazetteer()
    rows = bind.execute(sa.select(_requests.c.id, _requests.c.address_string)
                        .where(_requests.c.address_string.is_not(None))).all()
    updates = [{"rid": rid, "k": g.address_key(addr)} for rid, addr in rows]
    if updates:
        bind.execute(_requests.update().where(_requests.c.id == sa.bindparam("rid"))
                     .values(address_key=sa.bindparam("k")), updates)


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_constraint(op.f("ck_agents_role"), type_="check")
        batch.create_check_constraint(op.f("ck_agents_role"), "role IN ('agent', 'supervisor', 'admin')")
    op.drop_index(op.f("ix_work_orders_crew"), table_name="work_orders")
    op.drop_index(op.f("ix_work_orders_request_id"), table_name="work_orders")
    op.drop_table("work_orders")
    op.drop_index(op.f("ix_request_updates_created_at"), table_name="request_updates")
    op.drop_index(op.f("ix_request_updates_request_id"), table_name="request_updates")
    op.drop_table("request_updates")
    op.drop_index(op.f("ix_request_subscriptions_resident_id"), table_name="request_subscriptions")
    op.drop_index(op.f("ix_request_subscriptions_request_id"), table_name="request_subscriptions")
    op.drop_table("request_subscriptions")
    op.drop_index("ix_service_requests_service_open", table_name="service_requests")
    with op.batch_alter_table("service_requests") as batch:
        batch.drop_constraint(op.f("fk_service_requests_duplicate_of_id_service_requests"), type_="foreignkey")
        batch.drop_column("duplicate_of_id")
        batch.drop_column("address_key")
