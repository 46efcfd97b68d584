"""Duplicate detection on a generated set of reports: precision, recall and the time it adds.

    .venv/bin/python bench/duplicates.py                       # SQLite in a temp dir, seed 1
    .venv/bin/python bench/duplicates.py --incidents 600 --seed 7
    .venv/bin/python bench/duplicates.py --postgres            # a throw-away PostgreSQL schema

The generator places *incidents* (one real pothole, one dark streetlight, …) on the district's
roads (``nlu_data/gazetteer.yml``), each reported by 1–4 residents within its service's time
window (``config.yml`` ``services.<code>.duplicate``). Each report locates the incident the way
residents do: a shared location with GPS noise (σ = a quarter of the service's distance), a
typed address (the same house number, or the one next door), or, 5% of the time, words the
gazetteer does not know ("우리 집 앞") — those carry no coordinates and are expected misses. A
fifth of the incidents are *near misses*: another problem of the same service 1.5–3 × the
distance away from an open one, which must not be merged with it; the others are placed at least
2 × the distance from the open problems of their service (two potholes closer than the service's
distance cannot be told apart by place alone: an agent splits them, see the console). A background of older
requests (outside every window) fills the table first.

Each report is handled as the dialogue does it (``actions/duplicates.py``): a typed address is
geocoded, ``find_duplicate`` is asked; a hit subscribes the resident, a miss opens a ticket.

* precision = hits that point at a ticket of the same incident / all hits;
* recall = those correct hits / reports whose incident already had a report (the true duplicates);
* latency = geocoding + ``find_duplicate`` per report (p50, p95, max), on the real SQL store.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.geo import Gazetteer, distance_m, gazetteer  # noqa: E402
from bot.service_requests import DuplicateRule, RequestDraft, duplicate_rules  # noqa: E402
from bot.settings import load_municipality  # noqa: E402

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
START = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)


@dataclass
class Report:
    at: datetime
    incident: int
    service: str
    location: str | None
    lat: float | None
    long: float | None


def _offset(lat: float, long: float, metres: float, bearing: float) -> tuple[float, float]:
    dlat = metres * math.cos(bearing) / 111_320
    dlon = metres * math.sin(bearing) / (111_320 * math.cos(math.radians(lat)))
    return lat + dlat, long + dlon


def generate(rng: random.Random, g: Gazetteer, rules: dict[str, DuplicateRule], incidents: int
             ) -> list[Report]:
    services = [c for c, r in rules.items() if c != "*" and r.days > 0 and r.meters > 0]
    roads = list(g.roads.values())
    placed: list[tuple[str, float, float, datetime]] = []
    reports: list[Report] = []
    span_days = 30
    for i in range(incidents):
        service = rng.choice(services)
        rule = rules[service]
        first = START + timedelta(seconds=rng.uniform(0, span_days * 86400))
        near = [p for p in placed if p[0] == service and abs((p[3] - first).total_seconds()) < rule.days * 86400]
        if near and rng.random() < 0.2:  # a near miss: another problem close to an open one
            _, la, lo, _ = rng.choice(near)
            lat, long = _offset(la, lo, rule.meters * rng.uniform(1.5, 3.0), rng.uniform(0, 2 * math.pi))
            number = None
        else:
            for _ in range(50):  # apart from the open problems of its service (see the module doc)
                road = rng.choice(roads)
                number = rng.randint(road.anchors[0][0], road.anchors[-1][0])
                lat, long = road.point(number)  # type: ignore[misc]
                if all(distance_m(lat, long, la, lo) >= 2 * rule.meters for _, la, lo, _ in near):
                    break
            addr_road = road
        placed.append((service, lat, long, first))
        count = rng.choices([1, 2, 3, 4], weights=[45, 25, 18, 12])[0]
        for k in range(count):
            at = first if k == 0 else first + timedelta(seconds=rng.uniform(0, 0.8 * rule.days * 86400))
            mode = rng.random()
            if mode < 0.6 or number is None and mode < 0.95:
                r = min(abs(rng.gauss(0, rule.meters / 4)), 0.9 * rule.meters)
                plat, plong = _offset(lat, long, r, rng.uniform(0, 2 * math.pi))
                reports.append(Report(at, i, service, None, plat, plong))
            elif mode < 0.95:
                n = max(1, number + rng.choice([0, 0, 0, 0, 1, -1]))
                text = rng.choice([f"{addr_road.ko} {n} 앞", f"{addr_road.ko}{n}", f"{n} {addr_road.en}"])
                reports.append(Report(at, i, service, text, None, None))
            else:
                reports.append(Report(at, i, service, rng.choice(["우리 집 앞", "골목 안쪽", "편의점 옆"]), None, None))
    reports.sort(key=lambda r: r.at)
    return reports


def _store(url: str, clock: list[datetime]):  # noqa: ANN202 - bench helper
    from crm_store.db import make_session_factory
    from crm_store.requests import SqlRequestStore

    return SqlRequestStore(make_session_factory(url), clock=lambda: clock[0])


def run(url: str, incidents: int, seed: int, background: int) -> dict[str, float]:
    rules = duplicate_rules(load_municipality(ROOT / "config.yml"))
    rng = random.Random(seed)
    g = gazetteer()
    reports = generate(rng, g, rules, incidents)
    clock = [START - timedelta(days=90)]
    store = _store(url, clock)
    roads = list(g.roads.values())
    for _ in range(background):  # older requests: outside every window, still in the table
        clock[0] = START - timedelta(days=rng.uniform(20, 90))
        road = rng.choice(roads)
        la, lo = road.point(rng.randint(road.anchors[0][0], road.anchors[-1][0]))  # type: ignore[misc]
        code = rng.choice([c for c in rules if c != "*"])
        store.open(RequestDraft(code, code.split(".")[0], "", f"{road.ko}", la, lo))
    tickets: dict[int, set[str]] = {}
    incident_of: dict[str, int] = {}
    seen: set[int] = set()
    tp = fp = true_dups = 0
    lat_ms: list[float] = []
    for rep in reports:
        clock[0] = rep.at
        is_dup = rep.incident in seen
        seen.add(rep.incident)
        true_dups += is_dup
        t0 = time.perf_counter()
        lat, long = rep.lat, rep.long
        if lat is None and rep.location:
            found = g.forward(rep.location)
            if found is not None:
                lat, long = found.lat, found.long
        hit = store.find_duplicate(rep.service, rep.location, lat, long, rep.at,
                                   rules.get(rep.service, rules["*"]))
        lat_ms.append((time.perf_counter() - t0) * 1000)
        if hit is not None:
            if incident_of.get(hit.ticket) == rep.incident:
                tp += 1
            else:
                fp += 1
            store.subscribe(hit.ticket, f"bench:{uuid.uuid4().hex[:8]}")
            continue
        rec = store.open(RequestDraft(rep.service, rep.service.split(".")[0], "", rep.location, lat, long))
        tickets.setdefault(rep.incident, set()).add(rec.ticket)
        incident_of[rec.ticket] = rep.incident
    lat_ms.sort()
    return {
        "reports": len(reports), "incidents": incidents, "true_duplicates": true_dups,
        "hits": tp + fp, "correct_hits": tp,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / true_dups if true_dups else 1.0,
        "p50_ms": statistics.median(lat_ms), "p95_ms": lat_ms[int(0.95 * (len(lat_ms) - 1))], "max_ms": lat_ms[-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--incidents", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--background", type=int, default=2000, help="older requests in the table first")
    ap.add_argument("--postgres", nargs="?", const=DEFAULT_POSTGRES, help="PostgreSQL URL (a temp schema is used)")
    args = ap.parse_args()
    from crm_store.db import upgrade

    if args.postgres:
        from sqlalchemy import create_engine, text

        schema = f"pcrm_bench_{uuid.uuid4().hex[:8]}"
        upgrade(args.postgres, schema=schema)
        try:
            out = run(f"{args.postgres}?options={quote(f'-csearch_path={schema}')}", args.incidents, args.seed,
                      args.background)
        finally:
            admin = create_engine(args.postgres)
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()
        backend = "postgresql"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            out = run(url, args.incidents, args.seed, args.background)
        backend = "sqlite"
    print(f"backend={backend} reports={out['reports']} incidents={out['incidents']} "
          f"true_duplicates={out['true_duplicates']} hits={out['hits']} correct={out['correct_hits']}")
    print(f"precision={out['precision']:.3f} recall={out['recall']:.3f}")
    print(f"added latency per report (geocode + find_duplicate): p50={out['p50_ms']:.2f} ms "
          f"p95={out['p95_ms']:.2f} ms max={out['max_ms']:.2f} ms")
    ok = out["precision"] >= 0.9 and out["recall"] >= 0.9 and out["p95_ms"] <= 5
    print("OK" if ok else "BELOW TARGET (precision, recall ≥ 0.9; p95 ≤ 5 ms)")


if __name__ == "__main__":
    main()
