"""What the knowledge base adds to a worker: per-question latency and memory.

    PYTHONPATH=$PWD .venv/bin/python bench/kb_latency.py [--kb DIR ...] [--config PATH] [--queries JSONL]

Prints p50/p99 of ``KnowledgeBase.answer`` (the time a turn that asks the KB spends in it),
once with every query new (the query-embedding LRU cold) and once repeated (warm), wall-clock
and CPU, the share of questions that needed the embedding model, their e5 token counts, and
RSS/PSS growth of building the KB (model + index) in a process that already has Kiwi loaded
(the NLU loads it anyway, so it is not the KB's cost). Queries default to the articles' own questions, shuffled.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def mem_kb() -> tuple[int, int]:
    """(RSS, PSS) of this process in KiB."""
    rss = pss = 0
    with open("/proc/self/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kb", action="append", help="article folder(s); default PCRM_KB_DIR or nlu_data/knowledge")
    ap.add_argument("--config", help="config.yml (default PCRM_CONFIG)")
    ap.add_argument("--queries", help='JSONL with "text" (and "lang") per line')
    ap.add_argument("-n", type=int, default=400, help="queries to time")
    args = ap.parse_args()

    from bot.nlu.tokenizer import kiwi

    kiwi().tokenize("워밍업")  # the NLU's Kiwi: loaded in every worker already
    # A stored index loads without bm25s, scikit-learn or SciPy (they only build one): not
    # imported here, so a load's memory below is what a worker pays.

    before = mem_kb()
    t0 = time.perf_counter()
    from bot.kb.cli import build_kb
    from bot.kb.retrieval import E5_MAX_TOKENS, strip_fillers

    kb = build_kb(args.kb, args.config, strict=False)
    build_s = time.perf_counter() - t0
    _ = kb.embedder  # loaded lazily (on the first question that needs it): counted here all the same
    after = mem_kb()

    if args.queries:
        rows = [json.loads(x) for x in Path(args.queries).read_text(encoding="utf-8").splitlines() if x.strip()]
        queries = [(r["text"], r.get("lang") or "ko") for r in rows]
    else:
        queries = [(q, lang) for a in kb.articles for lang, qs in a.questions.items() for q in qs]
    random.Random(7).shuffle(queries)
    queries = queries[: args.n]
    if kb.embedder is not None:
        kb.embedder._queries.clear()  # noqa: SLF001 - a cold LRU, and no memo of article questions:
        kb.embedder._memo.clear()  # noqa: SLF001 - every query is embedded as a resident's would be
    cold: list[float] = []
    cold_cpu: list[float] = []
    cpu_by_stage: dict[bool, list[float]] = {False: [], True: []}
    wall_by_stage: dict[bool, list[float]] = {False: [], True: []}
    e5_tokens: list[int] = []
    dense = 0
    for text, lang in queries:
        t, c = time.perf_counter(), time.process_time()
        r = kb.answer(text, lang)
        cold.append((time.perf_counter() - t) * 1000)
        cold_cpu.append((time.process_time() - c) * 1000)
        cpu_by_stage[r.dense_used].append(cold_cpu[-1])
        wall_by_stage[r.dense_used].append(cold[-1])
        dense += int(r.dense_used)
        if r.dense_used and kb.embedder is not None:
            e5_tokens.append(kb.embedder.query_tokens(strip_fillers(text)))
    warm: list[float] = []
    warm_cpu: list[float] = []
    for text, lang in queries:
        t, c = time.perf_counter(), time.process_time()
        kb.answer(text, lang)
        warm.append((time.perf_counter() - t) * 1000)
        warm_cpu.append((time.process_time() - c) * 1000)
    how = "loaded" if getattr(kb, "loaded_from_disk", False) else "built"
    print(f"articles {len(kb.articles)}  {how} in {build_s:.1f} s  queries {len(queries)}")
    print(f"added latency, new questions:      p50 {pct(cold, 50):.2f} ms  p99 {pct(cold, 99):.2f} ms  "
          f"(embedding model used for {dense / max(len(queries), 1):.0%})")
    print(f"added latency, repeated questions: p50 {pct(warm, 50):.2f} ms  p99 {pct(warm, 99):.2f} ms")
    # CPU time of the process: what a question costs on a core of its own (wall times
    # above include waiting for a core on a busy machine).
    print(f"CPU, new questions:      p50 {pct(cold_cpu, 50):.2f} ms  p99 {pct(cold_cpu, 99):.2f} ms")
    print(f"CPU, repeated questions: p50 {pct(warm_cpu, 50):.2f} ms  p99 {pct(warm_cpu, 99):.2f} ms")
    for used, values in cpu_by_stage.items():
        if values:
            walls = wall_by_stage[used]
            print(f"new questions {'with' if used else 'without'} the e5 model ({len(values)}): "
                  f"CPU p50 {pct(values, 50):.2f} ms  p99 {pct(values, 99):.2f} ms; "
                  f"wall p50 {pct(walls, 50):.2f} ms  p99 {pct(walls, 99):.2f} ms")
    if e5_tokens and kb.embedder is not None:
        print(f"e5 tokens per question it ran for: p50 {pct(e5_tokens, 50)}  p99 {pct(e5_tokens, 99)}  "
              f"max {max(e5_tokens)} (cap {E5_MAX_TOKENS})")
    loaded = sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "scipy", "bm25s"})
    print(f"imported by loading and asking: {', '.join(loaded) or 'no scikit-learn, SciPy or bm25s'}")
    rss, pss = (after[0] - before[0]) / 1024, (after[1] - before[1]) / 1024
    print(f"memory of KB + model: RSS +{rss:.0f} MB  PSS +{pss:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
