"""Knowledge-base questions the way a resident sends them: one per new conversation, over REST.

    .venv/bin/python bench/kb_rest.py bench/kb_heldout/*.jsonl [--workers 1] [--show 20]

``pcrm evaluate-kb`` measures the retrieval alone; this measures the whole path a resident's
question takes (the channel, the inbox, the classifier that may take the message for a report or
a greeting, the dialogue, the knowledge base, the reply's rendering) on a real ``pcrm serve`` with
a fresh SQLite file. Each row of the question files (``{"text", "lang", "article"|"articles"}``;
no article: should not be answered) goes to ``POST /webhooks/rest/webhook`` from a new sender.

Which article answered is read from the reply the resident sees: an answer ends with its source
line (``출처: <title>`` / ``Source: <title>``, ``bot.kb.retrieval.cited_answer``), whose title is
mapped back to the article; suggestions ("did you mean …") carry no source line and count as not
answered. Printed: answered correctly (of the answerable rows), answered wrong (of all rows: an
unanswerable row answered, or the wrong article), not answered, and the worst misses.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from memory import REST, first_answer, start, stop  # noqa: E402

_CITE = re.compile(r"^(?:출처|Source):\s*(.+?)(?:\s+https?://\S+)?\s*$", re.MULTILINE)


def answer_index() -> dict[str, str]:
    """Every answer body a reply may carry (ko/en, placeholders filled from ``config.yml``) →
    article id. Several articles cite the same source page, so the source line alone is
    ambiguous; the body is not."""
    from bot.kb.articles import Placeholders, load_catalog_departments, load_dir
    from bot.settings import Settings

    settings = Settings()
    kb_dir = settings.pcrm_kb_dir or settings.pcrm_nlu_dir / "knowledge"
    departments = load_catalog_departments(settings.pcrm_nlu_dir)
    articles = load_dir(kb_dir, settings.config(), departments=departments, strict=False, problems=[])
    fill = Placeholders(settings.config(), departments)
    out: dict[str, str] = {}
    for a in articles:
        for lang, body in a.answer.items():
            out.setdefault(_norm(fill.render(body, lang)), a.id)
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def cited(texts: list[str], bodies: dict[str, str]) -> list[str]:
    """The articles whose answers the replies carry (a reply with a source line is an answer)."""
    found: list[str] = []
    for text in texts:
        m = _CITE.search(text)
        if not m:
            continue
        body = _norm(text[:m.start()])
        aid = bodies.get(body, "?" + m.group(1).strip())
        if aid not in found:
            found.append(aid)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--show", type=int, default=15, help="misses printed")
    args = ap.parse_args()
    rows = [json.loads(line) for p in args.paths for line in Path(p).read_text(encoding="utf-8").splitlines()
            if line.strip()]
    bodies = answer_index()
    with tempfile.TemporaryDirectory(prefix="pcrm-kbrest-") as d:
        tmp = Path(d)
        proc, url = start(args.workers, f"sqlite:///{tmp / 'pcrm.db'}", None, tmp, "warning")
        try:
            first_answer(proc, url, time.monotonic(), timeout=900)
            with httpx.Client(timeout=30) as client:
                def ask(i_row: tuple[int, dict]) -> list[str]:
                    i, row = i_row
                    r = client.post(url + REST, json={"sender": f"kbrest-{i}", "message": row["text"]})
                    r.raise_for_status()
                    return [m.get("text", "") for m in r.json()]

                with ThreadPoolExecutor(args.concurrency) as pool:
                    replies = list(pool.map(ask, enumerate(rows)))
        finally:
            stop(proc)
    n_ans = ok = wrong = not_answered = 0
    misses: list[tuple[str, str, list[str], str]] = []
    for row, texts in zip(rows, replies, strict=True):
        golds = row.get("articles") or ([row["article"]] if row.get("article") else [])
        got = cited(texts, bodies)
        n_ans += bool(golds)
        if golds and got and sorted(got) == sorted(golds):
            ok += 1
        elif got:
            wrong += 1
            misses.append(("WRONG", row["text"], got, ",".join(golds) or "-"))
        else:
            not_answered += 1
            if golds:
                misses.append(("MISS", row["text"], [texts[0][:60] if texts else ""], ",".join(golds)))
    n = len(rows)
    print(f"{n} questions over REST ({n_ans} answerable): answered correctly {ok / max(n_ans, 1):.3f}, "
          f"answered wrong {wrong / max(n, 1):.3f}, not answered {not_answered / max(n, 1):.3f}")
    for kind, text, got, gold in sorted(misses, key=lambda m: m[0] != "WRONG")[:args.show]:
        print(f"  {kind:5} {text!r} -> {got} (gold {gold})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
