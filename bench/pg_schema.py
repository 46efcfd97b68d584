"""What the 1M-row PostgreSQL benches share (bench/log_search.py, bench/dashboard.py).

Their throw-away schema: ``--drop`` removes it; otherwise it is migrated to head and seeded with
``--rows`` interactions unless it holds that many already (``--reseed`` forces it). Their command
line, the conversations both seed, and the timing of one case (``--reps`` runs after two warm-ups,
p50 and p99 in ms) with the verdict against the target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from crm_store.db import make_engine, make_session_factory, upgrade

URL = os.environ.get("PCRM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CHANNELS = ["webchat", "twilio_sms", "telegram", "kakao", "twilio_voice", "rest"]
WARM_UPS = 2


def parser(doc: str, schema: str) -> argparse.ArgumentParser:
    """The options both benches take (``doc``'s first paragraph is the description)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--url", default=URL)
    p.add_argument("--schema", default=schema)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--reseed", action="store_true", help="seed even if the schema holds --rows already")
    p.add_argument("--drop", action="store_true", help="drop the bench schema and exit")
    return p


def open_schema(args: argparse.Namespace, seed: Callable[[Any, int], None]) -> tuple[Any, Any] | None:
    """``(engine, sessions)`` on the seeded schema of ``args``, or None after ``--drop``; prints the
    server's version and the schema's row count."""
    engine = prepare(args.url, args.schema, args.rows, seed, reseed=args.reseed, drop=args.drop)
    if engine is None:
        return None
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar_one()
        n = conn.execute(text("SELECT count(*) FROM interactions")).scalar_one()
    print(f"PostgreSQL {version}, schema {args.schema}: {n} interactions; {args.reps} runs after "
          f"{WARM_UPS} warm-ups", flush=True)
    return engine, make_session_factory(engine=engine)


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


def sql_array(values: list[str]) -> str:
    """``ARRAY['a','b']`` of quoted literals, to index with ``generate_series``."""
    return "ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def seed_conversations(conn: Any, n_conv: int) -> None:
    """``n_conv`` conversations, channel by ``g % 6``; the interactions refer to them by id."""
    channels = sql_array(CHANNELS)
    conn.execute(text(f"""
        INSERT INTO conversations (key, channel, state_version, handed_off, status, created_at, updated_at)
        SELECT ({channels})[1 + g % 6] || '-bench-' || g, ({channels})[1 + g % 6], 0, false, 'active',
               now(), now()
        FROM generate_series(1, {n_conv}) AS g"""))


def vacuum(engine: Any, *tables: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for t in tables:
            conn.execute(text(f"VACUUM ANALYZE {t}"))


def timed(fn: Callable[[], Any], reps: int) -> tuple[float, float, Any]:
    """p50 and p99 in ms of ``reps`` calls of ``fn`` after the warm-ups, and its last result."""
    times = []
    result = None
    for i in range(reps + WARM_UPS):
        t0 = time.perf_counter()
        result = fn()
        if i >= WARM_UPS:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.99 * (len(times) - 1)))], result


def verdict(worst: float, target_ms: float) -> int:
    """Prints the worst p99 against the target; the exit status (1 over it)."""
    print(f"\nworst p99 {worst:.1f} ms: {'within' if worst <= target_ms else 'OVER'} the {target_ms:.0f} ms target")
    return 0 if worst <= target_ms else 1
