"""``pcrm evaluate-kb`` and ``pcrm kb import|export``: the knowledge base on the command line.

Kept apart from bot/cli.py (which only dispatches here) so the editor's storage commands
grow in this module without touching the fixed forms of ``route``/``evaluate``/``chat``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from bot.kb.articles import Article, ArticleError, load_catalog_departments, load_dir
from bot.kb.retrieval import KnowledgeBase, Result


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _answered_ids(r: Result) -> list[str]:
    if r.decision != "answer":
        return []
    if r.parts:
        return [p.hits[0].article.id for p in r.parts]
    return [r.hits[0].article.id]


def evaluate_kb(kb: KnowledgeBase, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Retrieval quality and cost on ``{"text", "lang", "article": id | [ids] | null, "style",
    "context"?}`` rows.

    * ``top1_accuracy``: answerable rows whose best hit is the gold article (whatever the decision);
    * ``answered_correct``: answerable rows *answered* with the gold article(s);
    * ``answered_wrong``: rows (all) answered with anything else (incl. an unanswerable row answered);
    * abstention: a row is *not answered* when the decision is ``suggest`` or ``abstain``; precision =
      share of those where answering would have been wrong (no gold, or top hit wrong), recall =
      share of the rows that should not be answered (no gold, or top hit wrong) that were not;
    * ``suggest_hit``: suggest decisions whose buttons include the gold article.
    """
    kb.answer("warm-up", "ko")
    lat: list[float] = []
    n_ans = top1 = ans_ok = ans_wrong = 0
    not_answered = not_answered_right = should_not = should_not_caught = 0
    suggest = suggest_hit = 0
    decisions: Counter[str] = Counter()
    by_style: dict[str, Counter[str]] = defaultdict(Counter)
    wrong: list[dict[str, Any]] = []
    sweep_rows: list[tuple[float, bool, bool]] = []  # (p, top hit right, answerable)
    for row in rows:
        gold = row.get("article")
        golds = [gold] if isinstance(gold, str) else list(gold or [])
        t0 = time.perf_counter()
        r = kb.answer(row["text"], row.get("lang") or "ko", context=row.get("context"))
        lat.append((time.perf_counter() - t0) * 1000)
        decisions[r.decision] += 1
        style = str(row.get("style") or "-")
        top = r.hits[0].article.id if r.hits else None
        answered = _answered_ids(r)
        top_right = bool(golds) and (top in golds if len(golds) == 1 else sorted(answered) == sorted(golds))
        if golds:
            n_ans += 1
            top1 += int(top_right)
        correct = bool(golds) and bool(answered) and sorted(answered) == sorted(golds)
        if golds and correct:
            ans_ok += 1
        if answered and not correct:
            ans_wrong += 1
            wrong.append({"text": row["text"], "gold": gold, "answered": answered, "p": round(r.confidence, 3)})
        sweep_rows.append((r.confidence, top_right, bool(golds)))
        bad_to_answer = not golds or not top_right
        if r.decision != "answer":
            not_answered += 1
            not_answered_right += int(bad_to_answer)
        if bad_to_answer:
            should_not += 1
            should_not_caught += int(r.decision != "answer")
        if r.decision == "suggest":
            suggest += 1
            suggest_hit += int(any(h.article.id in golds for h in r.hits))
        by_style[style]["n"] += 1
        by_style[style]["answered_correct"] += int(correct)
        by_style[style]["answered_wrong"] += int(bool(answered) and not correct)
    n = len(rows)
    return {
        "n": n, "answerable": n_ans, "articles": len(kb.articles), "revision": kb.revision,
        "top1_accuracy": round(top1 / n_ans, 4) if n_ans else None,
        "answered_correct": round(ans_ok / n_ans, 4) if n_ans else None,
        "answered_wrong": round(ans_wrong / n, 4) if n else None,
        "abstention_precision": round(not_answered_right / not_answered, 4) if not_answered else None,
        "abstention_recall": round(should_not_caught / should_not, 4) if should_not else None,
        "suggest_hit": round(suggest_hit / suggest, 4) if suggest else None,
        "decisions": dict(decisions),
        "by_style": {k: dict(v) for k, v in sorted(by_style.items())},
        "latency_ms": {"p50": round(_percentile(lat, 50), 3), "p99": round(_percentile(lat, 99), 3)},
        "wrong": wrong[:30],
        # What other answer thresholds would give (answered correct / answered wrong): for tuning
        # on a development set, never on a held-out one.
        "sweep": {f"{t:.2f}": [round(sum(1 for p, ok, g in sweep_rows if p >= t and ok) / max(n_ans, 1), 4),
                               round(sum(1 for p, ok, g in sweep_rows if p >= t and not ok) / max(n, 1), 4)]
                  for t in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)},
    }


def evaluate_loo(kb: KnowledgeBase) -> dict[str, Any]:
    """:func:`evaluate_kb`'s measures on the articles' own questions, each left out of the index."""
    results = kb.leave_one_out()
    it = iter(results)

    class _Replay:  # evaluate_kb's interface, answering from the leave-one-out results
        articles = kb.articles
        revision = kb.revision

        @staticmethod
        def answer(text: str, lang: str = "ko", context: str | None = None) -> Result:
            if text == "warm-up":
                return Result("abstain", [], 0.0)
            return next(it)[2]

    rows = [{"text": q, "article": gold, "style": "loo"} for q, gold, _ in results]
    return evaluate_kb(_Replay(), rows)  # type: ignore[arg-type]


def _config(path: str | None) -> dict[str, Any]:
    from bot.settings import get_settings, load_config

    settings = get_settings()
    return load_config(Path(path)) if path else settings.config()


def _kb_dir(path: str | None) -> Path:
    from bot.settings import get_settings

    settings = get_settings()
    return Path(path) if path else (settings.pcrm_kb_dir or settings.pcrm_nlu_dir / "knowledge")


def build_kb(kb_dirs: list[str] | None, config_path: str | None, *, strict: bool = True) -> KnowledgeBase:
    """A KB from one or more article folders (the content of several areas evaluated together)."""
    from bot.settings import get_settings

    config = _config(config_path)
    departments = load_catalog_departments()
    articles: list[Article] = []
    problems: list[str] = []
    for d in kb_dirs or [str(_kb_dir(None))]:
        articles += load_dir(d, config, departments=departments, strict=strict, problems=problems)
    for p in problems:
        print(f"skipped: {p}")
    return KnowledgeBase(articles, config, departments=departments, cache_dir=get_settings().pcrm_model_dir)


def cmd_evaluate_kb(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for path in args.path or []:
        rows += [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        kb = build_kb(args.kb, args.config, strict=not args.lenient)
    except ArticleError as exc:
        print(f"knowledge base does not load:\n{exc}")
        return 2
    report = evaluate_loo(kb) if args.loo else evaluate_kb(kb, rows)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(f"{report['n']} questions ({report['answerable']} answerable) over {report['articles']} articles")
    print(f"  top-1 accuracy        {report['top1_accuracy']}")
    print(f"  answered correctly    {report['answered_correct']}")
    print(f"  answered wrong        {report['answered_wrong']}")
    print(f"  abstention precision  {report['abstention_precision']}  recall {report['abstention_recall']}")
    print(f"  suggest hit           {report['suggest_hit']}   decisions {report['decisions']}")
    print(f"  latency p50 {report['latency_ms']['p50']} ms  p99 {report['latency_ms']['p99']} ms")
    print("  answer threshold sweep (correct / wrong): "
          + "  ".join(f"{t}: {c:.3f}/{w:.3f}" for t, (c, w) in report["sweep"].items()))
    for style, c in report["by_style"].items():
        print(f"  style {style:12s} n={c['n']:4d}  correct {c['answered_correct'] / c['n']:.3f}  "
              f"wrong {c['answered_wrong'] / c['n']:.3f}")
    if report["wrong"]:
        print("\nanswered wrong (first 30):")
        for w in report["wrong"]:
            print(f"  {w['text']!r}: gold {w['gold']} answered {w['answered']} p={w['p']}")
    return 0


def cmd_kb_import(args: argparse.Namespace) -> int:
    """Validate a seed folder (storage of the published copy: the editor console's business)."""
    try:
        articles = load_dir(_kb_dir(args.dir), _config(None))
    except ArticleError as exc:
        print(f"not imported, {len(exc.problems)} problem(s):\n{exc}")
        return 2
    print(f"{len(articles)} articles valid in {_kb_dir(args.dir)}")
    return 0


def export_articles(articles: list[Article], out: Path) -> list[Path]:
    """Write articles as seed files, one per area (the schema of nlu_data/knowledge/README.md)."""
    out.mkdir(parents=True, exist_ok=True)
    areas: dict[str, list[Article]] = defaultdict(list)
    for a in articles:
        areas[a.area or a.id.split(".", 1)[0]].append(a)
    written = []
    for area, items in sorted(areas.items()):
        path = out / f"{area}.yml"
        doc = {"area": area, "articles": [a.to_dict() for a in items]}
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=110), encoding="utf-8")
        written.append(path)
    return written


def cmd_kb_export(args: argparse.Namespace) -> int:
    articles = load_dir(_kb_dir(None), _config(None))
    for path in export_articles(articles, Path(args.dir)):
        print(path)
    return 0


def add_parsers(sub: Any) -> None:
    """``evaluate-kb`` and ``kb import|export`` on bot/cli.py's sub-command parser."""
    ek = sub.add_parser("evaluate-kb", help="knowledge-base retrieval on a JSONL set")
    ek.add_argument("--loo", action="store_true",
                    help="instead of a JSONL set: every article question, left out of the index")
    ek.add_argument("path", nargs="*", help='JSONL of {"text", "lang", "article"|null, "style"}')
    ek.add_argument("--kb", action="append", help="article folder (repeatable; default PCRM_KB_DIR)")
    ek.add_argument("--config", help="config.yml to fill placeholders from (default PCRM_CONFIG)")
    ek.add_argument("--lenient", action="store_true", help="skip invalid articles instead of stopping")
    ek.add_argument("--json", action="store_true")
    ek.set_defaults(func=cmd_evaluate_kb)

    kb = sub.add_parser("kb", help="knowledge base: seed files and the published copy in the store")
    kbs = kb.add_subparsers(dest="kb_command", required=True)
    from bot.kb.store_cli import add_kb_store_parsers  # import|export against the store (bot/kb/store_cli.py)

    add_kb_store_parsers(kbs)
