"""Start-up of ``pcrm serve --workers 2`` with a cached model: the server's and a worker's.

    .venv/bin/python bench/startup.py [--repeat 3] [--workers 2]

Each run starts the server on a fresh temporary SQLite file and prints

* **server**: seconds from the process start to the first answered message (the supervisor
  imports, loads Kiwi, the NLU model and the actions, migrates, then forks), and the CPU
  seconds the server's processes spent until then (less sensitive to a busy machine);
* **worker**: a worker is killed (SIGKILL); seconds from then until a *new* worker (a pid not
  seen before in ``X-PCRM-Worker``) answers a message: what a worker's own start costs, forked
  from the warm supervisor (a replacement after a crash, or a worker of a scale-out).

and, from the server's own report (``PCRM_STARTUP_REPORT``, :class:`bot.serve.StartupPhases`),
where the supervisor's start went: wall and CPU seconds per phase (the interpreter and CLI,
settings, migrations, the knowledge-base seed, the web app's imports, the NLU model, Kiwi's
first parse, the actions, the knowledge base, ``gc.freeze``) and each worker's own start (fork
to ready). ``--phases`` prints every run's phases, else the median of each.

``--no-kb`` starts the server with an empty knowledge-base directory (``PCRM_KB_DIR``): what the
start costs without indexing the articles, which is measured (and being made persistent) apart.

Median and range over ``--repeat`` runs. Not a test: numbers for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import REST, first_answer, process_tree, start, stop  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of ``pids``, with their children already waited for (the supervisor's store
    preparation, a child that has exited by the first answer)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        except (OSError, IndexError):
            pass
    return total / tick


def one(workers: int) -> tuple[float, float, float, float, list[dict]]:
    os.environ["PCRM_WORKER_HEADER"] = "1"
    with tempfile.TemporaryDirectory(prefix="pcrm-start-") as d:
        tmp = Path(d)
        report = tmp / "startup.jsonl"
        os.environ["PCRM_STARTUP_REPORT"] = str(report)
        t0 = time.monotonic()
        proc, url = start(workers, f"sqlite:///{tmp / 'pcrm.db'}", None, tmp, "warning")
        try:
            server_s = first_answer(proc, url, t0)
            cpu = cpu_seconds(process_tree(proc.pid))
            supervisor_cpu = cpu_seconds([proc.pid])
            seen: set[str] = set()
            with httpx.Client(timeout=10, headers={"connection": "close"}) as client:
                deadline = time.monotonic() + 60
                while len(seen) < workers and time.monotonic() < deadline:  # every worker up
                    r = client.post(url + REST, json={"sender": "bench-start", "message": "안녕하세요"})
                    seen.add(r.headers["x-pcrm-worker"])
                victim = int(sorted(seen)[0])
                killed = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                worker_s = float("nan")
                while time.monotonic() - killed < 60:
                    try:
                        r = client.post(url + REST, json={"sender": "bench-start", "message": "안녕하세요"})
                    except httpx.HTTPError:
                        continue
                    if r.status_code == 200 and r.headers["x-pcrm-worker"] not in seen:
                        worker_s = time.monotonic() - killed
                        break
                    time.sleep(0.01)
        finally:
            stop(proc)
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    return server_s, cpu, worker_s, supervisor_cpu, rows


def phase_lines(reports: list[list[dict]], every: bool) -> list[str]:
    """The supervisor's phases (median over runs, or each run) and the workers' own starts."""
    sups = [next((r for r in rows if r["role"] == "supervisor"), None) for rows in reports]
    sups = [s for s in sups if s]
    if not sups:
        return ["(no start-up report: a server without bot.serve.StartupPhases)"]
    out = []
    names = [p[0] for p in sups[0]["phases"]]
    for i, name in enumerate(names):
        walls = [s["phases"][i][1] for s in sups if len(s["phases"]) > i]
        cpus = [s["phases"][i][2] for s in sups if len(s["phases"]) > i]
        if every:
            runs = zip(walls, cpus, strict=True)
            out.append(f"  {name:42s} " + "  ".join(f"{w:5.2f} s/{c:5.2f} CPU" for w, c in runs))
        else:
            out.append(f"  {name:42s} {statistics.median(walls):5.2f} s  {statistics.median(cpus):5.2f} CPU s")
    total_w = [s["wall_s"] for s in sups]
    total_c = [s["cpu_s"] for s in sups]
    out.append(f"  {'supervisor until the fork':42s} {statistics.median(total_w):5.2f} s  "
               f"{statistics.median(total_c):5.2f} CPU s")
    workers = [r for rows in reports for r in rows if r["role"] == "worker"]
    if workers:
        wall = statistics.median(r["wall_s"] for r in workers)
        worker_cpu = statistics.median(r["cpu_s"] for r in workers)
        out.append(f"  {'a worker: fork -> ready (median)':42s} {wall:5.2f} s  "
                   f"{worker_cpu:5.2f} CPU s  ({len(workers)} starts)")
        # What a busy machine cannot inflate: the CPU seconds between the process start and a
        # worker ready to answer (the supervisor's phases are sequential, the worker's follow).
        out.append(f"  {'critical path: supervisor + a worker':42s} {'':7s} "
                   f"{statistics.median(total_c) + worker_cpu:5.2f} CPU s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-kb", action="store_true", help="an empty knowledge base (PCRM_KB_DIR)")
    ap.add_argument("--phases", action="store_true", help="every run's phases, not only their medians")
    args = ap.parse_args()
    if args.no_kb:
        os.environ["PCRM_KB_DIR"] = tempfile.mkdtemp(prefix="pcrm-no-kb-")
    rows = []
    reports = []
    for i in range(args.repeat):
        server_s, cpu, worker_s, supervisor_cpu, report = one(args.workers)
        rows.append((server_s, cpu, worker_s))
        reports.append(report)
        print(f"run {i + 1}: server first answer {server_s:.2f} s ({cpu:.2f} CPU s, of which the supervisor "
              f"{supervisor_cpu:.2f}); "
              f"a new worker's first answer {worker_s:.2f} s after the old one was killed", flush=True)

    def fmt(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"

    print(f"server start -> first answer: {fmt([r[0] for r in rows])}; CPU {fmt([r[1] for r in rows])}")
    print(f"worker start -> first answer: {fmt([r[2] for r in rows])}")
    print("where the start went (wall, CPU):")
    print("\n".join(phase_lines(reports, args.phases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
