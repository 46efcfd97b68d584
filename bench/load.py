"""Load benchmark: simulated residents talking to ``pcrm serve`` on PostgreSQL + Redis.

    bench/load                                   # the whole table (1 and 2 workers, 1/16/64/256, open+closed)
    bench/load --workers 2 --concurrency 64 --rate 250 --mode open --duration 15

What it does, all on 127.0.0.1:

* creates a fresh PostgreSQL schema (``--postgres``, default ``127.0.0.1:5432/test``) and migrates it,
  picks an empty Redis database (``--redis``) for ``REDIS_URL``; both are dropped/flushed at the end;
* starts ``pcrm serve --workers N`` itself on a free port (``--log-level warning``) and waits for it;
* N residents hold real multi-turn conversations, half through the REST channel
  (``POST /webhooks/rest/webhook``, one keep-alive connection each, more when a resident's
  paced message is due while the previous one is still out) and half through the web-chat
  WebSocket (``/webchat/ws``, one socket per visit). A visit is: two FAQ questions, a
  service-request form up to its ticket number, a status query by that ticket, a hand-off
  to a person; then the resident comes back as a new visitor (new sender id / session).
  One visit in six is in English;
* **open loop** (paced): together the residents offer ``--rate`` messages/s, each sending on
  its own fixed schedule (random phase) whether or not its answers came back; latency is
  measured from the *scheduled* send time, so a slow server cannot hide it;
* **closed loop** (flat out): each resident sends its next message as soon as its answer
  arrives; the answered rate is the saturation rate;
* a message counts as *answered* when a non-empty reply arrived (REST: HTTP 200 with at
  least one reply; web chat: the first ``bot`` frame whose ``reply_to`` is the message's id).
  Anything else (HTTP error, error frame, empty answer, no answer within ``--drain`` seconds
  after the run) is an *error*;
* *lost* = messages sent − inbound interactions stored in the database for the run's senders;
* peak RSS = the largest sum of RSS over the server's processes (supervisor + workers), sampled
  every 0.2 s.

Runs are bounded: ``--duration`` seconds each (default 10), at most ``--max-messages`` sent per
run, plus at most ``--drain`` seconds waiting for the last answers. Not a test: numbers for the
README. Without PostgreSQL or Redis it stops with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_POSTGRES = os.environ.get("PCRM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DEFAULT_REDIS = "redis://127.0.0.1:6379"
#: ``--latencies FILE``: where each run appends its messages' latencies (None: nowhere).
LATENCY_LOG: str | None = None
REST_PATH = "/webhooks/rest/webhook"
#: The ticket number announced when a request is opened ("접수번호는 …", "Ticket number: …"); not the
#: example number of the "which ticket?" prompt ("(예: 2026-000123)").
TICKET_RE = re.compile(r"(?:접수번호는|Ticket number:) (20\d{2}-\d{6})")

# --- conversations ---------------------------------------------------------------------------------

FAQ_KO = ["쓰레기 언제 버려요?", "여권 발급 얼마나 걸려요?", "주민등록등본은 어디서 떼요?",
          "대형폐기물 버리려면 어떻게 해요?", "구청 민원실 몇 시까지 해요?", "전입신고 어떻게 해요?"]
FAQ_EN = ["When is garbage collected?", "How long does a passport take?", "What are the office hours?",
          "How do I register a move-in?"]
#: ``{n}``: a house number drawn per visit. Every visit reports a problem of its own: the same place
#: twice would (rightly) be offered as a duplicate of the first report, a different conversation.
FORMS_KO = [
    ["도로에 구멍이 났어요", "한빛구 중앙로 {n} 앞", "네", "예"],
    ["가로등이 고장났어요", "한빛로 {n} 버스정류장 앞", "네", "예"],
    ["불법 주차 신고할게요", "한빛로 {n} 편의점 앞", "오늘 아침부터요", "네", "예"],
    ["층간소음 때문에 못 살겠어요", "한빛아파트 {n}동", "어젯밤부터요", "네", "예"],
]
FORMS_EN = [["There is a pothole on the road", "{n} Jungang-ro, Hanbit-gu", "yes", "yes"]]
#: Marks the message that asks for the status of the resident's last ticket.
TICKET = object()


def visit_script(rng: random.Random) -> list[Any]:
    """One visit: two FAQ questions, a form to a ticket, its status, a hand-off (always last:
    after a hand-off the bot stays silent until an agent answers)."""
    n = str(rng.randrange(1, 100_000))

    def form(steps: list[str]) -> list[str]:
        return [step.replace("{n}", n) for step in steps]

    if rng.random() < 1 / 6:
        return [*rng.sample(FAQ_EN, 2), *form(rng.choice(FORMS_EN)), "What is the status of my request?", TICKET,
                "I want to talk to a person"]
    return [*rng.sample(FAQ_KO, 2), *form(rng.choice(FORMS_KO)), "민원 처리 상태 조회", TICKET, "상담원 연결해 주세요"]


@dataclass
class Record:
    """One message: when it was due, when it went out, when (and whether) it was answered."""

    scheduled: float
    sent: float = 0.0
    done: float = 0.0
    ok: bool = False
    error: str = ""
    #: What was sent and how (for ``--latencies``: which messages make the tail).
    text: str = ""
    channel: str = ""


@dataclass
class Stats:
    records: list[Record] = field(default_factory=list)
    senders: set[str] = field(default_factory=set)
    #: Session ids of the web-chat visits (digests of their keys, bot/webchat_keys.py).
    web_sessions: set[str] = field(default_factory=set)

    def new(self, scheduled: float) -> Record:
        rec = Record(scheduled)
        self.records.append(rec)
        return rec


# --- a minimal HTTP/1.1 keep-alive client (cheap on CPU, so the server gets the cores) ---------------

class HttpConn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        """Fit for another request: as browsers and HTTP clients do, a connection that sat idle
        near the server's keep-alive timeout (uvicorn: 5 s) or that the server closed is not
        reused (the server would close it under the request: "no answer", nothing stored)."""
        if self.writer is None:
            return True
        fresh = time.monotonic() - self.idle_since < 4.0
        return fresh and not self.writer.is_closing() and self.reader is not None and not self.reader.at_eof()

    async def post_json(self, path: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + self.host.encode()
                          + b"\r\nContent-Type: application/json\r\nContent-Length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        else:  # chunked (never for our JSON answers, but be correct)
            data = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                data += chunk[:-2]
        if headers.get("connection", "").lower() == "close":
            self.close()
        self.idle_since = time.monotonic()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# --- residents -----------------------------------------------------------------------------------

class Resident:
    """A resident: visits one after another on one channel, each visit a new sender id."""

    def __init__(self, index: int, channel: str, run_tag: str, host: str, port: int, stats: Stats,
                 rng: random.Random) -> None:
        self.index, self.channel, self.run_tag = index, channel, run_tag
        self.host, self.port = host, port
        self.stats, self.rng = stats, rng
        self.visit = -1
        self.script: list[Any] = []
        self.ticket: str | None = None
        self.sender = ""
        self._idle: list[HttpConn] = []
        self._ws: Any = None
        self._ws_reader: asyncio.Task[Any] | None = None
        self._pending: dict[str, tuple[Record, asyncio.Event]] = {}
        self._msg_seq = 0
        self._old_sockets: list[tuple[Any, asyncio.Task[Any], dict[str, Any]]] = []
        self._ws_lock = asyncio.Lock()  # a visit's socket is open before its messages go out, in order
        self.answer_timeout = 10.0

    def _next(self) -> tuple[str, bool]:
        """The next text and whether it starts a new visit."""
        new_visit = not self.script
        if new_visit:
            self.visit += 1
            self.script = visit_script(self.rng)
            self.sender = f"ld-{self.run_tag}-{self.index}-{self.visit}"
            self.stats.senders.add(self.sender)
        item = self.script.pop(0)
        if item is TICKET:
            item = self.ticket or "2026-000001"
        return item, new_visit

    def _saw(self, texts: list[str]) -> None:
        for t in texts:
            m = TICKET_RE.search(t)
            if m:
                self.ticket = m.group(1)

    # -- REST --
    async def _rest(self, rec: Record, text: str) -> None:
        conn = None
        while self._idle and conn is None:
            conn = self._idle.pop()
            if not conn.usable():
                conn.close()
                conn = None
        conn = conn or HttpConn(self.host, self.port)
        try:
            rec.sent = time.perf_counter()
            status, body = await asyncio.wait_for(
                conn.post_json(REST_PATH, {"sender": self.sender, "message": text}), self.answer_timeout)
            rec.done = time.perf_counter()
            if status != 200:
                rec.error = f"http {status}"
            else:
                replies = json.loads(body)
                if replies and all(r.get("text") for r in replies):
                    rec.ok = True
                    self._saw([r["text"] for r in replies])
                else:
                    rec.error = "empty answer"
            self._idle.append(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            rec.done = time.perf_counter()
            rec.error = "no answer" if isinstance(exc, TimeoutError) else type(exc).__name__
            conn.close()

    # -- web chat --
    async def _ws_open(self) -> None:
        from websockets.asyncio.client import connect

        if self._ws is not None:  # the previous visit's socket: keep reading until its answers are in
            self._old_sockets.append((self._ws, self._ws_reader, self._pending))
        self._pending = {}
        from bot.webchat_keys import protocols_for, session_of

        key = self.sender.ljust(22, "_")  # the visit's session key (the server derives the session id)
        self.stats.web_sessions.add(session_of(key))
        self._ws = await connect(f"ws://{self.host}:{self.port}/webchat/ws", subprotocols=protocols_for(key),
                                 open_timeout=30, max_queue=None, compression=None)
        self._ws_reader = asyncio.create_task(self._ws_read(self._ws, self._pending))

    async def _ws_read(self, ws: Any, pending: dict[str, tuple[Record, asyncio.Event]]) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "bot":
                    entry = pending.pop(frame.get("reply_to") or "", None)
                    if entry is not None:
                        rec, ev = entry
                        rec.done = time.perf_counter()
                        rec.ok = bool(frame.get("text"))
                        rec.error = "" if rec.ok else "empty answer"
                        self._saw([frame.get("text") or ""])
                        ev.set()
                elif kind == "error" and pending:  # frames are handled in order: the oldest one failed
                    key = next(iter(pending))
                    rec, ev = pending.pop(key)
                    rec.done = time.perf_counter()
                    rec.error = "error frame: " + str(frame.get("reason"))
                    ev.set()
        except Exception as exc:  # noqa: BLE001 - a dropped socket fails what is still pending
            for rec, ev in pending.values():
                rec.done = time.perf_counter()
                rec.error = f"socket closed: {type(exc).__name__}"
                ev.set()
            pending.clear()

    async def _webchat(self, rec: Record, text: str, new_visit: bool) -> asyncio.Event:
        done = asyncio.Event()
        try:
            async with self._ws_lock:
                if new_visit or self._ws is None or self._ws_reader is None or self._ws_reader.done():
                    await self._ws_open()  # a new visit, or the widget reconnecting after a drop
                self._msg_seq += 1
                mid = f"m{self._msg_seq}"
                self._pending[mid] = (rec, done)
                rec.sent = time.perf_counter()
                await self._ws.send(json.dumps({"type": "message", "text": text, "id": mid},
                                               ensure_ascii=False))
        except Exception as exc:  # noqa: BLE001 - could not connect or send
            rec.done = time.perf_counter()
            rec.error = type(exc).__name__
            done.set()
        return done

    # -- one message --
    async def send_one(self, scheduled: float) -> Record:
        """Send the next message (due at ``scheduled``) and wait for its answer; its record."""
        text, new_visit = self._next()
        rec = self.stats.new(scheduled)
        rec.text, rec.channel = text if not new_visit else f"[new visit] {text}", self.channel
        if self.channel == "rest":
            await self._rest(rec, text)
        else:
            done = await self._webchat(rec, text, new_visit)
            try:
                await asyncio.wait_for(done.wait(), self.answer_timeout)
            except TimeoutError:
                for pending in (self._pending, *(p for _, _, p in self._old_sockets)):
                    for key, (r, _ev) in list(pending.items()):
                        if r is rec:
                            del pending[key]
                rec.done = time.perf_counter()
                rec.error = "no answer"
        return rec

    async def close(self, drain_deadline: float) -> None:
        """Wait (until ``drain_deadline``) for what is still unanswered, then close everything."""
        sockets = list(self._old_sockets)
        if self._ws is not None:
            sockets.append((self._ws, self._ws_reader, self._pending))
        for ws, reader, pending in sockets:
            while pending and time.perf_counter() < drain_deadline:
                await asyncio.sleep(0.05)
            for rec, ev in list(pending.values()):
                rec.done = time.perf_counter()
                rec.error = "no answer"
                ev.set()
            pending.clear()
            with contextlib.suppress(Exception):
                await ws.close()
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
        for conn in self._idle:
            conn.close()


async def run_closed(residents: list[Resident], duration: float, max_messages: int, stats: Stats) -> None:
    stop = time.perf_counter() + duration

    async def loop(r: Resident) -> None:
        while time.perf_counter() < stop and len(stats.records) < max_messages:
            rec = await r.send_one(time.perf_counter())
            if not rec.ok:
                await asyncio.sleep(0.5)  # a resident whose message failed waits before trying again

    await asyncio.gather(*(loop(r) for r in residents))


async def run_open(residents: list[Resident], duration: float, rate: float, max_messages: int,
                   stats: Stats, rng: random.Random) -> None:
    interval = len(residents) / rate  # each resident's pace
    start = time.perf_counter() + 0.2
    stop = start + duration
    inflight: set[asyncio.Task[Any]] = set()

    async def pace(r: Resident, phase: float) -> None:
        due = start + phase
        while due < stop and len(stats.records) < max_messages:
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            t = asyncio.create_task(r.send_one(due))  # regardless of earlier answers
            inflight.add(t)
            t.add_done_callback(inflight.discard)
            due += interval

    await asyncio.gather(*(pace(r, rng.random() * interval) for r in residents))
    if inflight:
        await asyncio.wait(inflight)


# --- infrastructure --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Infra:
    """A throw-away PostgreSQL schema and an empty Redis database."""

    def __init__(self, postgres: str, redis_url: str) -> None:
        from sqlalchemy import create_engine, text

        from crm_store.db import upgrade

        self.schema = f"pcrm_load_{uuid.uuid4().hex[:8]}"
        self.admin = create_engine(postgres, connect_args={"connect_timeout": 3})
        with self.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
        upgrade(postgres, schema=self.schema)
        self.db_url = f"{postgres}?options={quote(f'-csearch_path={self.schema}')}"
        self.engine = create_engine(self.db_url)

        import redis

        self.redis_db = None
        for db in range(15, 0, -1):  # an empty database, flushed at the end, so we touch nobody's keys
            client = redis.Redis.from_url(f"{redis_url.rstrip('/')}/{db}")
            if client.dbsize() == 0:
                client.set(f"pcrm-load:{self.schema}", "1")  # claim it
                self.redis_db, self.redis = db, client
                break
            client.close()
        if self.redis_db is None:
            raise RuntimeError("no empty Redis database (1-15) to use")
        self.redis_url = f"{redis_url.rstrip('/')}/{self.redis_db}"

    def stored_inbound(self, run_tag: str, web_sessions: set[str] | None = None) -> int:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM interactions i JOIN conversations c ON c.id = i.conversation_id "
                "WHERE i.direction = 'in' AND (c.key LIKE :rest OR c.key = ANY(:web))"),
                {"rest": f"rest:ld-{run_tag}-%",
                 "web": [f"webchat:{w}" for w in sorted(web_sessions or ())]}).scalar_one())

    def close(self) -> None:
        from sqlalchemy import text

        self.engine.dispose()
        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        self.admin.dispose()
        self.redis.flushdb()
        self.redis.close()


class Server:
    """``pcrm serve`` in a subprocess of its own session, on a free loopback port."""

    def __init__(self, infra: Infra, workers: int, log_path: Path) -> None:
        self.port = free_port()
        self.workers = workers
        env = {**os.environ, "DATABASE_URL": infra.db_url, "REDIS_URL": infra.redis_url,
               "PCRM_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
               "PCRM_REDIS_PREFIX": f"pcrm-load-{infra.schema}:"}
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "pcrm"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(workers), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 600) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pcrm serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("pcrm serve did not come up")
        # Every worker loads its model in the lifespan before it accepts; warm each path a little:
        # a few whole visits per worker (new connections, so the kernel spreads them), as the
        # first minutes of a real day would (prepared statements, the parse and search memos, the
        # embeddings of the common questions). The runs measure the steady state after that.
        rng = random.Random(-1)
        for i in range(8 * self.workers):
            for item in visit_script(rng):
                text = "2026-000001" if item is TICKET else item
                httpx.post(f"http://127.0.0.1:{self.port}{REST_PATH}", timeout=30,
                           json={"sender": f"warmup-{i}", "message": text})
        self.wait_idle(deadline)

    def wait_idle(self, deadline: float) -> None:
        """Wait until the server's processes use under 5 % of a core for 2 s running.

        A worker answers before all of its start-up work is done (the knowledge base's first
        load runs beside the first answers): measuring then would count start-up as load."""
        quiet, last = 0, self.cpu_seconds()
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(1.0)
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - last < 0.05 else 0
            last = now

    def processes(self) -> list[Any]:
        import psutil

        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for p in self.processes():
            with contextlib.suppress(Exception):
                total += p.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        children = self.processes()[1:]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for child in children:  # workers the supervisor did not take down (by their own pids)
            with contextlib.suppress(Exception):
                if child.is_running():
                    child.kill()
        self.log.close()


# --- one run -----------------------------------------------------------------------------------------

def cpu_snapshot(server: Server) -> dict[str, Any]:
    """CPU seconds so far: the server, PostgreSQL and Redis, this process, and the whole machine."""
    import psutil

    snap: dict[str, Any] = {"server": server.cpu_seconds(), "db": {}, "me": 0.0}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        t = proc.info["cpu_times"]
        if t is not None and proc.info["name"] in ("postgres", "redis-server"):
            snap["db"][proc.pid] = t.user + t.system  # per process: backends come and go
    me = psutil.Process().cpu_times()
    snap["me"] = me.user + me.system
    machine = psutil.cpu_times()
    snap["busy"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    snap["wall"] = time.perf_counter()
    return snap


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def one_run(server: Server, infra: Infra, concurrency: int, mode: str, rate: float | None,
                  duration: float, max_messages: int, drain: float, seed: int, channel: str = "both"
                  ) -> dict[str, Any]:
    """One run (:func:`_one_run`) with this process's garbage collector off.

    The generator's own collections paused its event loop (a full one took 45-52 ms, the young
    ones up to 10 ms; measured with ``gc.callbacks``), and every answer that arrived meanwhile
    was timed late: the generator's pause counted as the server's latency. Residents' phones do
    not pause together, so the generator must not; a run's garbage is collected after it."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return await _one_run(server, infra, concurrency, mode, rate, duration, max_messages, drain, seed, channel)
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


async def _one_run(server: Server, infra: Infra, concurrency: int, mode: str, rate: float | None,
                  duration: float, max_messages: int, drain: float, seed: int, channel: str = "both"
                  ) -> dict[str, Any]:
    run_tag = uuid.uuid4().hex[:8]
    rng = random.Random(seed)
    stats = Stats()
    def channel_of(i: int) -> str:
        return channel if channel != "both" else ("rest" if i % 2 == 0 else "webchat")

    residents = [Resident(i, channel_of(i), run_tag, "127.0.0.1", server.port, stats,
                          random.Random(rng.random())) for i in range(concurrency)]
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, await asyncio.to_thread(server.rss))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    cpu0 = await asyncio.to_thread(cpu_snapshot, server)
    t0 = time.perf_counter()
    if mode == "open":
        assert rate is not None
        await run_open(residents, duration, rate, max_messages, stats, rng)
    else:
        await run_closed(residents, duration, max_messages, stats)
    drain_deadline = time.perf_counter() + drain
    await asyncio.gather(*(r.close(drain_deadline) for r in residents))
    cpu1 = await asyncio.to_thread(cpu_snapshot, server)
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0 if k != "db"}
    cpu["db"] = sum(t - cpu0["db"].get(pid, 0.0) for pid, t in cpu1["db"].items())
    sampling = False
    await sampler
    sent = len(stats.records)
    answered = [r for r in stats.records if r.ok]
    start = min((r.scheduled for r in stats.records), default=t0)
    end = max((r.done for r in answered), default=start + duration)
    await asyncio.sleep(0.5)  # the last turns' second transaction
    stored = await asyncio.to_thread(infra.stored_inbound, run_tag, stats.web_sessions)
    latencies = [(r.done - r.scheduled) * 1000 for r in answered]
    if LATENCY_LOG:  # --latencies: every message, for finding which ones make the tail
        with open(LATENCY_LOG, "a", encoding="utf-8") as fh:
            for r in stats.records:
                fh.write(json.dumps({"mode": mode, "at_s": round(r.scheduled - start, 4),
                                     "ms": round((r.done - r.scheduled) * 1000, 2),
                                     "wait_ms": round((r.sent - r.scheduled) * 1000, 2) if r.sent else None,
                                     "ok": r.ok, "channel": r.channel, "text": r.text},
                                    ensure_ascii=False) + "\n")
    errors: dict[str, int] = {}
    for r in stats.records:
        if not r.ok:
            errors[r.error or "unknown"] = errors.get(r.error or "unknown", 0) + 1
    return {
        "workers": server.workers, "concurrency": concurrency, "mode": mode,
        "offered": rate if mode == "open" else None,
        "sent": sent, "answered": len(answered),
        "answered_per_s": len(answered) / max(end - start, 1e-9),
        "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99),
        "errors": sent - len(answered), "error_kinds": errors,
        "stored": stored, "lost": sent - stored,
        "peak_rss_mb": peak / 2**20, "senders": len(stats.senders),
        "server_cpu_ms_per_msg": cpu["server"] * 1000 / max(len(answered), 1),
        "db_cpu_ms_per_msg": cpu["db"] * 1000 / max(len(answered), 1),
        "client_cores": cpu["me"] / cpu["wall"],
        # CPU the rest of the machine used meanwhile (other programs on a shared box), in cores.
        "other_cores": max(0.0, cpu["busy"] - cpu["server"] - cpu["db"] - cpu["me"]) / cpu["wall"],
    }


def default_rate(concurrency: int) -> float:
    """The open-loop offer when ``--rate`` is not given: 4 messages/s per resident, at most 250/s."""
    return float(min(250, 4 * concurrency))


def row(r: dict[str, Any]) -> str:
    offered = f"{r['offered']:.0f}" if r["offered"] is not None else "flat out"
    return (f"| {r['workers']} | {r['concurrency']} | {r['mode']} | {offered} | {r['answered_per_s']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['lost']} | {r['peak_rss_mb']:.0f} | "
            f"{r['server_cpu_ms_per_msg']:.1f} + {r['db_cpu_ms_per_msg']:.1f} | {r['client_cores']:.2f} | "
            f"{r['other_cores']:.1f} |")


HEADER = ("| workers | residents | mode | offered msg/s | answered msg/s | p50 ms | p99 ms | errors | lost "
          "| peak RSS MB | CPU ms/msg (server + PG/Redis) | load generator CPU (cores) "
          "| other programs' CPU (cores) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256],
                    help="concurrent residents (default 1 16 64 256)")
    ap.add_argument("--mode", choices=["open", "closed", "both"], default="both")
    ap.add_argument("--rate", type=float, default=None,
                    help="open loop: messages/s offered by all residents together "
                         "(default min(250, 4 x residents))")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    ap.add_argument("--max-messages", type=int, default=20000, help="at most this many messages per run")
    ap.add_argument("--drain", type=float, default=8.0, help="seconds to wait for the last answers")
    ap.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server (a schema is created)")
    ap.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server (an empty database is used)")
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--channel", choices=["both", "rest", "webchat"], default="both",
                    help="residents' channel (default: half REST, half web chat)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--latencies", help="append every message's latency, channel and text to this JSON-lines file")
    args = ap.parse_args(argv)
    global LATENCY_LOG
    LATENCY_LOG = args.latencies
    modes = ["open", "closed"] if args.mode == "both" else [args.mode]

    try:
        infra = Infra(args.postgres, args.redis)
    except Exception as exc:  # noqa: BLE001
        print(f"bench/load needs PostgreSQL and Redis: {type(exc).__name__}: {exc}".splitlines()[0],
              file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    log_dir = ROOT / "var" / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"# pcrm serve on PostgreSQL (schema {infra.schema}) + Redis (db {infra.redis_db}); "
          f"{os.cpu_count()} CPUs; {args.duration:g} s per run", flush=True)
    print(HEADER, flush=True)
    try:
        for workers in args.workers:
            server = Server(infra, workers, log_dir / f"serve-w{workers}.log")
            try:
                server.wait_ready()
                for concurrency in args.concurrency:
                    for mode in modes:
                        rate = (args.rate or default_rate(concurrency)) if mode == "open" else None
                        r = asyncio.run(one_run(server, infra, concurrency, mode, rate, args.duration,
                                                args.max_messages, args.drain, args.seed, args.channel))
                        results.append(r)
                        print(row(r), flush=True)
                        if r["error_kinds"]:
                            print(f"<!-- errors: {r['error_kinds']} -->", flush=True)
            finally:
                server.stop()
    finally:
        infra.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
