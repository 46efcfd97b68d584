"""Supervisor dashboard analytics (crm_store/analytics_sql.py) on 1M interactions in PostgreSQL.

    .venv/bin/python bench/dashboard.py                  # seeds once, then times
    .venv/bin/python bench/dashboard.py --reseed --rows 1000000 --reps 30
    .venv/bin/python bench/dashboard.py --drop           # remove the bench schema

Data in its own schema (``--schema``, default ``pcrm_bench_dash``), migrated with the project's
Alembic revisions (the indexes measured are the shipped ones).  Seeding is ``INSERT ... SELECT
generate_series``: 1M interactions over 365 days on 6 channels (20k conversations), one hand-off
per 20 conversations over the same year (most claimed and closed by 20 agents), a rating for
half the closed ones, transfers in the audit log.

Each dashboard request (what one page or JSON call runs) is timed end to end from Python
``--reps`` times after two warm-ups; p50 and p99 are printed.  Target: p99 ≤ 300 ms.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import pg_schema  # noqa: E402
from bench.pg_schema import CHANNELS, sql_array  # noqa: E402
from crm_store import analytics_sql as A  # noqa: E402

TZ = ZoneInfo("Asia/Seoul")
TARGET_MS = 300.0
SLA = {"emergency": 120, "default": 900}
DEPTS = ["waste", "roads", "traffic", "tax", "civil", "welfare", "safety", "general"]


def seed(engine: Any, rows: int) -> None:
    channels, depts = sql_array(CHANNELS), sql_array(DEPTS)
    n_conv = max(1, rows // 50)
    n_h = max(1, n_conv // 20 * 20)  # one hand-off per conversation of every 1 in 1 ... dense enough
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE audit_log, feedback, callback_tasks, handoff_notes, handoffs, interactions, "
                          "conversations, agents RESTART IDENTITY CASCADE"))
        conn.execute(text("DROP INDEX IF EXISTS ix_interactions_text_trgm"))
        conn.execute(text(f"""
            INSERT INTO agents (username, password_hash, role, departments, display_name, active)
            SELECT 'agent' || g, 'x', 'agent', json_build_array(({depts})[1 + g % 8]), '상담원' || g, true
            FROM generate_series(1, 20) AS g"""))
        pg_schema.seed_conversations(conn, n_conv)
        conn.execute(text(f"""
            INSERT INTO interactions (conversation_id, channel, direction, text, label, lang, entities,
                                      handled_by, created_at)
            SELECT c, ({channels})[1 + c % 6], CASE WHEN g % 2 = 0 THEN 'in' ELSE 'out' END,
                   'bench ' || g, CASE WHEN g % 2 = 0 THEN 'faq.office_hours' END,
                   CASE WHEN g % 10 = 4 THEN 'en' ELSE 'ko' END, '[]'::json, 'bot',
                   now() - interval '365 days' + (g::double precision / {rows}) * interval '365 days'
            FROM generate_series(1, {rows}) AS g, LATERAL (SELECT 1 + (g / 7) % {n_conv} AS c) AS cc"""))
        conn.execute(text(f"""
            INSERT INTO handoffs (conversation_id, department, priority, reason, summary, status, queued_at,
                                  claimed_at, closed_at, agent_id, resolution_code)
            SELECT 1 + g % {n_conv}, ({depts})[1 + g % 8], CASE WHEN g % 50 = 0 THEN 100 ELSE 10 END,
                   'asked_for_person', '', CASE WHEN g > {n_h} - 30 THEN 'queued' ELSE 'closed' END, q,
                   CASE WHEN g > {n_h} - 30 THEN NULL ELSE q + ((g % 1200) || ' seconds')::interval END,
                   CASE WHEN g > {n_h} - 30 THEN NULL ELSE q + ((600 + g % 2400) || ' seconds')::interval END,
                   CASE WHEN g > {n_h} - 30 THEN NULL ELSE 1 + g % 20 END,
                   CASE WHEN g > {n_h} - 30 THEN NULL ELSE 'answered' END
            FROM generate_series(1, {n_h}) AS g,
                 LATERAL (SELECT now() - interval '365 days' + (g::double precision / {n_h}) * interval '365 days'
                          AS q) AS qq"""))
        conn.execute(text("""
            INSERT INTO feedback (conversation_id, handoff_id, rating, created_at)
            SELECT conversation_id, id, 1 + id % 5, closed_at FROM handoffs WHERE status = 'closed' AND id % 2 = 0"""))
        conn.execute(text("""
            INSERT INTO audit_log (who, action, target, created_at)
            SELECT 'agent' || (1 + id % 20), 'console.transfer', 'handoff:' || id, claimed_at
            FROM handoffs WHERE status = 'closed' AND id % 10 = 3"""))
    pg_schema.vacuum(engine, "interactions", "conversations", "handoffs", "feedback", "audit_log", "agents")
    print(f"seeded {rows} interactions, {n_h} hand-offs in {time.perf_counter() - t0:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = pg_schema.parser(__doc__ or "", "pcrm_bench_dash").parse_args(argv)
    opened = pg_schema.open_schema(args, seed)
    if opened is None:
        return 0
    engine, sessions = opened

    def run(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        def go() -> Any:
            with sessions() as s:
                return fn(s)
        return go

    cases: list[tuple[str, Callable[[], Any]]] = []
    for preset in ("today", "7d", "30d"):
        per = A.Period.preset(preset, TZ)
        cases += [
            (f"overview, {preset}", run(lambda s, per=per: A.overview(s, per))),
            (f"messages by day x channel, {preset}", run(lambda s, per=per: A.by_day(s, per))),
            (f"departments (SLA met), {preset}", run(lambda s, per=per: A.by_department(s, per, SLA))),
            (f"per-agent statistics, {preset}", run(lambda s, per=per: A.by_agent(s, per))),
        ]
    per30 = A.Period.preset("30d", TZ)
    cases += [
        ("wallboard (now)", run(lambda s: A.wallboard(s, SLA))),
        ("drill: department = waste, 30d", run(lambda s: A.drill(s, per30, department="waste"))),
        ("drill: agent 3, 30d", run(lambda s: A.drill(s, per30, agent_id=3))),
        ("drill: channel = kakao, 30d", run(lambda s: A.drill(s, per30, channel="kakao"))),
        ("drill: one day, 30d", run(lambda s: A.drill(s, per30, day=per30.end.astimezone(TZ).strftime("%Y-%m-%d")))),
        ("/console/api/stats: all four together, 30d",
         run(lambda s: (A.overview(s, per30), A.by_day(s, per30), A.by_department(s, per30, SLA),
                        A.by_agent(s, per30)))),
    ]
    worst = 0.0
    print(f"\n{'dashboard request':60s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, fn in cases:
        p50, p99, _ = pg_schema.timed(fn, args.reps)
        worst = max(worst, p99)
        print(f"{name:60s} {p50:8.1f} {p99:8.1f}", flush=True)
    engine.dispose()
    return pg_schema.verdict(worst, TARGET_MS)


if __name__ == "__main__":
    raise SystemExit(main())
