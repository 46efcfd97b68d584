"""The embedded default under concurrency: one ``pcrm serve`` on SQLite, 16 and 64 conversations.

    .venv/bin/python bench/sqlite_tail.py [--levels 16,64] [--rounds 2] [--synchronous FULL,NORMAL]

The load of ``bench/compare_rasa.py`` (its ``drive``: each resident a sequence of 5-message
conversations of held-out FAQ/greeting messages, closed loop) against our server alone, so the
tail can be studied without Rasa. With ``--synchronous`` the server is started once per SQLite
``synchronous`` setting (``PCRM_SQLITE_SYNCHRONOUS``), alternating, ``--rounds`` times, so the
settings are compared on the same machine state. Prints p50, p99 and messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from compare_rasa import drive  # noqa: E402
from memory import REST, first_answer, process_tree, start, stop  # noqa: E402
from startup import cpu_seconds  # noqa: E402

FAQ = ("faq.", "conv.greet", "conv.thanks", "conv.goodbye")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="16,64")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--synchronous", default="", help="comma-separated SQLite synchronous settings to compare")
    ap.add_argument("--messages", type=int, default=640, help="messages per level")
    args = ap.parse_args()
    rows = [json.loads(x) for x in (ROOT / "bench" / "heldout.jsonl").read_text(encoding="utf-8").splitlines()
            if x.strip()]
    messages = [r["text"] for r in rows if r["label"].startswith(FAQ)]
    levels = [int(x) for x in args.levels.split(",")]
    modes = [m for m in args.synchronous.split(",") if m] or [""]
    for rnd in range(args.rounds):
        for mode in modes:
            if mode:
                os.environ["PCRM_SQLITE_SYNCHRONOUS"] = mode
            with tempfile.TemporaryDirectory(prefix="pcrm-tail-") as d:
                t0 = time.monotonic()
                proc, url = start(1, f"sqlite:///{Path(d) / 'pcrm.db'}", None, Path(d), "warning")
                try:
                    cold = first_answer(proc, url, t0)
                    asyncio.run(drive(url + REST, messages, 4, 4, 40, 60, f"warm-{rnd}"))
                    for c in levels:
                        cpu0, t1 = cpu_seconds(process_tree(proc.pid)), time.monotonic()
                        res = asyncio.run(drive(url + REST, messages, c, 5, args.messages, 120, f"r{rnd}-{mode}-c{c}"))
                        server_cores = (cpu_seconds(process_tree(proc.pid)) - cpu0) / (time.monotonic() - t1)
                        print(f"round {rnd + 1} synchronous={mode or 'default'} cold start {cold:.1f} s  c={c}: "
                              f"{res['msgs_per_s']} msg/s  p50 {res['p50_ms']} ms  p99 {res['p99_ms']} ms  "
                              f"errors {res['errors']}  server {server_cores:.2f} cores, client "
                              f"{res['client_cores']:.2f} cores ({res['client_cpu_ms_per_msg']} ms/msg)  "
                              f"load {os.getloadavg()[0]:.1f}", flush=True)
                finally:
                    stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
