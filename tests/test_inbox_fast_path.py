"""The inbox's fast paths on PostgreSQL + Redis write what the general path writes.

The message log (``crm_store/message_log.py``) runs each of a message's two writes as one
autocommit statement on PostgreSQL, and as separate statements in one transaction elsewhere
(SQLite, or PostgreSQL with ``log.pg`` off); ``bot/admission.py``'s Redis gate does the Redis
work of a message in two round trips instead of its in-process gate's (the database lock, answers
and counters in the process, the state cache's own calls). These tests run the same visits
through each and compare the store row by row, and prove the cases where the fast path must
give up: a retried delivery, a state saved by someone else in between, a rate limit.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import text

from bot.admission import LocalGate, RedisGate
from bot.app import create_app
from bot.inbox import Inbox
from bot.messages import Message
from bot.ratelimit import RateLimited, RedisRateLimiter
from bot.settings import ROOT, Settings
from tests.pcrm_servers import REDIS_URL, always_open_config, drop_schema, need, postgres_schema, redis_reachable

TICKET = re.compile(r"20\d{2}-\d{6}")
#: Times to the minute in answers ("… 2026-11-29 12:22까지"): two visits may straddle a minute.
MINUTE = re.compile(r"20\d{2}-\d{2}-\d{2} \d{2}:\d{2}")


def _blank(text: str) -> str:
    """``text`` with ticket numbers and times blanked (they differ between two visits)."""
    return MINUTE.sub("M", TICKET.sub("T", text))
VISIT = ["쓰레기 언제 버려요?", "여권 발급 얼마나 걸려요?", "도로에 구멍이 났어요", "한빛구 중앙로 12 앞", "네", "예",
         "민원 처리 상태 조회", "<ticket>", "상담원 연결해 주세요", "아직 계세요?"]


@pytest.fixture
def inbox(tmp_path: Any) -> Iterator[Inbox]:
    """The real app's inbox on a fresh PostgreSQL schema and an empty Redis database."""
    need(redis_reachable(REDIS_URL) is None, f"Redis not reachable at {REDIS_URL}")
    schema, url = postgres_schema()
    client = redis.Redis.from_url(f"{REDIS_URL.rstrip('/')}/13")
    client.flushdb()
    settings = Settings(database_url=url, redis_url=f"{REDIS_URL.rstrip('/')}/13",
                        pcrm_redis_prefix=f"fast-{uuid.uuid4().hex[:6]}:", pcrm_model_dir=ROOT / "var" / "model",
                        pcrm_config=always_open_config(tmp_path), pcrm_spool_path=tmp_path / "spool.jsonl")
    app = create_app(settings)
    box: Inbox = app.state.inbox
    box.limiter = None
    assert box.log.pg is not None and isinstance(box.gate, RedisGate), "the fast paths are on for PostgreSQL + Redis"
    try:
        yield box
    finally:
        box.sessions.kw["bind"].dispose()
        client.flushdb()
        client.close()
        drop_schema(schema)


def _talk(inbox: Inbox, sender: str, texts: list[str]) -> list[str]:
    """Send ``texts`` as ``sender`` over REST; the answers (``<ticket>`` = the last ticket seen)."""
    ticket, answers = "", []
    for t in texts:
        msg = Message(channel="rest", sender_id=sender, text=ticket if t == "<ticket>" else t)
        turn, _live = inbox.receive_sync(msg)
        answers.append(turn.text)
        m = TICKET.search(turn.text)
        ticket = m.group(0) if m else ticket
    return answers


def _snapshot(inbox: Inbox, sender: str) -> dict[str, Any]:
    """What the store holds for ``sender``'s conversation (ticket numbers and times blanked),
    read the same way from PostgreSQL and SQLite."""
    engine = inbox.sessions.kw["bind"]
    key = f"rest:{sender}"
    with engine.connect() as c:
        conv = c.execute(text("SELECT id, resident_id, state_version, handed_off, department FROM conversations "
                              "WHERE key = :k"), {"k": key}).one()
        rows = c.execute(text("SELECT direction, text, label, lang, handled_by, CAST(entities AS TEXT) AS e, "
                              "message_id IS NOT NULL AS has_id, resident_id FROM interactions "
                              "WHERE conversation_id = :c ORDER BY id"), {"c": conv.id}).all()
        handoffs = c.execute(text("SELECT department, priority, reason, status FROM handoffs "
                                  "WHERE conversation_id = :c"), {"c": conv.id}).all()
        tags = c.execute(text("SELECT CAST(needs_tags AS TEXT) FROM residents WHERE id = :r"),
                         {"r": conv.resident_id}).scalar()
        resident = c.execute(text("SELECT preferred_lang, contact_consent, sms_opt_out FROM residents WHERE id = :r"),
                             {"r": conv.resident_id}).one()
        identity = c.execute(text("SELECT reachable, resident_id FROM channel_identities WHERE channel = 'rest' "
                                  "AND external_id = :s"), {"s": sender}).one()
    return {
        "conversation": (conv.state_version, conv.handed_off, conv.department),
        "interactions": [(r.direction, _blank(r.text), r.label, r.lang, r.handled_by,
                          json.loads(_blank(r.e)), bool(r.has_id), r.resident_id == conv.resident_id) for r in rows],
        "resident": (resident.preferred_lang, bool(resident.contact_consent), bool(resident.sms_opt_out)),
        "identity": (bool(identity.reachable), identity.resident_id == conv.resident_id),
        "handoffs": [tuple(h) for h in handoffs],
        "needs_tags": json.loads(tags),
    }


def test_a_whole_visit_is_stored_as_the_general_path_stores_it(inbox: Inbox) -> None:
    fast = _talk(inbox, "fast", VISIT)
    # The first visit's pothole is fixed: the second visit, at the same address, is not offered it.
    with inbox.sessions.begin() as s:
        s.execute(text("UPDATE service_requests SET status = 'closed', sub_status = 'resolved'"))
    assert isinstance(inbox.gate, RedisGate)
    inbox.log.pg, inbox.gate = None, inbox.gate.fallback  # separate statements in one transaction, the in-process gate
    slow = _talk(inbox, "slow", VISIT)
    assert [_blank(a) for a in fast] == [_blank(a) for a in slow]
    a, b = _snapshot(inbox, "fast"), _snapshot(inbox, "slow")
    assert a == b
    assert a["handoffs"] and a["handoffs"][0][3] == "queued" and a["conversation"][1] is True
    assert [r[0] for r in a["interactions"]].count("in") == len(VISIT)
    # Exactly what was asked about: the form's "네"/"예" are the pothole report's, not 예방접종's.
    assert sorted(a["needs_tags"]) == ["conv.request_status", "faq.passport", "faq.waste_schedule", "roads.pothole"]
    assert [r[2] for r in a["interactions"] if r[0] == "in"][3:6] == ["roads.pothole"] * 3


def test_the_state_cache_holds_what_sql_holds(inbox: Inbox) -> None:
    _talk(inbox, "cache", VISIT[:4])
    states = inbox.engine.states
    cached = states.client.get(states.keys.state("rest:cache"))
    with inbox.sessions.kw["bind"].connect() as c:
        sql = c.execute(text("SELECT state FROM conversations WHERE key = 'rest:cache'")).scalar()
    assert cached is not None and cached.decode() == sql


def test_a_retried_delivery_is_stored_once_and_answered_the_same(inbox: Inbox) -> None:
    _talk(inbox, "retry", ["쓰레기 언제 버려요?"])
    msg = Message(channel="rest", sender_id="retry", text="여권 발급 얼마나 걸려요?", message_id="delivery-1")
    first, _ = inbox.receive_sync(msg)
    again, _ = inbox.receive_sync(Message(channel="rest", sender_id="retry", text=msg.text, message_id="delivery-1"))
    assert again.text == first.text and again.label == "duplicate"
    assert isinstance(inbox.gate, RedisGate)
    inbox.gate.fallback.dedup.clear()  # the answer forgotten everywhere but the database
    inbox.gate.client.flushdb()
    third, _ = inbox.receive_sync(Message(channel="rest", sender_id="retry", text=msg.text, message_id="delivery-1"))
    assert third.label == "duplicate"
    with inbox.sessions.kw["bind"].connect() as c:
        n = c.execute(text("SELECT count(*) FROM interactions WHERE message_id = 'delivery-1'")).scalar()
    assert n == 1


def test_a_state_saved_in_between_makes_the_fast_turn_write_nothing(inbox: Inbox) -> None:
    """Another worker's save between load and save: the one-statement turn writes nothing, and
    the general path applies its rule (last write wins) — the replies are stored once."""
    _talk(inbox, "clash", ["도로에 구멍이 났어요"])
    engine = inbox.sessions.kw["bind"]
    decide = inbox.engine.decide

    def decide_then_clash(message: Message, state: Any) -> Any:
        turn = decide(message, state)
        with engine.begin() as c:
            c.execute(text("UPDATE conversations SET state_version = state_version + 5 WHERE key = 'rest:clash'"))
        return turn

    inbox.engine.decide = decide_then_clash  # type: ignore[method-assign]
    try:
        turn, _ = inbox.receive_sync(Message(channel="rest", sender_id="clash", text="한빛구 중앙로 12 앞"))
    finally:
        inbox.engine.decide = decide  # type: ignore[method-assign]
    with engine.connect() as c:
        rows = c.execute(text("SELECT direction, text, label FROM interactions i JOIN conversations v "
                              "ON v.id = i.conversation_id WHERE v.key = 'rest:clash' ORDER BY i.id")).all()
        version = c.execute(text("SELECT state_version FROM conversations WHERE key = 'rest:clash'")).scalar()
    assert [r.direction for r in rows] == ["in", "out", "in", "out"]
    assert rows[3].text == turn.text and rows[2].label is not None
    assert version == 2 + 5  # two saves of ours, five of "the other worker"


def _round_trips(inbox: Inbox, sender: str, text_: str) -> int:
    """Redis commands sent (a pipeline counts once) while one message is handled."""
    counted = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counted[0] += 1
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        inbox.receive_sync(Message(channel="rest", sender_id=sender, text=text_))
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
    return counted[0]


def test_a_message_costs_two_redis_round_trips(inbox: Inbox) -> None:
    inbox.limiter = RedisRateLimiter(f"{REDIS_URL.rstrip('/')}/13", 100, 100, prefix="rt:")
    _talk(inbox, "rt", ["쓰레기 언제 버려요?"])
    assert _round_trips(inbox, "rt", "여권 발급 얼마나 걸려요?") == 2


def test_the_gate_counts_rate_limits_before_storing_anything(inbox: Inbox) -> None:
    inbox.limiter = RedisRateLimiter(f"{REDIS_URL.rstrip('/')}/13", per_sender_per_minute=2,
                                     per_channel_per_second=1000, prefix=f"rl-{uuid.uuid4().hex[:6]}:")
    if time.time() % 60 > 40:  # the limits are fixed one-minute windows: three messages in one of them
        time.sleep(61 - time.time() % 60)
    _talk(inbox, "flood", ["쓰레기 언제 버려요?", "여권 발급 얼마나 걸려요?"])
    with pytest.raises(RateLimited) as err:
        inbox.receive_sync(Message(channel="rest", sender_id="flood", text="전입신고 어떻게 해요?"))
    assert err.value.scope == "sender"
    with inbox.sessions.kw["bind"].connect() as c:
        n = c.execute(text("SELECT count(*) FROM interactions WHERE direction = 'in'")).scalar()
    assert n == 2


def test_sqlite_stores_what_postgresql_stores(inbox: Inbox, tmp_path: Any) -> None:
    """The same visit through the message log's one-statement writes on PostgreSQL and its
    separate statements on SQLite (no Redis: the in-process gate): the same answers, the same rows."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", redis_url=None,
                        pcrm_model_dir=ROOT / "var" / "model", pcrm_config=always_open_config(tmp_path))
    box = create_app(settings).state.inbox
    assert box.log.pg is None and isinstance(box.gate, LocalGate)
    fast = _talk(inbox, "pg", VISIT)
    lite = _talk(box, "lite", VISIT)
    assert [_blank(a) for a in fast] == [_blank(a) for a in lite]
    a, b = _snapshot(inbox, "pg"), _snapshot(box, "lite")
    assert a == b
    assert [r[0] for r in a["interactions"]].count("in") == len(VISIT) and a["handoffs"]
    # Every inbound row carries its delivery id (retries are recognised); replies none.
    assert {(r[0], r[6]) for r in a["interactions"]} == {("in", True), ("out", False)}


def test_a_message_waiting_for_its_conversation_holds_no_thread(inbox: Inbox) -> None:
    """With one inbox thread: while A's conversation is locked elsewhere, A waits on the event
    loop and B (another conversation) is answered meanwhile; A follows once the lock is free."""
    import asyncio

    inbox.max_threads = 1
    _talk(inbox, "wait-a", ["쓰레기 언제 버려요?"])
    held, release = threading.Event(), threading.Event()

    def hold_a() -> None:
        with inbox.gate.hold("rest:wait-a"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_a)
    holder.start()
    held.wait(5)

    async def scenario() -> tuple[str, bool, str]:
        a = asyncio.create_task(inbox.receive(Message(channel="rest", sender_id="wait-a", text="여권 얼마나 걸려요?")))
        await asyncio.sleep(0.2)
        b_msg = Message(channel="rest", sender_id="wait-b", text="쓰레기 언제 버려요?")
        b = await asyncio.wait_for(inbox.receive(b_msg), 10)
        a_done_before_release = a.done()
        release.set()
        return b.text, a_done_before_release, (await asyncio.wait_for(a, 10)).text

    try:
        b_text, a_early, a_text = asyncio.run(scenario())
    finally:
        release.set()
        holder.join(10)
    assert b_text and a_text and not a_early
