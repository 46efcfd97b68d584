"""The trigram index flushes its pending list in small steps (``gin_pending_list_limit`` 128 kB).

A GIN index with ``fastupdate`` (the default) collects new entries in an unsorted pending list
and moves them into the index when the list passes ``gin_pending_list_limit`` (4 MB by
default). On ``interactions.text`` (every message and reply, a few dozen trigrams each) that
was one flush every ≈ 4,600 rows, 47–69 ms inside whichever insert crossed the limit, while the
message waiting on it (and the ones queued behind that worker) waited too: the longest answers
of `bench/load.py` came in such bursts. At 128 kB a flush is ≈ 30 times smaller and as many times
more frequent (somewhat more work in all: below); a "text contains" search also reads a
shorter unsorted list. Measured (2 workers, 64 residents, 250 msg/s, alternately): p99 15.1, 15.5,
17.6, 20.7 ms against 19.6, 18.4, 25.2, 19.8 with the 4 MB default; closed loop unchanged or
better (921, 940 against 814, 915 msg/s). The price: the small flushes now land inside 1–2 % of
messages and add up to more work (one resident at a time: 1.73–1.75 against 1.61–1.67 ms a
message, p99 4.4–4.6 against 2.2–2.5 ms); kept for the tail under load.

PostgreSQL only, and only where migration 0002 could create the index (pg_trgm present).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 10:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_interactions_text_trgm"
#: kB, as the storage parameter counts (PostgreSQL's minimum is 64).
PENDING_LIST_KB = 128


def _has_gin_index(bind: sa.engine.Connection) -> bool:
    return bind.dialect.name == "postgresql" and bind.execute(sa.text(
        "SELECT 1 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am a ON a.oid = i.relam "
        "WHERE i.relname = :name AND a.amname = 'gin' AND pg_table_is_visible(i.oid)"),
        {"name": INDEX}).first() is not None


def upgrade() -> None:
    if _has_gin_index(op.get_bind()):
        op.execute(f"ALTER INDEX {INDEX} SET (gin_pending_list_limit = {PENDING_LIST_KB})")


def downgrade() -> None:
    if _has_gin_index(op.get_bind()):
        op.execute(f"ALTER INDEX {INDEX} RESET (gin_pending_list_limit)")
