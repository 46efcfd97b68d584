"""Memory and start-up of ``pcrm serve --workers N``: PSS of the whole process tree after M messages.

    .venv/bin/python bench/memory.py                        # 1, 2 and 3 workers, 1,000 messages each
    .venv/bin/python bench/memory.py --workers 2 --messages 300 [--database postgresql://…] [--redis redis://…]

For each worker count it starts ``pcrm serve`` on a free loopback port with a fresh temporary
SQLite file (the embedded default; ``--database`` for another), measures the time from the
process start to the first answered message (*first answer*), sends ``--messages`` held-out
messages from 64 residents, 16 at a time over the REST channel, then reads every process of the
server's tree (the supervisor and its workers) and prints:

* **PSS** (``/proc/PID/smaps_rollup``): each page counted once, shared pages split between the
  processes sharing them. Summed over the tree, it is what the server really costs the machine;
  RSS sums count a page shared by three processes three times.
* RSS, for comparison; *private* = Private_Clean + Private_Dirty (what a worker costs alone).

It then reads ``GET /metrics`` (any worker answers for all of them) and prints the sum of
``pcrm_messages_total``: at least the messages sent. Every message must get an answer (HTTP 200
with a reply) and be counted, else the run fails. Not a test: the numbers go to the README's
Measured section.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
REST = "/webhooks/rest/webhook"
#: Seconds to wait for the first answer (``--first-answer-timeout``: a server that must build its
#: knowledge-base index first, no `pcrm train` before it, needs minutes).
FIRST_ANSWER_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(out)


def smaps(pid: int) -> dict[str, int]:
    """kB fields of ``/proc/PID/smaps_rollup`` (Rss, Pss, Private_Dirty, …)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[-1] == "kB":
                out[key] = int(parts[0])
    except OSError:
        pass
    return out


def measure_tree(root: int) -> list[dict[str, float]]:
    rows = []
    for pid in process_tree(root):
        m = smaps(pid)
        if m:
            rows.append({"pid": pid, "pss": m.get("Pss", 0) / 1024, "rss": m.get("Rss", 0) / 1024,
                         "private": (m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)) / 1024})
    return rows


def texts() -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "bench" / "heldout.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [r["text"] for r in rows]


def start(workers: int, database: str, redis: str | None, tmp: Path, log_level: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database, "PCRM_SPOOL_PATH": str(tmp / "spool.jsonl"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("REDIS_URL", None)
    if redis:
        env["REDIS_URL"] = redis
        env["PCRM_REDIS_PREFIX"] = f"pcrm-mem-{port}:"
    cmd = [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--log-level", log_level]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "ab"),  # noqa: SIM115
                            start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def first_answer(proc: subprocess.Popen, url: str, started: float, timeout: float = 120.0) -> float:
    """Seconds from the process start to the first answered message."""
    with httpx.Client(timeout=10) as client:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"pcrm serve exited with {proc.returncode}")
            try:
                r = client.post(url + REST, json={"sender": "bench-first", "message": "안녕하세요"})
                if r.status_code == 200 and r.json():
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise SystemExit("no answer within the timeout")


def send_all(url: str, messages: int, concurrency: int = 16, residents: int = 64) -> tuple[int, int]:
    """(accepted, silent): a 200 is a message taken; ``silent`` of them had no bot reply because
    their conversation had been handed to an agent (the bot stays quiet while the agent has it,
    ``bot/dialogue/policy.decide``), which the held-out's hand-off and emergency rows cause."""
    pool = texts()

    def one(i: int) -> tuple[bool, bool]:
        with httpx.Client(timeout=30) as client:
            r = client.post(url + REST, json={"sender": f"bench-mem-{i % residents}", "message": pool[i % len(pool)]})
            ok = r.status_code == 200
            return ok, ok and not r.json()

    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(one, range(messages)))
    return sum(ok for ok, _ in results), sum(quiet for _, quiet in results)


def messages_counted(url: str) -> float:
    """The sum of ``pcrm_messages_total`` over every label set, from one ``/metrics`` scrape."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("pcrm_messages_total{") or line.startswith("pcrm_messages_total "))


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(workers: int, messages: int, database: str | None, redis: str | None, log_level: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="pcrm-mem-") as d:
        tmp = Path(d)
        db = database or f"sqlite:///{tmp / 'pcrm.db'}"
        t0 = time.monotonic()
        proc, url = start(workers, db, redis, tmp, log_level)
        try:
            ready = first_answer(proc, url, t0, FIRST_ANSWER_TIMEOUT)
            # every worker up (a worker still starting does not accept yet): give them the time
            time.sleep(1.0 + 0.5 * workers)
            answered, silent = send_all(url, messages)
            time.sleep(0.5)
            rows = measure_tree(proc.pid)
            counted = messages_counted(url)
        finally:
            stop(proc)
    return {"workers": workers, "messages": messages, "answered": answered, "silent": silent, "counted": counted,
            "first_answer_s": round(ready, 2),
            "processes": len(rows), "pss_mb": round(sum(r["pss"] for r in rows), 1),
            "rss_mb": round(sum(r["rss"] for r in rows), 1), "per_process": rows}


def main() -> int:
    global FIRST_ANSWER_TIMEOUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--database", help="default: a fresh temporary SQLite file per run")
    ap.add_argument("--redis", help="REDIS_URL for the server (default: none, in-process)")
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--first-answer-timeout", type=float, default=FIRST_ANSWER_TIMEOUT,
                    help="seconds to wait for the first answer (default 120)")
    args = ap.parse_args()
    FIRST_ANSWER_TIMEOUT = args.first_answer_timeout
    results = []
    for n in args.workers:
        res = run(n, args.messages, args.database, args.redis, args.log_level)
        results.append(res)
        if args.json:
            print(json.dumps(res))
            continue
        procs = "  ".join(f"[{r['pid']}] PSS {r['pss']:.0f} / private {r['private']:.0f} / RSS {r['rss']:.0f}"
                          for r in res["per_process"])
        print(f"workers {n}: first answer {res['first_answer_s']:.2f} s;  after {res['answered']}/{res['messages']} "
              f"messages taken ({res['silent']} of them in a conversation an agent had, so no bot reply): "
              f"PSS {res['pss_mb']:.0f} MB (RSS sum {res['rss_mb']:.0f} MB) over "
              f"{res['processes']} processes; /metrics counts {res['counted']:.0f} messages\n    {procs}", flush=True)
    if len(results) > 1 and not args.json:
        for a, b in zip(results, results[1:], strict=False):
            print(f"worker {a['workers']} -> {b['workers']}: +{b['pss_mb'] - a['pss_mb']:.0f} MB PSS")
    return 0 if all(r["answered"] == r["messages"] <= r["counted"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
