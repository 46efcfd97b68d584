"""Side by side on this machine, in one run: our engine against Rasa Open Source 3.6.

    .venv/bin/python bench/compare_rasa.py [HELDOUT.jsonl] [--levels 1,16,64] [--json OUT]
    (or: bench/compare_rasa, make compare-rasa)

Both learn from the same ``nlu_data/`` (ours: ``pcrm train --force``; Rasa: ``rasa train
nlu`` on ``pcrm export rasa``, then ``rasa train`` for the rules it serves with), both are
scored on the same held-out JSONL (label accuracy: ours by ``pcrm evaluate``, Rasa by its
``/model/parse``), and both servers' REST webhooks (``/webhooks/rest/webhook``) are driven
by 1, 16 and 64 concurrent conversations on the loopback interface (bounded in messages and
time): p50/p99 latency and messages per second. Also: training time, cold start (process
start to the first answered message), peak RSS of each server (Rasa's including its
``rasa_sdk`` action server, which runs our ``actions/``). Prints one table with the ratios.

Needs the Rasa venv: ``bash bench/rasa_env.sh`` (``make rasa-env``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
RASA_ENV = {"RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}
#: Conversations in the load test: one-turn intents both bots answer the same way
#: (FAQ answers run our action_answer_faq: in-process for us, on the action server for Rasa).
LOAD_LABELS = ("faq.", "conv.greet", "conv.thanks", "conv.goodbye")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class PeakRSS:
    """Samples the resident set of a process tree every 50 ms; ``peak`` in MiB."""

    def __init__(self, *pids: int) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> float:
        total = 0
        for proc in self.procs:
            try:
                for p in [proc, *proc.children(recursive=True)]:
                    total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(0.05)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=2)
        return self.peak


def run_timed(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def start(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    fh = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: no answer within {timeout:.0f}s; see {log}")


def first_answer(webhook: str, proc: subprocess.Popen[bytes], t0: float, timeout: float, log: Path) -> float:
    """Seconds from ``t0`` (process start) to the first non-empty answer of the REST webhook."""
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before answering; see {log}")
        try:
            r = httpx.post(webhook, json={"sender": "cold-start", "message": "안녕하세요"}, timeout=30)
            if r.status_code == 200 and r.json():
                return time.perf_counter() - t0
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{webhook}: no first answer within {timeout:.0f}s; see {log}")


async def drive(webhook: str, messages: list[str], conversations: int, per_conversation: int,
                total: int, max_seconds: float, tag: str) -> dict[str, Any]:
    """``conversations`` concurrent residents, each a sequence of conversations of
    ``per_conversation`` messages, until ``total`` messages or ``max_seconds`` are spent.

    Each resident has an HTTP client (one kept-alive connection) of its own, as each resident's
    phone or browser has. One ``httpx.AsyncClient`` shared by 64 residents was itself the
    bottleneck: its connection pool cost 8–10 ms of CPU per request at 64 connections (3 ms at
    16; encode/httpx#3215) and, starved of CPU on the shared machine, delayed requests by
    seconds — the "tail" of the 64-conversation rows, seen by the client only (the server was
    idle 75 % of the time). The load generator's own CPU is reported with the results.
    """
    latencies: list[float] = []
    errors = 0
    empty = 0
    sent = 0
    lock = asyncio.Lock()
    deadline = time.perf_counter() + max_seconds

    async def resident(idx: int, client: httpx.AsyncClient) -> None:
        nonlocal errors, empty, sent
        rng = random.Random(idx)
        conv = 0
        while True:
            conv += 1
            sender = f"{tag}-{idx}-{conv}"
            for _ in range(per_conversation):
                async with lock:
                    if sent >= total or time.perf_counter() > deadline:
                        return
                    sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(webhook, json={"sender": sender, "message": rng.choice(messages)})
                    ok = r.status_code == 200
                    body = r.json() if ok else None
                except (httpx.HTTPError, ValueError):
                    ok, body = False, None
                latencies.append((time.perf_counter() - t0) * 1000)
                if not ok:
                    errors += 1
                elif not body:
                    empty += 1

    clients = [httpx.AsyncClient(timeout=60, verify=False,  # plain HTTP: no CA bundle read 64 times
                                 limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
               for _ in range(conversations)]
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(resident(i, client) for i, client in enumerate(clients)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        for client in clients:
            await client.aclose()
    # The load generator's own CPU: a generator pegged near its share of the machine measures itself.
    return {"concurrency": conversations, "messages": len(latencies), "errors": errors, "empty": empty,
            "seconds": round(wall, 2), "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1), "msgs_per_s": round(len(latencies) / wall, 1),
            "client_cpu_ms_per_msg": round(cpu * 1000 / max(1, len(latencies)), 2),
            "client_cores": round(cpu / wall, 2)}


def load_level(webhook: str, messages: list[str], c: int, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    total = max(args.min_messages, c * args.per_conversation * 2)
    res = asyncio.run(drive(webhook, messages, c, args.per_conversation, total, args.max_seconds, f"{tag}-c{c}"))
    res["load_avg"] = round(os.getloadavg()[0], 1)
    print(f"  {tag} c={c}: {res}", flush=True)
    return res


def warm_up(webhook: str, messages: list[str], tag: str) -> None:
    asyncio.run(drive(webhook, messages, 4, 4, 40, 60, f"{tag}-warm"))  # not counted


def rasa_accuracy(url: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    correct = 0
    with httpx.Client(timeout=30) as client:
        for row in rows:
            r = client.post(f"{url}/model/parse", json={"text": row["text"]})
            r.raise_for_status()
            correct += int((r.json().get("intent") or {}).get("name") == row["label"])
    return {"n": len(rows), "accuracy": round(correct / len(rows), 4) if rows else 0.0}


def fmt(v: Any, unit: str = "") -> str:
    if isinstance(v, float):
        return f"{v:.3f}{unit}" if v < 1 and unit == "" else f"{v:,.1f}{unit}"
    return f"{v}{unit}"


def table(r: dict[str, Any]) -> str:
    """The comparison as a Markdown table; ratio = pcrm ÷ Rasa."""
    rows: list[tuple[str, Any, Any, str]] = [
        ("held-out label accuracy", r["ours"]["accuracy"], r["rasa"]["accuracy"], ""),
        ("training time (`pcrm train --force` / `rasa train`)", r["ours"]["train_s"], r["rasa"]["train_full_s"],
         " s"),
        ("cold start (process start → first answer)", r["ours"]["cold_start_s"], r["rasa"]["cold_start_s"], " s"),
    ]
    for mine, theirs in zip(r["ours"]["load"], r["rasa"]["load"], strict=True):
        c = mine["concurrency"]
        rows += [(f"p50 latency, {c} concurrent", mine["p50_ms"], theirs["p50_ms"], " ms"),
                 (f"p99 latency, {c} concurrent", mine["p99_ms"], theirs["p99_ms"], " ms"),
                 (f"messages per second, {c} concurrent", mine["msgs_per_s"], theirs["msgs_per_s"], "")]
    rows += [("peak RSS (server; Rasa: + action server)", r["ours"]["peak_rss_mib"], r["rasa"]["peak_rss_mib"],
              " MiB")]
    lines = ["| metric | pcrm | Rasa 3.6.21 | pcrm ÷ Rasa |", "|---|---:|---:|---:|"]
    for name, a, b, unit in rows:
        ratio = f"{a / b:.2f}" if isinstance(a, int | float) and isinstance(b, int | float) and b else "-"
        lines.append(f"| {name} | {fmt(a, unit)} | {fmt(b, unit)} | {ratio} |")
    return "\n".join(lines)


def verdict(r: dict[str, Any]) -> list[str]:
    out = []
    acc_ok = r["ours"]["accuracy"] >= r["rasa"]["accuracy"]
    out.append(f"accuracy ≥ Rasa's: {'PASS' if acc_ok else 'FAIL'} "
               f"({r['ours']['accuracy']:.4f} vs {r['rasa']['accuracy']:.4f})")
    at16 = [(m, t) for m, t in zip(r["ours"]["load"], r["rasa"]["load"], strict=True) if m["concurrency"] == 16]
    if at16:
        m, t = at16[0]
        ok = m["p99_ms"] * 3 <= t["p99_ms"]
        out.append(f"p99 at 16 concurrent ≤ ⅓ of Rasa's: {'PASS' if ok else 'FAIL'} "
                   f"({m['p99_ms']} ms vs {t['p99_ms']} ms, ratio {m['p99_ms'] / t['p99_ms']:.3f})")
    errs = sum(x["errors"] for side in ("ours", "rasa") for x in r[side]["load"])
    if errs:
        out.append(f"WARNING: {errs} failed requests during the load test (see the logs)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("heldout", nargs="?", default=str(ROOT / "bench" / "heldout.jsonl"))
    p.add_argument("--rasa-venv", default=os.environ.get("RASA_VENV", str(ROOT / "var" / "rasa-venv")))
    p.add_argument("--work", default=None, help="working folder (default: a temporary one, removed afterwards)")
    p.add_argument("--epochs", type=int, default=100, help="Rasa DIETClassifier epochs")
    p.add_argument("--levels", default="1,16,64", help="concurrent conversations per load level")
    p.add_argument("--per-conversation", type=int, default=5, help="messages per conversation")
    p.add_argument("--min-messages", type=int, default=400, help="messages per load level at least")
    p.add_argument("--max-seconds", type=float, default=120, help="time cap per load level")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite",
                   help="our store: a temporary SQLite file, or a fresh schema on --postgres (dropped afterwards)")
    p.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--rasa-train-nlu", action="store_true",
                   help="also time `rasa train nlu` on its own (another full DIET training)")
    p.add_argument("--skip-rasa", action="store_true", help="measure ours only (a quick check of the harness)")
    args = p.parse_args(argv)

    rasa_bin = Path(args.rasa_venv) / "bin" / "rasa"
    if not rasa_bin.exists() and not args.skip_rasa:
        print(f"no Rasa at {rasa_bin}: run `bash bench/rasa_env.sh` (make rasa-env) first", file=sys.stderr)
        return 2
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    heldout = Path(args.heldout).resolve()
    rows = [json.loads(line) for line in heldout.read_text(encoding="utf-8").splitlines() if line.strip()]
    messages = [r["text"] for r in rows if r["label"].startswith(LOAD_LABELS)]
    work = Path(args.work or tempfile.mkdtemp(prefix="pcrm-vs-rasa-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    print(f"working in {work} (logs in {logs})", flush=True)

    base_env = {k: v for k, v in os.environ.items() if k not in ("PCRM_ENGINE", "RASA_URL", "REDIS_URL")}
    schema = None
    db_url = f"sqlite:///{work / 'pcrm.db'}"
    if args.db == "postgres":
        from urllib.parse import quote

        schema = f"pcrm_vs_rasa_{os.getpid()}"
        db_url = f"{args.postgres}?options={quote(f'-csearch_path={schema}')}"
    ours_env = {**base_env, "PCRM_MODEL_DIR": str(work / "pcrm-model"), "DATABASE_URL": db_url,
                "PCRM_ENGINE": "builtin"}
    rasa_env = {**base_env, **RASA_ENV}
    actions_env = {**base_env, "DATABASE_URL": f"sqlite:///{work / 'actions.db'}", "PYTHONPATH": str(ROOT)}
    result: dict[str, Any] = {"heldout": str(heldout), "n": len(rows), "levels": levels, "db": args.db,
                              "machine": {"cores": os.cpu_count(),
                                          "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
                              "load_start": round(os.getloadavg()[0], 1)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # --- training and accuracy ------------------------------------------------------------
        print("pcrm: train, evaluate", flush=True)
        pcrm = str(BIN / "pcrm")
        train_s = run_timed([pcrm, "train", "--force"], cwd=ROOT, env=ours_env, log=logs / "pcrm-train.log")
        report = json.loads(subprocess.run([pcrm, "evaluate", str(heldout), "--json"], cwd=ROOT, env=ours_env,
                                           capture_output=True, check=True, text=True).stdout)
        result["ours"] = {"accuracy": report["accuracy"], "train_s": round(train_s, 1), "load": []}
        action_port = free_port()
        project = work / "rasa-project"
        if not args.skip_rasa:
            from bot.rasa_export import export
            from bot.settings import get_settings

            shutil.rmtree(project, ignore_errors=True)
            settings = get_settings()
            export(project, settings.pcrm_nlu_dir, settings.config(), epochs=args.epochs,
                   action_url=f"http://127.0.0.1:{action_port}/webhook")
            rasa = str(rasa_bin)
            print("rasa: validate, train", flush=True)
            run_timed([rasa, "data", "validate"], cwd=project, env=rasa_env, log=logs / "rasa-validate.log")
            train_nlu_s = None
            if args.rasa_train_nlu:  # NLU alone, timed apart (Rasa's cache does not carry it over to `rasa train`)
                train_nlu_s = run_timed([rasa, "train", "nlu", "--fixed-model-name", "nlu", "--out", "models"],
                                        cwd=project, env=rasa_env, log=logs / "rasa-train-nlu.log")
            # The served model: NLU + the rules (RulePolicy/MemoizationPolicy train in seconds).
            train_full_s = run_timed([rasa, "train", "--fixed-model-name", "full", "--out", "models"],
                                     cwd=project, env=rasa_env, log=logs / "rasa-train.log")
            result["rasa"] = {"train_nlu_s": round(train_nlu_s, 1) if train_nlu_s is not None else None,
                              "train_full_s": round(train_full_s, 1), "epochs": args.epochs, "load": []}

        # --- servers: cold start, one after the other ------------------------------------------
        from crm_store.db import upgrade

        if schema:
            upgrade(args.postgres, schema=schema)
        else:
            upgrade(db_url)
        upgrade(actions_env["DATABASE_URL"])
        port = free_port()
        print("pcrm: serve", flush=True)
        t0 = time.perf_counter()
        ours = start([pcrm, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                     cwd=ROOT, env=ours_env, log=logs / "pcrm-serve.log")
        procs.append(ours)
        ours_rss = PeakRSS(ours.pid)
        webhook = f"http://127.0.0.1:{port}/webhooks/rest/webhook"
        result["ours"]["cold_start_s"] = round(first_answer(webhook, ours, t0, 180, logs / "pcrm-serve.log"), 2)
        warm_up(webhook, messages, "pcrm")
        targets = [("pcrm", webhook, result["ours"])]
        if not args.skip_rasa:
            print("rasa: action server, rasa run", flush=True)
            actions = start([str(BIN / "python"), "-m", "rasa_sdk", "--actions", "actions", "-p", str(action_port)],
                            cwd=ROOT, env=actions_env, log=logs / "rasa-actions.log")
            procs.append(actions)
            wait_http(f"http://127.0.0.1:{action_port}/health", actions, 120, logs / "rasa-actions.log")
            rport = free_port()
            t0 = time.perf_counter()
            server = start([rasa, "run", "--enable-api", "-m", "models/full.tar.gz", "-i", "127.0.0.1",
                            "-p", str(rport), "--endpoints", "endpoints.yml", "--credentials", "credentials.yml"],
                           cwd=project, env=rasa_env, log=logs / "rasa-run.log")
            procs.append(server)
            rasa_rss = PeakRSS(server.pid, actions.pid)
            rurl = f"http://127.0.0.1:{rport}"
            result["rasa"]["cold_start_s"] = round(
                first_answer(f"{rurl}/webhooks/rest/webhook", server, t0, 600, logs / "rasa-run.log"), 2)
            result["rasa"]["accuracy"] = rasa_accuracy(rurl, rows)["accuracy"]
            warm_up(f"{rurl}/webhooks/rest/webhook", messages, "rasa")
            targets.append(("rasa", f"{rurl}/webhooks/rest/webhook", result["rasa"]))

        # --- load: each level on both, back to back, so both see the same machine --------------
        for c in levels:
            for tag, url, side in targets:
                side["load"].append(load_level(url, messages, c, args, tag))
        result["ours"]["peak_rss_mib"] = round(ours_rss.stop(), 1)
        if not args.skip_rasa:
            result["rasa"]["peak_rss_mib"] = round(rasa_rss.stop(), 1)
    finally:
        for proc in reversed(procs):
            stop(proc)
        if schema:
            from sqlalchemy import create_engine, text

            eng = create_engine(args.postgres)
            with eng.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            eng.dispose()
    result["load_end"] = round(os.getloadavg()[0], 1)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    if args.skip_rasa:
        print(json.dumps(result["ours"], indent=2))
        return 0

    print()
    print(f"pcrm vs Rasa Open Source 3.6.21 — {len(rows)} held-out messages ({heldout.name}), "
          f"{result['machine']['cores']} cores; REST webhooks on 127.0.0.1 (pcrm on {args.db}), "
          f"{args.per_conversation} messages per conversation, ≥{args.min_messages} messages per level")
    print(table(result))
    if result["rasa"]["train_nlu_s"] is not None:
        print(f"(Rasa `rasa train nlu` alone: {result['rasa']['train_nlu_s']} s)")
    print(f"load average (1 min) at start {result['load_start']}, at end {result['load_end']}: "
          "other work on this machine skews every number")
    for line in verdict(result):
        print(line)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
