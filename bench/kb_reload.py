"""How long an edit takes to go live in a worker: the revision poll and the reload after a publish.

    .venv/bin/python bench/kb_reload.py [KB_DIR] [--reloads N]

Uses a throwaway SQLite database: imports the seed (the first start of a worker), times the
poll that finds nothing new (every ``PCRM_KB_POLL_S`` seconds in every worker), then publishes
an edited answer N times and times each reload (read the published articles + rebuild the
retrieval index with ``KnowledgeBase.replace``).  An edit is live in a worker at most one poll
interval plus one reload after it is published (at once plus one reload on the worker that
published it, and on every worker with ``REDIS_URL``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from bot.kb.retrieval import shared_knowledge_base
    from bot.kb.sync import KbSync
    from bot.settings import get_settings
    from crm_store import kb as store
    from crm_store.db import make_session_factory, upgrade

    p = argparse.ArgumentParser()
    p.add_argument("kb_dir", nargs="?", default=str(ROOT / "nlu_data" / "knowledge"))
    p.add_argument("--reloads", type=int, default=3)
    args = p.parse_args()
    settings = get_settings()
    config = settings.config()
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    upgrade(url)
    sessions = make_session_factory(url)
    kb = shared_knowledge_base(Path(args.kb_dir), config, cache_dir=settings.pcrm_model_dir,
                               nlu_dir=settings.pcrm_nlu_dir)
    sync = KbSync(sessions, lambda articles, _rev: kb.replace(articles), seed_dir=Path(args.kb_dir), config=config)
    t0 = time.perf_counter()
    sync.bootstrap()
    print(f"{len(sync.articles)} articles; first start (seed import + load + index): {time.perf_counter() - t0:.2f} s")
    polls = []
    for _ in range(200):
        t0 = time.perf_counter()
        sync.refresh()
        polls.append((time.perf_counter() - t0) * 1000)
    polls.sort()
    print(f"poll with nothing new: p50 {polls[len(polls) // 2]:.2f} ms, max {polls[-1]:.2f} ms")
    article_id = sync.articles[0].id
    reloads = []
    for i in range(args.reloads):
        with sessions.begin() as s:
            content, base = store.working_content(s, article_id)
            content["answer"]["ko"] = content["answer"]["ko"].rstrip() + f" ({i})"
            v = store.save_draft(s, content, "bench-a", base_version=base)
            store.submit(s, article_id, v, "bench-a")
            store.publish(s, article_id, v, "bench-b", "editor")
        t0 = time.perf_counter()
        assert sync.refresh()
        reloads.append(time.perf_counter() - t0)
    print("reload after a publish (read + rebuild the index): " + ", ".join(f"{r:.2f}" for r in reloads) + " s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
