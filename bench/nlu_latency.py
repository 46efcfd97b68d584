"""Print NLU latency (p50/p99, in-process after warm-up), CPU per `NLU.parse` and cold-start time of `pcrm route`.

    .venv/bin/python bench/nlu_latency.py [--n 2000] [--set bench/heldout.jsonl] [--cold 3]

CPU time (``time.process_time``, best of 3 passes over the set) is the number to compare on a
shared machine: wall-clock latency also counts the time other programs hold the cores.

Not a test: numbers for the README and closing notes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="messages to route")
    ap.add_argument("--set", default=str(ROOT / "bench" / "heldout.jsonl"))
    ap.add_argument("--cold", type=int, default=3, help="cold `pcrm route` runs (0: none)")
    args = ap.parse_args()

    from bot.engine import Engine

    texts = [json.loads(line)["text"] for line in Path(args.set).read_text(encoding="utf-8").splitlines() if line]
    engine = Engine()
    for t in texts[:50]:
        engine.route(t)  # warm-up
    lat = []
    for i in range(args.n):
        t0 = time.perf_counter()
        engine.route(texts[i % len(texts)])
        lat.append((time.perf_counter() - t0) * 1000)
    print(f"route in-process: n={args.n} p50={pct(lat, 50):.2f} ms p99={pct(lat, 99):.2f} ms "
          f"mean={statistics.mean(lat):.2f} ms  ({1000 / statistics.mean(lat):.0f} msg/s on one core)")

    nlu = engine.nlu
    passes = []
    for _ in range(3):
        t0 = time.process_time()
        for t in texts:
            nlu.parse(t)
        passes.append((time.process_time() - t0) / len(texts) * 1e6)
    print(f"NLU.parse CPU: best {min(passes):.0f} µs, worst {max(passes):.0f} µs per call "
          f"(process_time, 3 passes over {len(texts)} messages)")

    if args.cold <= 0:
        return
    cold = []
    for _ in range(args.cold):
        t0 = time.perf_counter()
        subprocess.run([str(ROOT / ".venv" / "bin" / "pcrm"), "route", "쓰레기 언제 버려요?", "--json"],
                       check=True, capture_output=True, cwd=ROOT)
        cold.append(time.perf_counter() - t0)
    print(f"cold `pcrm route` (new process, cached model): best {min(cold):.2f} s, worst {max(cold):.2f} s")


if __name__ == "__main__":
    main()
