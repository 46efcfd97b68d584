"""Two real workers (``pcrm serve --workers 2``) on PostgreSQL and Redis.

One server for the module: a fresh PostgreSQL schema of the shared server, Redis DB 11
with a key prefix of its own.  Every answer names the worker that gave it
(``X-PCRM-Worker``), so the tests can show that both workers took part:

* ordering — bursts of one conversation's messages over separate connections, to both
  workers at once, are handled one at a time (stored in/out pairs, never interleaved, no
  lost state update) and in arrival order (a form filled by staggered concurrent messages);
* no duplicated interactions — one Twilio delivery sent to both workers at once is
  recorded once, and every copy is answered with the same first answer;
* live events cross workers — a hand-off created through one worker reaches a console
  WebSocket connected to the other.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from crm_store.db import make_session_factory
from crm_store.models import Conversation, Handoff, Interaction
from tests.pcrm_servers import PCRM, REDIS_URL, PcrmServe, drop_schema, need, postgres_schema, redis_reachable

pytestmark = pytest.mark.timeout(300)

TOKEN = "workers-test-twilio-token"
PASSWORD = "correct-horse-battery"
CLOSE = {"connection": "close"}  # a new connection per request: the kernel spreads them over the workers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcrmServe]:
    reason = redis_reachable(REDIS_URL)
    need(reason is None, reason or "")
    schema, url = postgres_schema()
    tmp = tmp_path_factory.mktemp("workers")
    server = PcrmServe(tmp, url, f"{REDIS_URL.rstrip('/')}/11", workers=2,
                       TWILIO_AUTH_TOKEN=TOKEN, TWILIO_ACCOUNT_SID="AC" + "0" * 32,
                       TWILIO_FROM_NUMBER="+15005550006")
    add = subprocess.run([str(PCRM), "users", "add", "boss", "--role", "supervisor", "--password", PASSWORD],
                         env=server.env, capture_output=True, text=True, timeout=120)
    assert add.returncode == 0, add.stderr
    server.start()
    server.sessions = make_session_factory(url)  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
        server.sessions.kw["bind"].dispose()  # type: ignore[attr-defined]
        drop_schema(schema)
        import redis

        r = redis.Redis.from_url(f"{REDIS_URL.rstrip('/')}/11")
        keys = list(r.scan_iter(server.prefix + "*"))
        if keys:
            r.delete(*keys)


def rest(server: PcrmServe, sender: str, text: str, **extra: Any) -> httpx.Response:
    r = httpx.post(server.url + "/webhooks/rest/webhook", json={"sender": sender, "message": text, **extra},
                   headers=CLOSE, timeout=30)
    assert r.status_code == 200, r.text
    return r


def conversation_rows(server: PcrmServe, key: str) -> tuple[Conversation, list[Interaction]]:
    with server.sessions() as s:  # type: ignore[attr-defined]
        conv = s.scalars(select(Conversation).where(Conversation.key == key)).one()
        rows = s.scalars(select(Interaction).where(Interaction.conversation_id == conv.id)
                         .order_by(Interaction.id)).all()
        return conv, list(rows)


def test_both_workers_serve(cluster: PcrmServe) -> None:
    seen = Counter(httpx.get(cluster.url + "/healthz", headers=CLOSE).headers["x-pcrm-worker"] for _ in range(30))
    assert len(seen) == 2, f"expected two workers to answer, saw {dict(seen)}"


def test_a_burst_of_one_conversation_is_handled_one_message_at_a_time(cluster: PcrmServe) -> None:
    sender = f"burst-{uuid.uuid4().hex[:8]}"
    texts = [f"여권 발급 얼마나 걸려요? ({i})" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: rest(cluster, sender, t), texts))
    workers = Counter(a.headers["x-pcrm-worker"] for a in answers)
    assert len(workers) == 2, f"the burst reached one worker only: {dict(workers)}"
    conv, rows = conversation_rows(cluster, f"rest:{sender}")
    # Every inbound row is directly followed by its own answer(s): no two turns interleaved.
    inbound = [r for r in rows if r.direction == "in"]
    assert sorted(r.text for r in inbound) == sorted(texts)
    for a, b in zip(rows, rows[1:], strict=False):
        if a.direction == "in":
            assert b.direction == "out", f"two inbound messages in a row: {a.text!r}, {b.text!r}"
    turns = []
    for row in rows:
        if row.direction == "in":
            turns.append([])
        else:
            turns[-1].append(row)
    assert len(turns) == len(texts) and all(turns)
    # No lost state update: one save per message, each saw the previous one.
    state = json.loads(conv.state or "{}")
    assert state["turns"] == len(texts)
    assert conv.state_version == len(texts)
    assert "concurrent save" not in cluster.log()


def test_a_form_filled_by_concurrent_staggered_messages_advances_in_arrival_order(cluster: PcrmServe) -> None:
    sender = f"form-{uuid.uuid4().hex[:8]}"
    texts = ["도로에 구멍이 났어요", "한빛로 12 앞", "네", "네"]
    gap_s = 0.08

    async def send_all() -> list[httpx.Response]:
        async def one(i: int, text: str) -> httpx.Response:
            await asyncio.sleep(i * gap_s)  # arrival order: the list order; handled while the last still runs
            async with httpx.AsyncClient(timeout=30) as c:
                return await c.post(cluster.url + "/webhooks/rest/webhook", headers=CLOSE,
                                    json={"sender": sender, "message": text})

        return await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))

    answers = asyncio.run(send_all())
    assert all(a.status_code == 200 for a in answers)
    conv, rows = conversation_rows(cluster, f"rest:{sender}")
    assert [r.text for r in rows if r.direction == "in"] == texts  # stored in arrival order
    last = " ".join(r["text"] for r in answers[-1].json())
    assert "접수" in last and "-" in last, last  # the form completed: a ticket number
    with cluster.sessions() as s:  # type: ignore[attr-defined]
        from crm_store.models import ServiceRequest

        tickets = s.scalars(select(ServiceRequest).where(ServiceRequest.address_string == "한빛로 12 앞")).all()
        assert len(tickets) == 1 and tickets[0].service_code == "roads.pothole"


def _sms(cluster: PcrmServe, message_sid: str, sender: str, body: str) -> httpx.Response:
    url = cluster.url + "/webhooks/twilio/sms"
    params = {"From": sender, "To": "+15005550006", "Body": body, "MessageSid": message_sid,
              "AccountSid": "AC" + "0" * 32, "NumMedia": "0"}
    sig = RequestValidator(TOKEN).compute_signature(url, params)
    return httpx.post(url, data=params, headers={**CLOSE, "X-Twilio-Signature": sig}, timeout=30)


def test_one_delivery_sent_to_both_workers_at_once_is_recorded_once(cluster: PcrmServe) -> None:
    for _attempt in range(5):
        sid = "SM" + uuid.uuid4().hex
        sender = f"+8210{uuid.uuid4().int % 10**8:08d}"
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _i, s=sid, p=sender: _sms(cluster, s, p, "쓰레기 언제 버려요?"), range(8)))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        if len({a.headers["x-pcrm-worker"] for a in answers}) == 2:
            break
    else:
        pytest.fail("the copies never reached both workers")
    bodies = {a.text for a in answers}
    assert len(bodies) == 1, f"copies answered differently: {bodies}"
    assert "<Message>" in answers[0].text
    with cluster.sessions() as s:  # type: ignore[attr-defined]
        inbound = s.scalars(select(Interaction).where(Interaction.message_id == sid)).all()
        assert len(inbound) == 1
        conv_id = inbound[0].conversation_id
        rows = s.scalars(select(Interaction).where(Interaction.conversation_id == conv_id)).all()
        assert sum(r.direction == "in" for r in rows) == 1  # one turn, not eight


def _login(cluster: PcrmServe) -> dict[str, str]:
    with httpx.Client(base_url=cluster.url, headers=CLOSE) as c:
        c.get("/console/login")
        r = c.post("/console/login", data={"username": "boss", "password": PASSWORD,
                                           "csrf_token": c.cookies["pcrm_csrf"], "next": "/console"},
                   follow_redirects=False)
        assert r.status_code == 303, r.text
        return dict(c.cookies)


def test_a_handoff_made_on_one_worker_reaches_a_console_on_the_other(cluster: PcrmServe) -> None:
    import websockets

    cookies = _login(cluster)
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    ws_url = cluster.url.replace("http://", "ws://") + "/console/ws"

    async def scenario() -> None:
        sockets: dict[str, Any] = {}
        extra = []
        for _ in range(60):  # connect until there is a console socket on each worker
            ws = await websockets.connect(ws_url, additional_headers={"Cookie": cookie})
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] == "ready"
            worker = ws.response.headers["x-pcrm-worker"]
            if worker in sockets:
                extra.append(ws)
                # the other worker may be busy (its first staff request loads the console's routes):
                # the kernel then hands every connection to the idle one; give it a moment
                await asyncio.sleep(0.1)
            else:
                sockets[worker] = ws
            if len(sockets) == 2:
                break
        assert len(sockets) == 2, "the console sockets all landed on one worker"
        try:
            for _ in range(10):
                sender = f"ho-{uuid.uuid4().hex[:8]}"
                await asyncio.to_thread(rest, cluster, sender, "쓰레기 안 가져갔어요")
                answer = await asyncio.to_thread(rest, cluster, sender, "상담원 연결해 주세요")
                made_on = answer.headers["x-pcrm-worker"]
                other = next(w for w in sockets if w != made_on)
                with cluster.sessions() as s:  # type: ignore[attr-defined]
                    conv = s.scalars(select(Conversation).where(Conversation.key == f"rest:{sender}")).one()
                    hid = s.scalars(select(Handoff.id).where(Handoff.conversation_id == conv.id)).one()
                deadline = time.monotonic() + 10
                while True:
                    frame = json.loads(await asyncio.wait_for(sockets[other].recv(), deadline - time.monotonic()))
                    if frame.get("type") == "handoff" and frame.get("handoff_id") == hid:
                        return
        finally:
            for ws in [*sockets.values(), *extra]:
                await ws.close()

    asyncio.run(scenario())



def test_the_supervisor_seeds_an_empty_knowledge_store_once_before_forking(tmp_path: Path) -> None:
    ROOT = Path(__file__).resolve().parent.parent
    """Workers must find the seed already imported (else each parses and writes it at start)."""
    from bot.serve import seed_knowledge
    from bot.settings import Settings
    from crm_store import kb as kb_store
    from crm_store.db import upgrade

    url = f"sqlite:///{tmp_path / 'seed.db'}"
    upgrade(url)
    sessions = make_session_factory(url)
    with sessions() as s:
        assert kb_store.is_empty(s)
    settings = Settings(pcrm_kb_dir=ROOT / "tests" / "data" / "kb")
    seed_knowledge(settings, url)
    with sessions() as s:
        assert not kb_store.is_empty(s)
        revision = kb_store.revision(s)
    seed_knowledge(settings, url)  # a second start: the store wins, nothing is imported again
    with sessions() as s:
        assert kb_store.revision(s) == revision
