"""Per-message cost of the inbox hot path, in-process, on PostgreSQL (+ Redis).

    .venv/bin/python bench/hot_path.py                 # N=2000 messages, 8 concurrent residents
    .venv/bin/python bench/hot_path.py -n 2000 --concurrency 1 --no-redis

Builds the real app (``create_app``) on a throw-away PostgreSQL schema and an empty Redis
database (as ``bench/load`` does), then drives ``app.state.inbox.receive`` with realistic
multi-turn visits (``bench/load.visit_script``: FAQ, a form to its ticket, its status, a
hand-off; then a new visitor). No HTTP: this measures the inbox (lock, dedup, store, engine,
store, live events). Prints, after a warm-up:

* CPU ms/msg: ``time.process_time()`` of this process (all threads) per message — the
  number that decides the throughput of a worker on a loaded machine;
* wall p50/p99 per message;
* SQL statements and transactions (COMMITs) per message, counted with SQLAlchemy events
  (``before_cursor_execute``, ``commit``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from load import DEFAULT_POSTGRES, DEFAULT_REDIS, TICKET, TICKET_RE, Infra, visit_script  # noqa: E402


class Resident:
    def __init__(self, index: int, tag: str) -> None:
        self.rng = random.Random(index)
        self.tag, self.index, self.visit = tag, index, 0
        self.script: list[Any] = []
        self.ticket = ""
        self.sender = ""

    def next_text(self) -> str:
        if not self.script:
            self.visit += 1
            self.sender = f"hp-{self.tag}-{self.index}-{self.visit}"
            self.script = visit_script(self.rng)
        item = self.script.pop(0)
        return (self.ticket or "2026-000001") if item is TICKET else item


async def drive(inbox: Any, residents: list[Resident], n: int, lat: list[float], client: Any = None) -> None:
    from bot.messages import Message, Reply

    left = [n]

    async def loop(r: Resident) -> None:
        while left[0] > 0:
            left[0] -= 1
            text = r.next_text()
            t0 = time.perf_counter()
            if client is None:
                replies = (await inbox.receive(Message(channel="rest", sender_id=r.sender, text=text))).replies
            else:  # the REST route in-process (FastAPI, validation, JSON), no sockets
                resp = await client.post("/webhooks/rest/webhook", json={"sender": r.sender, "message": text})
                resp.raise_for_status()
                replies = [Reply(x["text"]) for x in resp.json()]
            lat.append(time.perf_counter() - t0)
            for reply in replies:
                m = TICKET_RE.search(reply.text)
                if m:
                    r.ticket = m.group(1)

    await asyncio.gather(*(loop(r) for r in residents))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="messages measured (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of -n messages; the lowest CPU is reported")
    ap.add_argument("--concurrency", type=int, default=8, help="residents talking at once")
    ap.add_argument("--postgres", default=DEFAULT_POSTGRES)
    ap.add_argument("--redis", default=DEFAULT_REDIS)
    ap.add_argument("--no-redis", action="store_true", help="no REDIS_URL (in-process lock, dedup, state)")
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of the measured part")
    ap.add_argument("--rest", action="store_true", help="through the REST route (httpx ASGITransport)")
    ap.add_argument("--limits", action="store_true", help="keep the rate limiter (off by default)")
    ap.add_argument("--show-sql", action="store_true", help="print the statements per message by kind")
    ap.add_argument("--stages", action="store_true",
                    help="also print the CPU (thread time) of each timed stage per message: redis, store, engine "
                         "(nlu inside it); the rest is the inbox, the thread hop and the event loop")
    args = ap.parse_args(argv)

    infra = Infra(args.postgres, args.redis)
    try:
        os.environ["DATABASE_URL"] = infra.db_url
        if args.no_redis:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = infra.redis_url
        os.environ["PCRM_REDIS_PREFIX"] = f"pcrm-hp-{infra.schema}:"
        os.environ.setdefault("PCRM_LOG_LEVEL", "WARNING")
        import logging

        logging.basicConfig(level=logging.WARNING)
        from sqlalchemy import event

        from bot.app import create_app
        from bot.settings import get_settings

        get_settings.cache_clear() if hasattr(get_settings, "cache_clear") else None
        app = create_app()
        inbox = app.state.inbox
        _ = app.state.engine.nlu
        from bot.app import _settle_heap

        _settle_heap(app.state.engine)  # as the server's start-up does (warm-up, gc.freeze)
        if not args.limits:
            inbox.limiter = None
        counts = {"stmt": 0, "commit": 0}
        from collections import Counter

        kinds: Counter[str] = Counter()
        sa_engine = app.state.sessions.kw["bind"]

        @event.listens_for(sa_engine, "before_cursor_execute")
        def _count(_conn: Any, _cur: Any, statement: str, *_a: Any) -> None:
            counts["stmt"] += 1
            if args.show_sql:
                kinds[" ".join(statement.split())[:90]] += 1

        @event.listens_for(sa_engine, "commit")
        def _commit(*_a: Any) -> None:
            counts["commit"] += 1

        stage_cpu: Counter[str] = Counter()
        if args.stages:  # bot.metrics.timed, also adding up this thread's CPU per stage
            from contextlib import contextmanager

            import bot.engine
            import bot.metrics

            real_timed = bot.metrics.timed

            @contextmanager
            def cpu_timed(stage: str) -> Any:
                t0 = time.thread_time()
                try:
                    with real_timed(stage):
                        yield
                finally:
                    stage_cpu[stage] += time.thread_time() - t0

            bot.metrics.timed = cpu_timed  # type: ignore[assignment]
            bot.engine.timed = cpu_timed  # type: ignore[attr-defined]

        tag = uuid.uuid4().hex[:6]
        residents = [Resident(i, tag) for i in range(args.concurrency)]
        lat: list[float] = []
        prof = None
        if args.profile:  # cProfile sees one thread: run the inbox inline (no threadpool) while profiling
            import cProfile

            async def inline(message: Any, queued: Any) -> Any:
                return inbox.receive_sync(message, queued, False)

            inbox._in_thread = inline  # noqa: SLF001

            prof = cProfile.Profile(time.process_time)  # CPU, not waiting

        async def run() -> tuple[Any, ...]:
            client = None
            if args.rest:
                import httpx

                client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hp")
            await drive(inbox, residents, args.warmup, lat, client)  # one event loop: the live bus's client lives on it
            best: tuple[Any, ...] | None = None
            for _ in range(args.repeat):  # the least disturbed of a few rounds (a busy machine inflates CPU)
                lat.clear()
                counts.update(stmt=0, commit=0)
                kinds.clear()
                stage_cpu.clear()
                load0 = os.getloadavg()[0]
                if prof is not None:
                    prof.enable()
                direct = inbox.log.direct  # statements sent straight through psycopg (crm_store/direct.py)
                pg0 = (direct.statements, direct.transactions) if direct is not None else (0, 0)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await drive(inbox, residents, args.n, lat, client)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                # Statements of the PostgreSQL hot path and their transactions (autocommit: one each).
                if direct is not None:
                    counts["stmt"] += direct.statements - pg0[0]
                    counts["commit"] += direct.transactions - pg0[1]
                if prof is not None:
                    prof.disable()
                    prof.dump_stats(args.profile)
                if args.repeat > 1:
                    print(f"  round: CPU ms/msg {cpu / args.n * 1000:.2f}, load average {load0:.2f}")
                if best is None or cpu < best[1]:
                    best = (load0, cpu, wall, list(lat), dict(counts), Counter(kinds), Counter(stage_cpu))
            assert best is not None
            return best

        load0, cpu, wall, lat, counts, kinds, stages = asyncio.run(run())
        n = len(lat)
        print(f"# hot path{' via the REST route' if args.rest else ''}{' with rate limits' if args.limits else ''}: "
              f"{n} messages, {args.concurrency} concurrent, "
              f"{'no Redis' if args.no_redis else 'Redis'}, PostgreSQL; load average {load0:.2f} → "
              f"{os.getloadavg()[0]:.2f}")
        print(f"CPU ms/msg {cpu / n * 1000:.2f} | wall ms/msg {wall / n * 1000:.2f} | "
              f"p50 {pct(lat, 0.5):.1f} ms p99 {pct(lat, 0.99):.1f} ms | "
              f"SQL statements/msg {counts['stmt'] / n:.1f} | transactions/msg {counts['commit'] / n:.2f}")
        if args.stages:
            per = {k: v / n * 1000 for k, v in stages.items()}
            rest = cpu / n * 1000 - sum(v for k, v in per.items() if k != "nlu")
            print("CPU ms/msg by stage: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()))
                  + f" (nlu within engine); everything else {rest:.2f}")
        for what, k in kinds.most_common():
            print(f"  {k / n:6.2f}  {what}")
    finally:
        infra.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
