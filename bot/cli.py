"""``pcrm``: the command line of the contact center.

The forms of ``route``, ``evaluate``, ``chat`` and ``train`` are fixed: other
tooling relies on them. ``serve`` and ``db`` run the web app and the store.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any


def _engine(**kw: Any):  # noqa: ANN202 - imported lazily so `pcrm --help` is instant
    from bot.engine import Engine

    return Engine(**kw)


def cmd_route(args: argparse.Namespace) -> int:
    result = _engine().route(args.text)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"{result['label']}  department={result['department']}  "
              f"confidence={result['confidence']:.2f}  lang={result['lang']}")
        for e in result["entities"]:
            print(f"  {e['entity']}: {e['value']}")
    return 0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def evaluate(engine: Any, path: Path) -> dict[str, Any]:
    """Label and department accuracy, per-label P/R/F1, confusions and latency on a JSONL set."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    engine.parse("warm-up")
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    support: Counter[str] = Counter()
    confusion: Counter[tuple[str, str]] = Counter()
    latencies: list[float] = []
    correct = dept_correct = dept_n = 0
    for row in rows:
        t0 = time.perf_counter()
        result = engine.route(row["text"])
        latencies.append((time.perf_counter() - t0) * 1000)
        gold, pred = row["label"], result["label"]
        support[gold] += 1
        if gold == pred:
            correct += 1
            tp[gold] += 1
        else:
            fp[pred] += 1
            fn[gold] += 1
            confusion[(gold, pred)] += 1
        if "department" in row:
            dept_n += 1
            dept_correct += int(row["department"] == result["department"])
    per_label = {}
    for label in sorted(set(support) | set(fp)):
        p = tp[label] / (tp[label] + fp[label]) if tp[label] + fp[label] else 0.0
        r = tp[label] / (tp[label] + fn[label]) if tp[label] + fn[label] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        per_label[label] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
                            "support": support[label]}
    n = len(rows)
    return {
        "n": n,
        "accuracy": round(correct / n, 4) if n else 0.0,
        "department_accuracy": round(dept_correct / dept_n, 4) if dept_n else None,
        "per_label": per_label,
        "confusion": [{"label": g, "predicted": p, "count": c} for (g, p), c in confusion.most_common()],
        "latency_ms": {"p50": round(_percentile(latencies, 50), 3), "p99": round(_percentile(latencies, 99), 3)},
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    report = evaluate(_engine(), Path(args.path))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(f"{report['n']} messages  accuracy {report['accuracy']:.3f}  "
          f"department accuracy {report['department_accuracy']}  "
          f"latency p50 {report['latency_ms']['p50']} ms  p99 {report['latency_ms']['p99']} ms")
    if report["confusion"]:
        print("\nworst confusions (gold -> predicted: count)")
        for c in report["confusion"][:20]:
            print(f"  {c['label']} -> {c['predicted']}: {c['count']}")
    print("\nper label (worst F1 first)")
    for label, m in sorted(report["per_label"].items(), key=lambda kv: kv[1]["f1"]):
        print(f"  {label:28s} P {m['precision']:.2f}  R {m['recall']:.2f}  F1 {m['f1']:.2f}  n={m['support']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from bot.nlu.model import ensure_model
    from bot.settings import get_settings

    s = get_settings()
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:5.1f}s] {msg}", flush=True)

    if args.force:
        import shutil

        shutil.rmtree(s.pcrm_model_dir, ignore_errors=True)
    path = ensure_model(s.pcrm_nlu_dir / "nlu", s.pcrm_model_dir, progress)
    print(f"model ready: {path} ({time.perf_counter() - t0:.1f}s)")
    if not args.no_kb:
        # The knowledge base's index is trained here too (BM25, the article vectors, the calibration;
        # minutes on a fresh model folder), so `pcrm serve` only loads it: its first start is then
        # seconds, not the build (the index is keyed by what it is built from, bot/kb/index_cache.py).
        t1 = time.perf_counter()
        kb = _engine().kb
        print(f"knowledge base ready: {len(kb.articles)} articles, "
              f"{'loaded' if kb.loaded_from_disk else 'built'} in {time.perf_counter() - t1:.1f}s")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from bot.messages import Message

    engine = _engine()
    sender = args.sender
    print("pcrm chat — Ctrl-D to quit. 번호를 입력하면 버튼을 고릅니다.")
    buttons: list[Any] = []
    while True:
        try:
            text = input("> ")
        except EOFError:
            print()
            return 0
        if text.strip().isdigit() and buttons and 1 <= int(text) <= len(buttons):
            text = buttons[int(text) - 1].payload
        turn = engine.handle(Message(channel="cli", sender_id=sender, text=text))
        buttons = []
        for reply in turn.replies:
            print(reply.text)
            for b in reply.buttons:
                buttons.append(b)
                print(f"  {len(buttons)}. {b.title}")
        if turn.routing.action in ("handoff", "paused"):
            print(f"  [{turn.routing.action} → {turn.routing.department}]")


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.serve import serve
    from bot.settings import get_settings
    from bot.telemetry import log_config

    settings = get_settings()
    settings.municipality()  # before any worker starts: a bad config.yml is one clear error, not N tracebacks
    json_logs = settings.pcrm_log_format.lower() == "json"
    return serve(args.host, args.port, args.workers, args.log_level,
                 log_config(args.log_level) if json_logs else None)


def cmd_db(args: argparse.Namespace) -> int:
    from crm_store.db import resolve_url, upgrade

    url = resolve_url()
    upgrade(url)
    print(f"database at head: {url.split('@')[-1]}")
    return 0


def cmd_telegram_set_webhook(args: argparse.Namespace) -> int:
    import asyncio

    from bot.settings import get_settings
    from channels.telegram import set_webhook

    url = asyncio.run(set_webhook(get_settings()))
    print(f"telegram webhook set: {url}")
    return 0


def cmd_telegram_poll(args: argparse.Namespace) -> int:
    import asyncio

    from bot.app import create_app
    from channels.telegram import poll

    app = create_app()
    print("polling Telegram (getUpdates); Ctrl-C to stop")
    try:
        asyncio.run(poll(app.state.channels["telegram"]))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_open311_keys_add(args: argparse.Namespace) -> int:
    from bot.open311 import add_key, keys_path
    from bot.settings import get_settings

    path = keys_path(get_settings())
    key = add_key(path, args.name)
    print(key)
    print(f"open311 key {args.name!r} added; only its sha256 is kept in {path}. "
          "Give the key to the client now: it cannot be shown again.", file=sys.stderr)
    return 0


def cmd_open311_keys_list(args: argparse.Namespace) -> int:
    from bot.open311 import key_names, keys_path
    from bot.settings import get_settings

    for name in key_names(keys_path(get_settings())):
        print(name)
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    import getpass

    from bot.console.auth import create_agent
    from crm_store.db import make_session_factory, resolve_url, upgrade

    password = args.password or getpass.getpass(f"password for {args.username}: ")
    url = resolve_url()
    upgrade(url)
    try:
        agent_id = create_agent(make_session_factory(url), args.username, password, args.role, args.department or [])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"user {args.username} added (id {agent_id}, role {args.role}, departments {args.department or []})")
    return 0


def cmd_export_rasa(args: argparse.Namespace) -> int:
    from bot.rasa_export import export
    from bot.settings import get_settings

    s = get_settings()
    files = export(Path(args.dir), s.pcrm_nlu_dir, s.config(), epochs=args.epochs, action_url=args.action_url)
    print(f"Rasa project written to {args.dir}: " + ", ".join(str(f.relative_to(args.dir)) for f in files))
    return 0


def cmd_reminders_run(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import date

    from bot.app import create_app
    from bot.reminders import run

    today = date.fromisoformat(args.today) if args.today else None
    done = asyncio.run(run(create_app(), today=today, dry_run=args.dry_run))
    for r in done:
        print(f"{r.status:12s} resident {r.resident_id}  {r.topic} due {r.due.isoformat()}  via {r.channel or '-'}")
    sent = sum(r.status == "sent" for r in done)
    print(f"{len(done)} reminder(s) due, {sent} sent" + (" (dry run: nothing sent)" if args.dry_run else ""))
    return 0


def cmd_test_conversations(args: argparse.Namespace) -> int:
    from bot import conversation_tests

    return conversation_tests.main(args)


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate ``config.yml`` (or PATH) without starting anything: what an editor runs after a change."""
    from bot.municipality import load
    from bot.settings import get_settings

    path = Path(args.path) if args.path else get_settings().pcrm_config
    load(path)  # raises ConfigError, printed by main()
    print(f"{path}: ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcrm", description="Public-sector contact center")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("route", help="classify one message")
    r.add_argument("text")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_route)

    e = sub.add_parser("evaluate", help="accuracy and latency on a JSONL set")
    e.add_argument("path")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("chat", help="talk to the bot in the terminal")
    c.add_argument("--sender", default="terminal")
    c.set_defaults(func=cmd_chat)

    cf = sub.add_parser("config", help="the municipality's config.yml").add_subparsers(dest="config_cmd",
                                                                                       required=True)
    cc = cf.add_parser("check", help="validate config.yml (PCRM_CONFIG) or PATH; exit 2 naming each bad key")
    cc.add_argument("path", nargs="?")
    cc.set_defaults(func=cmd_config_check)

    t = sub.add_parser("train", help="train and cache the NLU model and the knowledge base's index")
    t.add_argument("--force", action="store_true", help="retrain even if a model is cached")
    t.add_argument("--no-kb", action="store_true", help="the NLU model only (the index is built on first use)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("serve", help="run the web app")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("db", help="database schema")
    dsub = d.add_subparsers(dest="db_command", required=True)
    up = dsub.add_parser("upgrade", help="migrate to the latest schema")
    up.set_defaults(func=cmd_db)

    tg = sub.add_parser("telegram", help="Telegram bot")
    tgsub = tg.add_subparsers(dest="telegram_command", required=True)
    tgsub.add_parser("set-webhook", help="register PCRM_PUBLIC_URL/webhooks/telegram with the secret token") \
        .set_defaults(func=cmd_telegram_set_webhook)
    tgsub.add_parser("poll", help="long-poll getUpdates instead of a webhook (development)") \
        .set_defaults(func=cmd_telegram_poll)

    o3 = sub.add_parser("open311", help="Open311 GeoReport v2 API")
    o3sub = o3.add_subparsers(dest="open311_command", required=True)
    keys = o3sub.add_parser("keys", help="API keys for POST requests")
    keysub = keys.add_subparsers(dest="keys_command", required=True)
    kadd = keysub.add_parser("add", help="create a key (printed once; only its sha256 is stored)")
    kadd.add_argument("name", help="who the key is for, e.g. the app's name")
    kadd.set_defaults(func=cmd_open311_keys_add)
    keysub.add_parser("list", help="names of the stored keys").set_defaults(func=cmd_open311_keys_list)

    ex = sub.add_parser("export", help="export our data for other tools")
    exr = ex.add_subparsers(dest="export_command", required=True).add_parser(
        "rasa", help="a complete Rasa Open Source 3.x project (config, domain, data, endpoints)")
    exr.add_argument("dir")
    exr.add_argument("--epochs", type=int, default=100, help="DIETClassifier epochs")
    exr.add_argument("--action-url", default="http://localhost:5055/webhook", help="action server webhook")
    exr.set_defaults(func=cmd_export_rasa)

    rm = sub.add_parser("reminders", help="proactive reminders of due dates (config.yml deadlines)")
    rr = rm.add_subparsers(dest="reminders_command", required=True).add_parser(
        "run", help="send today's reminders to consenting residents who asked (idempotent)")
    rr.add_argument("--today", help="YYYY-MM-DD (default: today in municipality time)")
    rr.add_argument("--dry-run", action="store_true", help="list what would be sent; send and record nothing")
    rr.set_defaults(func=cmd_reminders_run)

    te = sub.add_parser("test", help="behaviour tests of the dialogue")
    tc = te.add_subparsers(dest="test_command", required=True).add_parser(
        "conversations", help="run the YAML conversations (tests/conversations) through the engine")
    from bot.conversation_tests import add_arguments as add_conversation_test_arguments

    add_conversation_test_arguments(tc)
    tc.set_defaults(func=cmd_test_conversations)

    from bot.kb.cli import add_parsers as add_kb_parsers  # evaluate-kb, kb import|export

    add_kb_parsers(sub)

    us = sub.add_parser("users", help="console users (agents)")
    usub = us.add_subparsers(dest="users_command", required=True)
    ua = usub.add_parser("add", help="add a console user")
    ua.add_argument("username")
    ua.add_argument("--role", choices=["agent", "supervisor", "admin", "field", "editor"], default="agent")
    ua.add_argument("--department", action="append", help="department code; repeat for several")
    ua.add_argument("--password", help="prompted for when omitted")
    ua.set_defaults(func=cmd_users_add)
    from bot.security_cli import add_doctor_command, add_user_commands

    add_user_commands(usub)  # passwd, disable, enable, list, sessions, revoke
    add_doctor_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        # No garbage collection while the server starts: its imports and models make ≈ 260,000
        # objects that all live on, and each full collection on the way walked them all (≈ 0.3 of
        # the supervisor's ≈ 3.5 CPU s). serve() freezes them and re-enables the collector before
        # any worker is forked (bot/serve.py).
        gc.disable()
    try:
        return _run(argv)
    finally:
        gc.enable()


def _run(argv: list[str]) -> int:
    from bot.municipality import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:  # a bad config.yml: every problem by key, no traceback
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

