"""Admission: what a message needs before its turn, and gives back after it.

Before: its rate limits (:mod:`bot.ratelimit`), its place in the conversation's FIFO lock, the
first answer if the delivery is a retry (:mod:`bot.dedup`) and a dialogue state kept in Redis
during a database outage and not written back yet (:mod:`bot.dialogue.redis_state`). After: the
answer for retries, the cache entry of the state just committed, and the lock's release.

:class:`Gate` owns that algorithm (as Rasa's ``LockStore`` owns its lock's): :meth:`Gate.admit`
counts, queues and waits (or hands the wait back to the caller as :class:`Queued`), and returns
an :class:`Admission`, which carries what was read and collects what :meth:`Gate.leave` writes.
:meth:`Gate.hold` is the lock alone, for everything else that changes a conversation's state.
Two implementations, one step each:

* :class:`LocalGate` — composed of the in-process pieces: a :class:`~bot.locks.ConversationLock`
  (in this process, or PostgreSQL advisory locks), an :class:`~bot.dedup.InProcessDedup`, a
  :class:`~bot.ratelimit.RateLimiter` and the state store's ``pending``/``saved``, if it has them.
* :class:`RedisGate` — everything in Redis, in two scripts: :data:`ENTER` (count, queue, read)
  and :data:`LEAVE` (keep the answer, cache the state, release), so a message costs two round
  trips. Key names come from :class:`~bot.redisconn.RedisKeys`. While Redis is down, after a
  lock wait over ``wait_s`` or while some cached states may be stale, it admits through its
  ``fallback`` :class:`LocalGate` (the database lock, this process's answers and counters).
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from bot.dedup import DedupStore, InProcessDedup, replies_from_json, replies_to_json
from bot.dialogue.redis_state import RedisCachedStateStore
from bot.dialogue.state import DialogueState, StateStore
from bot.locks import ConversationLock, DbLock, InProcessLock
from bot.messages import Reply, new_id
from bot.ratelimit import RateLimited, RateLimiter
from bot.redisconn import REDIS_DOWN, Breaker, RedisKeys, sync_client

try:
    from redis.exceptions import NoScriptError
except ImportError:  # pragma: no cover - redis is a dependency
    class NoScriptError(Exception):  # type: ignore[no-redef]
        pass

try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - a dependency (redis[hiredis])
    _pack = None

log = logging.getLogger("pcrm.admission")


@dataclass
class Queued:
    """A message on its way in. :meth:`Gate.admit` with ``wait=False`` returns it when the message
    must wait for an earlier one of its conversation (held by another thread or worker), so the
    caller can wait on its event loop, not in one of its few threads, and then call again with it.
    """

    channel: str
    sender_id: str
    key: str
    dedup_key: str
    token: str
    now: float
    deadline: float
    #: Still to be counted against the rate limits (done with the first step).
    count: bool = True
    #: Read the retry's answer and a pending state once admitted (not for :meth:`Gate.hold`).
    lookup: bool = True
    #: Whether the next step must (re-)enter the Redis queue (the entry is new, or it was dropped).
    enqueue: bool = True
    pause: float = 0.001
    #: How long to wait before the next call.
    wait_s: float = 0.0


@dataclass
class Admission:
    """A message let in: its conversation's lock is held; what was read; what to write on leaving."""

    key: str
    token: str
    #: The lock is held (always, once admitted: a wait over the limit goes on under the fallback's).
    locked: bool = True
    #: The first answer of this delivery id, if it was answered before (a retry).
    answered: list[Reply] | None = None
    #: A state of the conversation kept in Redis during a database outage, not written back yet.
    pending: DialogueState | None = None
    #: Set by the caller: the de-dup key and the replies to keep for retries.
    dedup: tuple[str, list[Reply]] | None = None
    #: Set by the caller: the state just committed to SQL, its JSON and whether it was pending.
    state: tuple[DialogueState, str, bool] | None = None
    #: Held by a :class:`LocalGate` (its lock's ``with``, closed on leaving); None: in Redis.
    held: ExitStack | None = None


class Gate(ABC):
    """Rate limits, the conversation's FIFO lock, the retry's answer, a pending state (module doc)."""

    #: How long a message waits for its conversation before going ahead under :attr:`fallback`.
    wait_s: float = 15.0
    #: Where a message goes when this gate cannot admit it (None: it always can).
    fallback: Gate | None = None

    def __init__(self, dedup: DedupStore | None = None, limiter: RateLimiter | None = None) -> None:
        #: This process's memory of first answers (what a retry gets while a shared one is out).
        self.dedup = dedup or InProcessDedup()
        #: The message limits (None: unlimited), counted by this gate (its fallback counts nothing).
        self.limiter = limiter
        #: How many admissions each way served ("redis", "fallback", "local").
        self.stats: Counter[str] = Counter()

    def admit(self, channel: str, sender_id: str, key: str, dedup_key: str, *, wait: bool = True,
              queued: Queued | None = None, count: bool = True, lookup: bool = True,
              now: float | None = None) -> Admission | Queued:
        """Count the message (:class:`RateLimited` over a limit: nothing else done), queue for its
        conversation's lock and wait for it, read the retry's answer and a pending state. With
        ``wait=False`` a message that must wait comes back as :class:`Queued`: call again with
        it after its ``wait_s``. Every :class:`Admission` must be passed to :meth:`leave`. ``now``:
        the time whose rate-limit windows count the message (default: now)."""
        q = queued or Queued(channel, sender_id, key, dedup_key, new_id(), time.time() if now is None else now,
                             time.monotonic() + self.wait_s, count=count, lookup=lookup)
        while True:
            adm = self.step(q)
            q.count = False
            if adm is not None:
                return adm
            if time.monotonic() > q.deadline and self.fallback is not None:
                log.warning("conversation lock wait over %.0fs; going ahead", self.wait_s)
                self.abandon(q)
                return self.go_around(q)
            q.wait_s, q.pause = q.pause, min(q.pause * 1.5, 0.01)
            if not wait:
                return q
            time.sleep(q.wait_s)

    @abstractmethod
    def step(self, q: Queued) -> Admission | None:
        """One try: count (if ``q.count``), take the lock if it is ``q``'s turn and read what
        ``q.lookup`` asks for; None while an earlier message holds the lock."""

    @abstractmethod
    def leave(self, adm: Admission) -> None:
        """Keep ``adm.dedup``'s answer for retries, refresh the cache with ``adm.state``, release."""

    @abstractmethod
    def abandon(self, q: Queued) -> None:
        """Leave the queue without having held the lock (the waiting caller gave up)."""

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """The conversation's lock alone (resets, releases, take-overs, write-backs): the same
        FIFO queue as the messages', so none of them interleaves with a turn."""
        adm = self.admit("", "", key, "", count=False, lookup=False)
        assert isinstance(adm, Admission)
        try:
            yield
        finally:
            self.leave(adm)

    def count_here(self, q: Queued) -> None:
        """Count ``q`` against :attr:`limiter` in this process, unless it was counted already."""
        if q.count and self.limiter is not None:
            self.limiter.check(q.channel, q.sender_id, q.now)
        q.count = False

    def go_around(self, q: Queued) -> Admission:
        """Admit ``q`` through :attr:`fallback` (counted here first, if it was not yet)."""
        assert self.fallback is not None
        self.count_here(q)
        self.stats["fallback"] += 1
        adm = self.fallback.admit(q.channel, q.sender_id, q.key, q.dedup_key, queued=q)
        assert isinstance(adm, Admission)
        return adm


class LocalGate(Gate):
    """The in-process pieces, one after the other; the lock's own wait (a FIFO of threads, or
    PostgreSQL's) happens in :meth:`step`, which never returns None."""

    def __init__(self, lock: ConversationLock | None = None, dedup: DedupStore | None = None,
                 limiter: RateLimiter | None = None, states: StateStore | None = None) -> None:
        super().__init__(dedup, limiter)
        self.lock = lock or InProcessLock()
        self.states = states

    def step(self, q: Queued) -> Admission:
        self.count_here(q)
        held = ExitStack()
        held.enter_context(self.lock.hold(q.key))
        self.stats["local"] += 1
        adm = Admission(q.key, q.token, held=held)
        if q.lookup:
            try:
                adm.answered = self.dedup.get(q.dedup_key)
                pending = getattr(self.states, "pending", None)
                adm.pending = pending(q.key) if pending is not None else None
            except BaseException:
                held.close()
                raise
        return adm

    def abandon(self, q: Queued) -> None:
        """Nothing to leave: :meth:`step` returns only once the lock is held."""

    def leave(self, adm: Admission) -> None:
        assert adm.held is not None
        with adm.held:
            if adm.dedup is not None:
                self.dedup.put(*adm.dedup)
            saved = getattr(self.states, "saved", None)
            if adm.state is not None and saved is not None:  # the Redis cache in front of SQL
                state, raw, was_pending = adm.state
                saved(state, was_pending=was_pending, raw=raw)


# KEYS: 1 lock queue, 2 de-dup key, 3 dirty-state set, 4 state cache key ('-': not read),
#       5.. rate-limit counters, in the order they are counted.
# ARGV: 1 token, 2 lock ttl ms, 3 liveness key prefix, 4 enqueue (1/0), 5 conversation key,
#       then a limit and its counter's ttl per counter.
# Returns {i} when over the i-th counter's limit (nothing else done); {0, 0} wait (queued behind
# another message); {0, -1} our queue entry is gone (enqueue again); {0, 1, answer or false,
# pending state or false} the lock is ours. A queue entry whose liveness key expired (its worker
# died) is dropped when it reaches the head.
ENTER = """
for i = 5, #KEYS do
  local n = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * i - 3])
  if n > tonumber(ARGV[2 * i - 4]) then return {i - 4} end
end
local q, me, ttl, pfx = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
redis.call('SET', pfx .. me, '1', 'PX', ttl)
if ARGV[4] == '1' then redis.call('RPUSH', q, me) end
redis.call('PEXPIRE', q, ttl * 2)
while true do
  local head = redis.call('LINDEX', q, 0)
  if not head then return {0, -1} end
  if head == me then break end
  if redis.call('EXISTS', pfx .. head) == 1 then
    if redis.call('LPOS', q, me) then return {0, 0} end
    return {0, -1}
  end
  redis.call('LPOP', q)
end
local answer, pending = false, false
if KEYS[2] ~= '-' then answer = redis.call('GET', KEYS[2]) end
if KEYS[4] ~= '-' and redis.call('SISMEMBER', KEYS[3], ARGV[5]) == 1 then pending = redis.call('GET', KEYS[4]) end
return {0, 1, answer, pending}
"""

# KEYS: 1 lock queue, 2 de-dup key, 3 state cache key, 4 dirty-state set.
# ARGV: 1 token, 2 liveness key prefix, 3 answer JSON ('' = none), 4 its ttl, 5 state JSON
#       ('' = none), 6 its ttl, 7 was pending (1/0), 8 conversation key.
LEAVE = """
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4]) end
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6])
  if ARGV[7] == '1' then redis.call('SREM', KEYS[4], ARGV[8]) end
end
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1])
else redis.call('LREM', KEYS[1], 1, ARGV[1]) end
redis.call('DEL', ARGV[2] .. ARGV[1])
return 1
"""


class _Kept:
    """Connections taken from a Redis client's pool and kept between the scripts' calls.

    redis-py's pool hands a connection out under a lock, records its observability counters and
    polls the socket (``can_read``) on every checkout, and does the reverse on release: ≈ 6 % of
    an inbox thread's CPU for two calls a message, on connections that are busy all the time.
    At most :data:`KEEP` wait here; the rest go back to the pool. A connection that failed goes
    back too (redis-py's retry has disconnected it; the pool reconnects it on its next use), and
    the pool's ``disconnect`` still reaches these (they are "in use" to it)."""

    __slots__ = ("pool", "idle", "pid")

    #: At most this many wait (an inbox uses ``PCRM_INBOX_THREADS``, 4, at once).
    KEEP = 8

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.idle: list[Any] = []
        self.pid = os.getpid()

    def take(self) -> Any:
        if self.pid != os.getpid():  # a forked child: the parent's sockets are not ours to use
            self.idle, self.pid = [], os.getpid()
        try:
            return self.idle.pop()  # list pop/append are atomic: no lock
        except IndexError:
            return self.pool.get_connection()

    def give(self, conn: Any, clean: bool) -> None:
        if clean and len(self.idle) < self.KEEP:
            self.idle.append(conn)
        else:
            self.pool.release(conn)


class _Script:
    """A Lua script run with ``EVALSHA`` on a connection of the client's (kept between calls:
    :class:`_Kept`), its command packed by hiredis in C. redis-py's ``Script`` takes the same way
    but encodes each of the ~17 arguments in Python first (and records its observability hooks):
    about 60 µs more CPU a call, twice a message. Failures are redis-py's: a connection error or
    timeout disconnects and retries as the client's ``retry`` says; a server without the script
    (``NOSCRIPT``: Redis restarted or flushed) gets it through redis-py's ``Script``, which loads
    it and runs it again."""

    __slots__ = ("client", "script", "sha", "kept")

    def __init__(self, client: Any, source: str, kept: _Kept) -> None:
        self.client = client
        self.script = client.register_script(source)
        self.sha = self.script.sha
        self.kept = kept  # shared by the gate's two scripts

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        if _pack is None:  # pragma: no cover - hiredis is installed with redis[hiredis]
            return self.script(keys=keys, args=args)
        packed = [_pack(("EVALSHA", self.sha, len(keys), *keys, *args))]
        conn = self.kept.take()
        clean = False
        try:
            def send() -> Any:
                conn.send_packed_command(packed)
                return conn.read_response()

            result = conn.retry.call_with_retry(send, lambda _error: conn.disconnect())
            clean = True
            return result
        except NoScriptError:
            clean = True  # the whole reply was read
        finally:
            self.kept.give(conn, clean)
        return self.script(keys=keys, args=args)


class RedisGate(Gate):
    """:data:`ENTER` and :data:`LEAVE` on one Redis server; ``fallback`` while it cannot serve."""

    def __init__(self, client: Any, fallback: LocalGate, keys: RedisKeys,
                 states: RedisCachedStateStore | None = None, limiter: RateLimiter | None = None, *,
                 lock_ttl_s: float = 10.0, answer_ttl_s: int = 24 * 3600, wait_s: float = 15.0) -> None:
        super().__init__(fallback.dedup, limiter)
        self.client = client
        self.fallback: LocalGate = fallback
        self.keys = keys
        #: The state cache whose entries the scripts read and write (None: no pending state read).
        self.states = states
        self.lock_ttl_ms = int(lock_ttl_s * 1000)
        self.answer_ttl_s = answer_ttl_s
        self.wait_s = wait_s
        self.breaker = Breaker("conversation locks, de-duplication and message rate limits")
        kept = _Kept(client.connection_pool)
        self._enter = _Script(client, ENTER, kept)
        self._leave = _Script(client, LEAVE, kept)

    def step(self, q: Queued) -> Admission | None:
        if not self.breaker.closed or (self.states is not None and self.states.stale and not self.states.heal()):
            return self.go_around(q)  # cache entries that may be stale must go before one is read
        keys = self.keys
        limits = self.limiter.limits(q.channel, q.sender_id) if q.count and self.limiter is not None else []
        state_key = keys.state(q.key) if q.lookup and self.states is not None else "-"
        args: list[Any] = [q.token, self.lock_ttl_ms, keys.alive, "1" if q.enqueue else "0", q.key]
        for _scope, _bucket, limit, window in limits:
            args += [limit, window + 1]
        try:
            res = self._enter(keys=[keys.lock(q.key), keys.answer(q.dedup_key) if q.lookup else "-",
                                    keys.dirty, state_key,
                                    *(keys.counter(bucket, window, q.now) for _s, bucket, _l, window in limits)],
                              args=args)
        except REDIS_DOWN as exc:
            self.breaker.failed(exc)
            return self.go_around(q)
        self.breaker.succeeded()
        if int(res[0]):
            scope, _bucket, _limit, window = limits[int(res[0]) - 1]
            raise RateLimited.until_window_end(scope, window, q.now)
        got = int(res[1])
        if got != 1:
            q.enqueue = got == -1
            return None
        self.stats["redis"] += 1
        adm = Admission(q.key, q.token)
        if q.lookup:
            answer, pending = res[2], res[3]
            adm.answered = replies_from_json(answer) if answer else self.dedup.get(q.dedup_key)
            adm.pending = DialogueState.from_json(pending) if pending else None
        return adm

    def leave(self, adm: Admission) -> None:
        """One script (a redis-py pipeline of the three writes costs twice the CPU of the call).
        If it fails, the queue entry expires by itself and a state written is marked stale."""
        if adm.held is not None:  # admitted by the fallback
            self.fallback.leave(adm)
            return
        answer, dedup_key = "", "-"
        if adm.dedup is not None:
            dedup_key, replies = adm.dedup
            self.dedup.put(dedup_key, replies)  # for retries while Redis is down
            answer = replies_to_json(replies)
        state_raw, was_pending = "", "0"
        if adm.state is not None and self.states is not None:
            _state, state_raw, pending = adm.state
            was_pending = "1" if pending else "0"
        self._run_leave(adm.key, adm.token, answer, dedup_key, state_raw, was_pending)

    def abandon(self, q: Queued) -> None:
        self._run_leave(q.key, q.token)

    def _run_leave(self, key: str, token: str, answer: str = "", dedup_key: str = "-", state_raw: str = "",
                   was_pending: str = "0") -> None:
        keys = self.keys
        try:
            self._leave(keys=[keys.lock(key), keys.answer(dedup_key), keys.state(key), keys.dirty],
                        args=[token, keys.alive, answer, self.answer_ttl_s, state_raw,
                              self.states.ttl_s if self.states is not None else 0, was_pending, key])
        except REDIS_DOWN as exc:
            self.breaker.failed(exc)
            if state_raw and self.states is not None:
                self.states.mark_stale(key)  # deleted once Redis is back


def make_gate(redis_url: str | None, database_url: str, limiter: RateLimiter | None = None,
              states: StateStore | None = None, prefix: str = "pcrm:") -> Gate:
    """Redis (falling back to the database lock) when ``REDIS_URL`` is set, else the database lock."""
    if not redis_url:
        return LocalGate(DbLock(database_url), InProcessDedup(), limiter, states)
    cache = states if isinstance(states, RedisCachedStateStore) else None
    client = cache.client if cache is not None else sync_client(redis_url)
    return RedisGate(client, LocalGate(DbLock(database_url), states=states), RedisKeys(prefix), cache, limiter)
