"""The admission interface (bot/admission.py), run against both gates: the in-process one
(:class:`LocalGate`, one process, its threads as the "workers") and the Redis one
(:class:`RedisGate`, two gates on one Redis, as two workers), then what only the Redis gate
does: hand a wait back to the event loop, go around Redis when it is down or a wait is too long,
drop a dead worker's place in the queue.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bot.admission import Admission, Gate, LocalGate, Queued, RedisGate
from bot.dialogue.redis_state import RedisCachedStateStore
from bot.dialogue.state import DialogueState, InMemoryStateStore, StateStore
from bot.locks import InProcessLock
from bot.messages import Reply
from bot.ratelimit import InProcessRateLimiter, RateLimited
from bot.redisconn import RedisKeys, sync_client
from tests.pcrm_servers import REDIS_URL, need, redis_reachable

REDIS_DB = f"{REDIS_URL.rstrip('/')}/11"
Workers = Callable[..., list[Gate]]


@pytest.fixture
def prefix() -> Iterator[str]:
    reason = redis_reachable(REDIS_DB)
    need(reason is None, reason or "")
    prefix = f"adm-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = sync_client(REDIS_DB)
    keys = list(client.scan_iter(prefix + "*"))
    if keys:
        client.delete(*keys)


def _redis_gate(prefix: str, states: StateStore | None = None, url: str = REDIS_DB, **kw: Any) -> RedisGate:
    cache = states if isinstance(states, RedisCachedStateStore) else None
    return RedisGate(sync_client(url), LocalGate(InProcessLock(), states=states), RedisKeys(prefix), cache, **kw)


@pytest.fixture(params=["local", "redis"])
def workers(request: pytest.FixtureRequest, prefix: str) -> Workers:
    """``workers(states=None)``: two gates serving the same conversations (the local kind: one
    gate shared by the threads of one process; the Redis kind: two gates, two "workers")."""

    def make(states: StateStore | None = None) -> list[Gate]:
        if request.param == "local":
            gate = LocalGate(InProcessLock(), states=states)
            return [gate, gate]
        return [_redis_gate(prefix, states) for _ in range(2)]

    return make


def _admitted(result: Admission | Queued) -> Admission:
    assert isinstance(result, Admission)
    return result


def test_one_conversation_at_a_time_in_arrival_order(workers: Workers) -> None:
    gates = workers()
    order: list[int] = []
    inside = threading.Lock()
    overlaps: list[int] = []

    def message(i: int) -> None:
        gate = gates[i % 2]
        adm = _admitted(gate.admit("rest", "someone", "rest:someone", f"rest:m{i}"))
        try:
            if not inside.acquire(blocking=False):
                overlaps.append(i)
                return
            order.append(i)
            time.sleep(0.03)
            inside.release()
        finally:
            gate.leave(adm)

    threads: list[threading.Thread] = []
    for i in range(8):
        t = threading.Thread(target=message, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.015)  # arrival order 0, 1, 2, ... alternating between the two workers
    for t in threads:
        t.join(10)
    assert not overlaps
    assert order == list(range(8))


def test_a_message_waits_while_its_conversation_is_held(workers: Workers) -> None:
    """:meth:`Gate.hold` (a reset, a take-over) and messages share one queue per conversation."""
    gates = workers()
    done = threading.Event()

    def message() -> None:
        gates[1].leave(_admitted(gates[1].admit("rest", "held", "rest:held", "rest:h1")))
        done.set()

    with gates[0].hold("rest:held"):
        worker = threading.Thread(target=message)
        worker.start()
        time.sleep(0.3)
        assert not done.is_set()
        gates[0].leave(_admitted(gates[0].admit("rest", "other", "rest:other", "rest:o1")))  # others go on
    worker.join(10)
    assert done.is_set()


def test_limits_per_sender_and_per_channel_are_counted_before_anything_else(workers: Workers) -> None:
    gates = workers()
    for g in gates:
        g.limiter = InProcessRateLimiter(per_sender_per_minute=3, per_channel_per_second=4)
    now = 1000.0  # the minute ends at 1020

    def send(i: int, sender: str, at: float = now) -> None:
        gate = gates[i % 2]
        gate.leave(_admitted(gate.admit("sms", sender, f"sms:{sender}", f"sms:{sender}:{i}", now=at)))

    for i in range(3):
        send(i, "x")
    with pytest.raises(RateLimited) as sender:
        send(3, "x")
    assert (sender.value.scope, sender.value.retry_after) == ("sender", 20)
    with pytest.raises(RateLimited) as channel:
        send(4, "y")  # the channel's fifth in this second: y is not counted
    assert (channel.value.scope, channel.value.retry_after) == ("channel", 1)
    for i in range(3):
        send(i, "y", now + 1)  # the next second: y's first three
    with pytest.raises(RateLimited):
        send(3, "y", now + 1)
    # Refused messages took nothing: their conversation is free at once.
    assert isinstance(gates[1].admit("sms", "x", "sms:x", "sms:x:9", wait=False, count=False), Admission)


def test_a_retry_gets_the_first_answer_from_any_worker(workers: Workers) -> None:
    gates = workers()
    first = _admitted(gates[0].admit("rest", "r", "rest:r", "rest:delivery-1"))
    assert first.answered is None
    first.dedup = ("rest:delivery-1", [Reply("first answer")])
    gates[0].leave(first)
    retry = _admitted(gates[1].admit("rest", "r", "rest:r", "rest:delivery-1"))
    assert [r.text for r in retry.answered or []] == ["first answer"]
    retry.dedup = ("rest:delivery-1", [Reply("another answer")])
    gates[1].leave(retry)
    again = _admitted(gates[0].admit("rest", "r", "rest:r", "rest:delivery-1"))
    gates[0].leave(again)
    assert [r.text for r in again.answered or []] == ["first answer"]  # the first answer wins


class DatabaseDown(InMemoryStateStore):
    """SQL while the database is down: saves fail (the Redis cache keeps them, dirty)."""

    def save(self, state: DialogueState) -> None:
        raise ConnectionError("database down")


def test_a_state_kept_during_a_database_outage_is_pending_until_committed(workers: Workers, prefix: str) -> None:
    states = RedisCachedStateStore(DatabaseDown(), REDIS_DB, prefix=prefix)
    gates = workers(states)
    states.save(DialogueState(key="rest:form", active_form="pothole", slots={"location": "한빛로 7"}))
    adm = _admitted(gates[0].admit("rest", "form", "rest:form", "rest:f1"))
    assert adm.pending is not None and adm.pending.slots == {"location": "한빛로 7"}
    committed = adm.pending
    committed.slots["when"] = "어제"
    adm.state = (committed, committed.to_json(), True)  # the caller committed it to SQL
    gates[0].leave(adm)
    assert states.pending("rest:form") is None  # written back: no longer pending
    assert states.load("rest:form").slots == {"location": "한빛로 7", "when": "어제"}  # the cache holds it
    adm = _admitted(gates[1].admit("rest", "form", "rest:form", "rest:f2"))
    gates[1].leave(adm)
    assert adm.pending is None


# --- the Redis gate only -------------------------------------------------------------------------
def test_a_waiting_message_comes_back_queued_and_is_counted_once(prefix: str) -> None:
    a, b = _redis_gate(prefix), _redis_gate(prefix)
    b.limiter = InProcessRateLimiter(per_sender_per_minute=2)
    now = 1000.0
    held = _admitted(a.admit("rest", "q", "rest:q", "rest:q0", count=False))
    queued = b.admit("rest", "q", "rest:q", "rest:q1", wait=False, now=now)
    assert isinstance(queued, Queued)
    for _ in range(3):  # polled again from the event loop: still waiting, not counted again
        assert b.admit("rest", "q", "rest:q", "rest:q1", wait=False, queued=queued) is queued
    a.leave(held)
    b.leave(_admitted(b.admit("rest", "q", "rest:q", "rest:q1", wait=False, queued=queued)))
    b.leave(_admitted(b.admit("rest", "q", "rest:q", "rest:q2", now=now)))  # the second of the minute
    with pytest.raises(RateLimited):
        b.admit("rest", "q", "rest:q", "rest:q3", now=now)


def test_a_caller_that_gives_up_leaves_the_queue(prefix: str) -> None:
    a, b = _redis_gate(prefix), _redis_gate(prefix)
    held = _admitted(a.admit("rest", "g", "rest:g", "rest:g0"))
    queued = b.admit("rest", "g", "rest:g", "rest:g1", wait=False)
    assert isinstance(queued, Queued)
    b.abandon(queued)  # e.g. the request was cancelled
    a.leave(held)
    assert isinstance(a.admit("rest", "g", "rest:g", "rest:g2", wait=False), Admission)  # nobody ahead


def test_a_dead_workers_place_in_the_queue_expires(prefix: str) -> None:
    dead = _redis_gate(prefix, lock_ttl_s=0.3)
    dead.admit("rest", "k", "rest:k", "rest:k0")  # never left: its worker was killed
    alive = _redis_gate(prefix)
    adm = _admitted(alive.admit("rest", "k", "rest:k", "rest:k1"))
    alive.leave(adm)
    assert adm.held is None and alive.stats["redis"] == 1  # the lock in Redis, not the fallback


def test_a_wait_over_the_limit_goes_ahead_under_the_fallback(prefix: str) -> None:
    a, b = _redis_gate(prefix), _redis_gate(prefix, wait_s=0.1)
    held = _admitted(a.admit("rest", "w", "rest:w", "rest:w0"))
    late = _admitted(b.admit("rest", "w", "rest:w", "rest:w1"))
    assert late.held is not None and b.stats["fallback"] == 1  # the fallback's lock
    b.leave(late)
    a.leave(held)
    assert isinstance(b.admit("rest", "w", "rest:w", "rest:w2", wait=False), Admission)  # its entry is gone


def test_redis_down_every_message_goes_around(prefix: str) -> None:
    gate = _redis_gate(prefix, url="redis://127.0.0.1:1/0")
    gate.limiter = InProcessRateLimiter(per_sender_per_minute=2)
    for i in range(2):
        adm = _admitted(gate.admit("rest", "d", "rest:d", f"rest:d{i}", now=1000.0))
        adm.dedup = (f"rest:d{i}", [Reply(f"answer {i}")])
        gate.leave(adm)
    with pytest.raises(RateLimited):  # counted in the process
        gate.admit("rest", "d", "rest:d", "rest:d2", now=1000.0)
    retry = _admitted(gate.admit("rest", "d", "rest:d", "rest:d1", count=False))
    gate.leave(retry)
    assert [r.text for r in retry.answered or []] == ["answer 1"]  # answered from the process's memory
    with gate.hold("rest:d"):
        pass
    assert gate.stats["fallback"] == 4 and gate.stats["redis"] == 0  # the refused message admitted nowhere


def test_a_script_the_server_does_not_have_is_loaded_and_run(prefix: str) -> None:
    """The scripts run by their digest on a pooled connection; a server without the script
    (restarted, or its script cache flushed) gets it loaded, and the message goes through."""
    gate = _redis_gate(prefix)
    for script in (gate._enter, gate._leave):  # noqa: SLF001 - as if the server had never seen them
        script.sha = "0" * 40
    adm = _admitted(gate.admit("rest", "s1", "rest:noscript", "rest:m1"))
    adm.dedup = ("rest:m1", [Reply("안녕하세요")])
    gate.leave(adm)
    assert gate.stats["redis"] == 1
    again = _admitted(gate.admit("rest", "s1", "rest:noscript", "rest:m1"))  # the lock was released
    assert again.answered is not None and again.answered[0].text == "안녕하세요"
    gate.leave(again)


def test_the_scripts_keep_their_redis_connection_between_messages(prefix: str) -> None:
    """Admission's two scripts reuse one connection of the pool's (no checkout per call), and still
    work after the pool dropped every connection (Redis restarted: reconnect on next use)."""
    gate = _redis_gate(prefix)
    pool = gate.client.connection_pool
    for i in range(3):
        adm = _admitted(gate.admit("rest", "kim", "rest:kim", f"rest:m{i}"))
        gate.leave(adm)
    assert len(gate._enter.kept.idle) == 1  # noqa: SLF001 - one connection, kept
    assert gate._enter.kept is gate._leave.kept  # noqa: SLF001
    pool.disconnect()  # every connection, kept ones too ("in use" to the pool)
    adm = _admitted(gate.admit("rest", "kim", "rest:kim", "rest:m9"))
    gate.leave(adm)
    assert gate.stats["redis"] == 4, "all four through Redis, none around it"
