"""The throw-away PostgreSQL schema the 1M-row benches run on (bench/log_search.py, bench/dashboard.py).

One place for the steps both need: ``--drop`` removes the schema; otherwise it is migrated to head
and seeded with ``rows`` interactions unless it holds that many already (``--reseed`` forces it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from crm_store.db import make_engine, upgrade


def prepare(url: str, schema: str, rows: int, seed: Callable[[Any, int], None], *, reseed: bool = False,
            drop: bool = False) -> Any | None:
    """The engine on the seeded ``schema``, or None after ``drop`` (the schema is gone)."""
    if drop:
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
        print(f"dropped schema {schema}")
        return None
    upgrade(url, schema=schema)
    engine = make_engine(url, schema=schema)
    with engine.connect() as conn:
        have = conn.execute(text("SELECT count(*) FROM interactions")).scalar_one()
    if reseed or have != rows:
        seed(engine, rows)
    return engine
