"""Supervisor interaction log on 1M interactions in PostgreSQL: p50/p99 per query type.

    .venv/bin/python bench/log_search.py                  # seeds once, then times
    .venv/bin/python bench/log_search.py --reseed --rows 1000000 --reps 30
    .venv/bin/python bench/log_search.py --drop           # remove the bench schema

The data lives in its own schema (``--schema``, default ``pcrm_bench_log``) of ``--url`` (default
``$PCRM_TEST_POSTGRES_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), migrated
with the project's Alembic revisions (so the indexes measured are the ones shipped, incl. the
pg_trgm GIN of 0002). Seeding is one ``INSERT ... SELECT generate_series`` (ids follow time, as in
production): 1M rows over the last 365 days, 6 channels, ~30 labels, Korean and English texts.

Each query is the real :func:`bot.supervisor.search` (one page of 50, keyset pagination), timed
end to end from Python (SQL + fetch + masking) ``--reps`` times after two warm-ups. Target: ≤ 300 ms.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import pg_schema  # noqa: E402
from bench.pg_schema import CHANNELS, sql_array  # noqa: E402
from bot.supervisor import Filters, search  # noqa: E402
from crm_store.timeutil import as_utc  # noqa: E402

TZ = ZoneInfo("Asia/Seoul")
TARGET_MS = 300.0

LABELS = ["waste.missed_collection", "waste.bulky_pickup", "waste.illegal_dumping", "roads.pothole",
          "roads.streetlight", "traffic.illegal_parking", "environment.noise", "parks.tree_hazard", "water.leak",
          "water.sewer_blockage", "safety.hazard", "faq.office_hours", "faq.waste_schedule", "faq.bulky_waste_fee",
          "faq.resident_certificate", "faq.passport", "faq.moving_in", "faq.property_tax", "faq.vehicle_tax",
          "faq.parking_permit", "faq.water_bill", "faq.vaccination", "faq.welfare_eligibility", "conv.greet",
          "conv.goodbye", "conv.thanks", "conv.human", "conv.request_status", "conv.emergency", "conv.out_of_scope"]
TEXTS = ["쓰레기가 수거되지 않았어요", "대형폐기물 버리려면 어떻게 해요", "골목에 쓰레기 무단투기가 심해요",
         "도로에 구멍이 파였어요", "가로등이 꺼져서 너무 어두워요", "집 앞에 불법주차 차량이 있어요",
         "윗집 공사 소음이 너무 심해요", "공원 나무가 쓰러질 것 같아요", "수도관에서 물이 새요", "하수구가 막혔어요",
         "민원실 몇 시까지 해요", "주민등록등본 발급 방법 알려주세요", "여권 재발급 기간이 얼마나 걸려요",
         "재산세 납부 기간이 언제예요", "자동차세 연납 신청하고 싶어요", "거주자 우선주차 신청하려고요",
         "예방접종 어디서 맞을 수 있어요", "상담원 연결해 주세요", "안녕하세요", "감사합니다",
         "My garbage was not collected", "There is a pothole on my street", "When is the property tax due",
         "접수되었습니다. 담당 부서에서 확인 후 연락드릴게요.", "Your request has been received."]
RARE = "맨홀뚜껑"  # in 0.1 % of the rows


def seed(engine: Any, rows: int) -> None:
    labels, texts, channels = sql_array(LABELS), sql_array(TEXTS), sql_array(CHANNELS)
    n_conv = max(1, rows // 50)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE interactions, conversations RESTART IDENTITY CASCADE"))
        conn.execute(text("DROP INDEX IF EXISTS ix_interactions_text_trgm"))
        pg_schema.seed_conversations(conn, n_conv)
        conn.execute(text(f"""
            INSERT INTO interactions (conversation_id, channel, direction, text, label, confidence, lang, entities,
                                      handled_by, created_at)
            SELECT c, ({channels})[1 + c % 6],
                   CASE WHEN g % 2 = 0 THEN 'in' ELSE 'out' END,
                   ({texts})[1 + (g * 7 + g / 13) % {len(TEXTS)}] || ' ' || (g % 9973)::text
                       || CASE WHEN g % 1000 = 7 THEN ' {RARE}' ELSE '' END,
                   CASE WHEN g % 2 = 0 THEN ({labels})[1 + (g / 2 * 11) % {len(LABELS)}] END,
                   CASE WHEN g % 2 = 0 THEN ((g * 37) % 100) / 100.0 END,
                   CASE WHEN g % 10 = 4 THEN 'en' ELSE 'ko' END,
                   '[]'::json,
                   CASE WHEN g % 2 = 1 AND g % 9 = 1 THEN 'agent:' || (1 + g % 20) ELSE 'bot' END,
                   now() - interval '365 days' + (g::double precision / {rows}) * interval '365 days'
            FROM generate_series(1, {rows}) AS g, LATERAL (SELECT 1 + (g / 7) % {n_conv} AS c) AS cc"""))
    print(f"seeded {rows} interactions in {time.perf_counter() - t0:.1f}s", flush=True)
    t1 = time.perf_counter()
    with engine.begin() as conn:  # the index of migration 0002, rebuilt once instead of per row
        schema = conn.execute(text("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                                   "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'")).scalar()
        if schema:
            conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
            conn.execute(text(f'CREATE INDEX ix_interactions_text_trgm ON interactions '
                              f'USING gin (text "{schema}".gin_trgm_ops)'))
    pg_schema.vacuum(engine, "interactions", "conversations")
    print(f"trigram index + VACUUM ANALYZE in {time.perf_counter() - t1:.1f}s", flush=True)


def filters(days: int, end_days_ago: int = 0, **kw: Any) -> Filters:
    end_day = datetime.now(TZ).date() - timedelta(days=end_days_ago)
    start_day = end_day - timedelta(days=days - 1)
    start = as_utc(datetime.combine(start_day, datetime.min.time(), TZ))
    end = as_utc(datetime.combine(end_day + timedelta(days=1), datetime.min.time(), TZ))
    return Filters(start_day, end_day, start, end, **kw)


def main(argv: list[str] | None = None) -> int:
    p = pg_schema.parser(__doc__ or "", "pcrm_bench_log")
    p.add_argument("--kpis", action="store_true", help="also time the dashboard analytics (7 and 30 days)")
    args = p.parse_args(argv)

    opened = pg_schema.open_schema(args, seed)
    if opened is None:
        return 0
    engine, sessions = opened
    with engine.connect() as conn:
        max_id = conn.execute(text("SELECT max(id) FROM interactions")).scalar_one()
    print("one page = 50 rows", flush=True)

    year = 366
    cases: list[tuple[str, Filters]] = [
        ("first page, last 7 days", filters(7)),
        ("first page, last 366 days", filters(year)),
        ("deep keyset page (before_id = middle), 366 days", filters(year, before_id=max_id // 2)),
        ("deep keyset page (before_id = 5 %), 366 days", filters(year, before_id=max_id // 20)),
        ("channel = telegram, 7 days", filters(7, channel="telegram")),
        ("channel = kakao, 366 days", filters(year, channel="kakao")),
        ("label = roads.pothole, 366 days", filters(year, label="roads.pothole")),
        ("label + channel, 366 days", filters(year, label="water.leak", channel="webchat")),
        ("date range 30 days, 6 months ago", filters(30, end_days_ago=180)),
        ("date range 1 day, 300 days ago", filters(1, end_days_ago=300)),
        ("handled by agent, 366 days", filters(year, handled="agent")),
        ("direction in + lang en, 366 days", filters(year, direction="in", lang="en")),
        ("text contains '가로등' (common), 366 days", filters(year, q="가로등")),
        (f"text contains '{RARE}' (0.1 %), 366 days", filters(year, q=RARE)),
        (f"text contains '{RARE}', deep keyset page", filters(year, q=RARE, before_id=max_id // 2)),
        ("text contains 'pothole' (English), 366 days", filters(year, q="pothole")),
        ("text contains '소음' (2 syllables), 366 days", filters(year, q="소음")),
        ("text contains '9971' + channel, 366 days", filters(year, q="9971", channel="telegram")),
        (f"text contains '{RARE}' + label, 30 days", filters(30, q=RARE, label="faq.passport")),
        (f"text contains '{RARE}', 30 days 6 months ago", filters(30, end_days_ago=180, q=RARE)),
        ("label + channel, 1 day 300 days ago", filters(1, end_days_ago=300, label="water.leak", channel="kakao")),
        ("channel + agent + lang en, 366 days", filters(year, channel="rest", handled="agent", lang="en")),
    ]
    worst = 0.0
    print(f"\n{'query':55s} {'p50 ms':>8s} {'p99 ms':>8s} {'rows':>5s}")
    for name, f in cases:
        p50, p99, (page, _next) = pg_schema.timed(lambda f=f: search(sessions, f), args.reps)
        worst = max(worst, p99)
        print(f"{name:55s} {p50:8.1f} {p99:8.1f} {len(page):5d}", flush=True)
    status = pg_schema.verdict(worst, TARGET_MS)
    if args.kpis:
        from bot import analytics
        from bot.knowledge import Knowledge
        from bot.settings import get_settings

        settings = get_settings()
        knowledge = Knowledge(settings.pcrm_nlu_dir, settings.config())
        print("\ndashboard analytics (bot.analytics.report; not part of the page target):")
        for days in (7, 30):
            f = filters(days)
            w = analytics.Window(f.start_day, f.end_day, f.start, f.end, TZ)
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                analytics.report(sessions, knowledge, w)
                runs.append((time.perf_counter() - t0) * 1000)
            print(f"  last {days} days: median {statistics.median(runs):.0f} ms")
    engine.dispose()
    return status


if __name__ == "__main__":
    sys.exit(main())
