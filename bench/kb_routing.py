"""Who answers a message, the classifier or the knowledge base: measured both ways.

    PYTHONPATH=$PWD .venv/bin/python bench/kb_routing.py [bench/heldout.jsonl] [--kb DIR ...] [--config PATH]

Runs whole turns (``Engine.decide``, a fresh conversation each) over the NLU held-out set and
reports, per gold kind:

* service requests: kept as requests (the form starts) vs taken by the KB — a report
  swallowed by an article is a lost ticket;
* catalog FAQ questions: the turn's label (an article's ``faq:`` code) equals the gold code;
* out-of-scope: answered by an article (should be rare);
* the turn-label accuracy over the whole set, the dialogue's counterpart of ``pcrm evaluate``.

Then the other way: questions about request topics (``QUESTIONS`` below, written for this
bench) that the KB should answer rather than open a form.

``--questions JSONL`` (repeatable; the ``pcrm evaluate-kb`` format, e.g. bench/kb_dev3.jsonl):
every row a new conversation through ``Engine.decide``, as a REST client would send it, and
what the resident got: the gold article (``answered right``), another article (``answered
wrong``), a suggestion list, "I don't know", or the classifier's handling (a form started, a
catalog answer, small talk, out-of-scope...). The end-to-end counterpart of ``evaluate-kb``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Information questions on request topics (not reports): the KB's, if it has the article.
QUESTIONS = [
    "층간소음 상담은 어디서 받아요?", "층간소음 기준이 몇 데시벨이에요?", "대형폐기물 수수료 얼마예요?",
    "소파 버리는 데 얼마 들어요?", "불법 주정차 과태료 얼마예요?", "견인된 차 어디서 찾아요?",
    "Where can I get help with noise from upstairs?", "How much does it cost to throw away a sofa?",
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", nargs="?", default=str(ROOT / "bench" / "heldout.jsonl"))
    ap.add_argument("--kb", action="append")
    ap.add_argument("--config")
    ap.add_argument("--questions", action="append", default=[],
                    help="KB question rows (JSONL: text, lang, article) asked end to end")
    ap.add_argument("--only-questions", action="store_true", help="skip the NLU held-out part")
    ap.add_argument("--numbers-only", action="store_true",
                    help="no per-question lines (for held-out sets, whose questions are not to be read)")
    args = ap.parse_args()

    from bot.dialogue.state import DialogueState
    from bot.engine import Engine
    from bot.kb.cli import build_kb
    from bot.messages import Message

    kb = build_kb(args.kb, args.config, strict=False) if args.kb else None
    engine = Engine(kb=kb, clock=lambda: datetime(2026, 11, 26, 2, 0, tzinfo=UTC))
    knowledge = engine.knowledge
    if args.questions:
        kb_questions(engine, args.questions, show=not args.numbers_only)
        if args.only_questions:
            return 0
    rows = [json.loads(x) for x in Path(args.path).read_text(encoding="utf-8").splitlines() if x.strip()]
    stats: dict[str, Counter[str]] = {k: Counter() for k in ("service", "faq", "out_of_scope", "other")}
    right = 0
    diverted: list[tuple[str, str, str]] = []
    faq_other: list[tuple[str, str, str]] = []
    for i, row in enumerate(rows):
        state = DialogueState(key=f"bench:{i}")
        turn = engine.decide(Message("rest", f"bench{i}", row["text"]), state)
        gold = row["label"]
        kb_answered = turn.event("kb_answer") is not None
        right += int(turn.label == gold)
        kind = ("service" if gold in knowledge.services else "faq" if gold in knowledge.faq
                else "out_of_scope" if gold == "conv.out_of_scope" else "other")
        c = stats[kind]
        c["n"] += 1
        c["label_right"] += int(turn.label == gold)
        c["kb_answered"] += int(kb_answered)
        if kind == "faq" and turn.label != gold:
            faq_other.append((row["text"], gold, turn.label))
        if kind == "service":
            c["kept_as_request"] += int(turn.routing.action == "collect" or turn.label == gold)
            if kb_answered:
                diverted.append((row["text"], gold, turn.label))
    print(f"{len(rows)} turns  turn-label accuracy {right / len(rows):.3f}")
    for kind, c in stats.items():
        if c["n"]:
            extra = f"  kept as request {c['kept_as_request'] / c['n']:.3f}" if kind == "service" else ""
            print(f"  {kind:13s} n={c['n']:4d}  label right {c['label_right'] / c['n']:.3f}  "
                  f"answered by KB {c['kb_answered'] / c['n']:.3f}{extra}")
    for text, gold, label in diverted[:15]:
        print(f"    request taken by the KB: {text!r} ({gold} -> {label})")
    for text, gold, label in faq_other[:15]:
        print(f"    FAQ recorded otherwise: {text!r} ({gold} -> {label})")
    print("questions on request topics:")
    for i, q in enumerate(QUESTIONS):
        turn = engine.decide(Message("rest", f"q{i}", q), DialogueState(key=f"q:{i}"))
        print(f"  {q!r}: {turn.label} ({turn.routing.action})")
    return 0


def kb_questions(engine: object, paths: list[str], show: bool = True) -> None:
    """End-to-end outcome of knowledge-base questions, one new conversation each."""
    from bot.dialogue.state import DialogueState
    from bot.messages import Message

    rows = [json.loads(x) for p in paths for x in Path(p).read_text(encoding="utf-8").splitlines() if x.strip()]
    kb = engine.kb  # type: ignore[attr-defined]
    out: Counter[str] = Counter()
    losses: list[tuple[str, str, str]] = []
    n_gold = 0
    for i, row in enumerate(rows):
        gold = row.get("article")
        golds = [gold] if isinstance(gold, str) else list(gold or [])
        state = DialogueState(key=f"kbq:{i}")
        turn = engine.decide(Message("rest", f"kbq{i}", row["text"]), state)  # type: ignore[attr-defined] # REST: no language hint
        answered = [e.data.get("article") for e in turn.events if e.type == "kb_answer"]
        faq_codes = {a.faq for a in (kb.get(g) for g in golds) if a is not None and a.faq}
        if answered:
            outcome = "answered right" if golds and sorted(answered) == sorted(golds) else "answered wrong"
        elif golds and turn.label in faq_codes:
            outcome = "answered right"  # the catalog's own answer to the article's topic
        elif turn.event("kb_suggest") is not None:
            outcome = "suggested"
        elif turn.event("kb_abstain") is not None:
            outcome = "said it does not know"
        elif turn.routing.action == "collect":
            outcome = "form started"
        elif turn.routing.action == "handoff":
            outcome = "handed off"
        else:
            outcome = f"classifier: {turn.label}"
        key = ("gold " if golds else "no-answer ") + (outcome if not outcome.startswith("classifier") else "classifier")
        out[key] += 1
        n_gold += int(bool(golds))
        if golds and outcome != "answered right" or not golds and outcome == "answered wrong":
            losses.append((row["text"], str(gold), outcome if not answered else f"{outcome} {answered}"))
    n = len(rows)
    right = out["gold answered right"]
    wrong = out["gold answered wrong"] + out["no-answer answered wrong"]
    print(f"KB questions end to end ({', '.join(paths)}): {n} rows, {n_gold} answerable")
    print(f"  answered right {right / max(n_gold, 1):.3f} of answerable; answered wrong {wrong / max(n, 1):.3f} of all")
    for key, c in sorted(out.items()):
        print(f"    {key:40s} {c}")
    for text, gold, outcome in losses if show else []:
        print(f"    LOSS {text!r}: {gold} -> {outcome}")


if __name__ == "__main__":
    raise SystemExit(main())
