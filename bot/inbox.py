"""The one path every inbound message takes: store → engine → store → live events.

Adapters call :meth:`Inbox.receive`. The inbound message is committed before
the engine runs (so it is never lost, and a retried delivery is recognised);
the engine's turn and its consequences (hand-offs, feedback, erasure) are
committed after. If the database is down, the resident still gets an answer
and the records wait in a local spool file until it is back.
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import json
import logging
import os
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bot import metrics, telemetry
from bot.admission import Admission, Gate, LocalGate, Queued
from bot.dedup import DedupStore
from bot.dialogue.state import DialogueState
from bot.engine import Engine
from bot.inbox_port import InboxPort
from bot.live import LiveEvents
from bot.masking import mask_pii
from bot.messages import Attachment, Message, Reply, Turn
from bot.settings import Settings
from bot.sms import SmsSender
from crm_store import handoffs, residents
from crm_store.direct import ConnectionLost
from crm_store.message_log import Clash, Duplicate, MessageLog, Stored, writes_all
from crm_store.models import Feedback, Handoff, audit
from crm_store.state_store import SqlStateStore
from crm_store.timeutil import utcnow

if TYPE_CHECKING:
    from bot.locks import ConversationLock
    from bot.ratelimit import RateLimiter

log = logging.getLogger("pcrm.inbox")
T = TypeVar("T")


class Inbox(InboxPort):
    """Receives normalized messages from every channel (the channel port: :mod:`bot.ports`)."""

    def __init__(self, engine: Engine, sessions: sessionmaker[Session], live: LiveEvents,
                 spool_path: Path | None = None, lock: ConversationLock | None = None,
                 dedup: DedupStore | None = None, limiter: RateLimiter | None = None,
                 gate: Gate | None = None, max_threads: int | None = None) -> None:
        self.engine = engine
        self.sessions = sessions
        self.live = live
        self.spool_path = spool_path or Path("var/spool.jsonl")
        #: The send-SMS interface for one-time codes; create_app sets it once channels exist.
        self.sms_sender: SmsSender | None = None
        #: Admission (bot/admission.py): rate limits, one conversation at a time (in-process, or
        #: across workers: Redis, the database), a retry's first answer, a pending state. Without
        #: ``gate``: the in-process pieces given (``lock``, ``dedup``, ``limiter``) or defaults.
        self.gate: Gate = gate or LocalGate(lock, dedup, limiter, engine.states)
        #: Messages handled at once by this process's threads (more only contend for the GIL):
        #: ``PCRM_INBOX_THREADS`` (:attr:`bot.settings.Settings.pcrm_inbox_threads`), given by create_app.
        self.max_threads = max_threads or Settings.model_fields["pcrm_inbox_threads"].default
        self._threads: ThreadPoolExecutor | None = None
        #: The event loop that hands messages to the inbox threads: where their async calls run.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads_pid = 0
        #: Where messages and turns are stored (on PostgreSQL each of the two writes of a message
        #: in one autocommit statement).
        self.log = MessageLog(sessions)

    @property
    def limiter(self) -> RateLimiter | None:
        """Per-sender and per-channel limits (None: unlimited); the gate's, settable."""
        return self.gate.limiter

    @limiter.setter
    def limiter(self, value: RateLimiter | None) -> None:
        self.gate.limiter = value

    @property
    def dedup(self) -> DedupStore:
        """The first answers this process gave (the gate's memory of them)."""
        return self.gate.dedup

    async def receive(self, message: Message) -> Turn:
        """Store, decide, store. Messages of one conversation are handled strictly in order.

        Raises :class:`bot.ratelimit.RateLimited` when the sender or the channel is over its limit.
        """
        telemetry.CONVERSATION.set(telemetry.conversation_ref(message.conversation_key))  # log lines of this turn
        with telemetry.span("inbox", **{"pcrm.channel": message.channel}):
            return await self._receive(message)

    async def _receive(self, message: Message) -> Turn:
        started = time.perf_counter()
        queued: Queued | None = None
        while True:
            result = await self._in_thread(message, queued)
            if not isinstance(result, Queued):
                break
            # An earlier message of this conversation is still being handled (here or by another
            # worker): wait on the event loop, not in one of the few threads, which under a
            # backlog would leave fewer threads for everybody and deepen the backlog.
            queued = result
            try:
                await anyio.sleep(queued.wait_s)
            except BaseException:
                self.gate.abandon(queued)
                raise
        turn, live_events = result
        metrics.turn_done(message.channel, turn, time.perf_counter() - started)
        for channel, payload in live_events:
            try:
                await self.live.publish(channel, payload)
            except Exception:  # noqa: BLE001 - a bus outage must not cost the resident the answer
                log.warning("live event to %s not published", channel, exc_info=True)
        return turn

    async def _in_thread(self, message: Message, queued: Queued | None
                         ) -> tuple[Turn, list[tuple[str, dict[str, Any]]]] | Queued:
        """:meth:`receive_sync` in one of this process's ``max_threads`` inbox threads (the request's
        context variables go along: the log lines' request and conversation ids).

        A plain executor rather than ``anyio.to_thread`` (a ``queue.Queue`` with its ``Condition``
        and a capacity limiter per call: ≈ 42 against 22 µs of CPU a hop at 16 at once). As there,
        a cancelled caller does not abandon the thread's work: the result is awaited (and a place in
        a conversation's queue given back), then the cancellation goes on."""
        pool = self._threads
        if pool is None or pool._max_workers != self.max_threads or self._threads_pid != os.getpid():  # noqa: SLF001
            if pool is not None and self._threads_pid == os.getpid():
                pool.shutdown(wait=False)
            # made in this process (a forked worker never inherits its parent's, whose threads it has not)
            pool = self._threads = ThreadPoolExecutor(self.max_threads, thread_name_prefix="pcrm-inbox")
            self._threads_pid = os.getpid()
        ctx = contextvars.copy_context()
        self._loop = asyncio.get_running_loop()
        fut = self._loop.run_in_executor(pool, ctx.run, self.receive_sync, message, queued, False)
        with anyio.CancelScope(shield=True):  # an anyio cancellation (Starlette's) comes after, as before
            try:
                return await asyncio.shield(fut)
            except asyncio.CancelledError:  # a plain asyncio one: wait anyway, give a queue place back
                while not fut.done():
                    try:
                        await asyncio.shield(fut)
                    except asyncio.CancelledError:
                        continue
                    except Exception:  # noqa: BLE001 - the cancellation goes first
                        break
                if not fut.cancelled() and fut.exception() is None and isinstance(fut.result(), Queued):
                    self.gate.abandon(fut.result())
                raise

    def receive_sync(self, message: Message, queued: Queued | None = None, wait: bool = True
                      ) -> tuple[Turn, list[tuple[str, dict[str, Any]]]] | Queued:
        """The message in a worker thread. ``wait=False`` (:meth:`receive`): a message that must
        wait for an earlier one of its conversation comes back as :class:`Queued`, to be passed
        in again later; ``wait=True`` (tools, tests): the wait happens here, in the thread."""
        gate = self.gate
        with metrics.timed("redis"):  # limits, lock, retry answer, pending state: one round trip with Redis
            adm = gate.admit(message.channel, message.sender_id, message.conversation_key, _dedup_key(message),
                             wait=wait, queued=queued)
        if isinstance(adm, Queued):
            return adm
        try:
            return self._receive_locked(message, adm)
        finally:
            with metrics.timed("redis"):
                gate.leave(adm)  # the answer for retries, the state cache, the release: one more

    def _receive_locked(self, message: Message, adm: Admission | None = None
                        ) -> tuple[Turn, list[tuple[str, dict[str, Any]]]]:
        """The message under its conversation's lock; ``adm`` holds what the gate read and
        collects what it writes on leaving."""
        dedup_key = _dedup_key(message)
        answered = adm.answered if adm is not None else self.dedup.get(dedup_key)
        if answered is not None:  # a retry (maybe answered by another worker): the same answer
            return Turn(message.conversation_key, message.lang or "ko", "duplicate", 1.0, replies=answered), []
        stored: Stored | Duplicate | None = None  # stays None for an anonymous sender: nobody to file it under
        sql_states = self._sql_states()
        state: DialogueState | None = None
        try:
            try:
                with metrics.timed("store"):
                    stored, state = (None, None) if message.anonymous else \
                        self._store_inbound(message, load_state=sql_states is not None, adm=adm)
            except (DBAPIError, ConnectionLost) as exc:
                if not getattr(exc, "connection_invalidated", False):
                    raise
                # A pooled connection died (the database restarted): the pool is invalidated; once more.
                stored, state = self._store_inbound(message, load_state=sql_states is not None, adm=adm)
        except Exception:  # noqa: BLE001 - the database may be down; the resident still gets an answer
            log.exception("store unavailable; spooling inbound %s", mask_pii(message.conversation_key))
            self._spool({"kind": "inbound", "message": _message_dict(message)})
        if isinstance(stored, Duplicate):
            cached = self.dedup.get(dedup_key)
            return Turn(message.conversation_key, message.lang or "ko", "duplicate", 1.0,
                        replies=cached or []), []
        try:
            # The state came with the inbound message's transaction (committed already);
            # it is saved with the turn. Without the database: the state store's own way.
            with metrics.timed("engine"):
                turn = self.engine.decide(message, state) if state is not None else self.engine.handle(message)
        except Exception:  # noqa: BLE001 - e.g. the state store is down too: still answer
            if stored is not None:
                raise
            log.exception("engine failed while the store is down")
            lang = message.lang or "ko"
            turn = Turn(message.conversation_key, lang, "error", 0.0,
                        replies=[Reply(self.engine.knowledge.render("utter_error", lang))])
        if stored is not None and turn.event("show_data"):
            turn.replies.append(self._my_data_reply(stored.resident_id, turn.lang))
        if turn.event("otp_request") or turn.event("otp_verify"):
            turn.replies.append(self._phone_link_reply(message, turn))
        if stored is not None and turn.routing.action == "paused" and not turn.event("emergency_note"):
            try:
                turn.replies.extend(self._queue_callback(stored.conversation_id, message, turn.lang))
            except Exception:  # noqa: BLE001 - a convenience: the message still reaches the agent
                log.warning("queue call-back check failed", exc_info=True)
        if stored is not None:
            self._record_publish_consent(turn)
        if adm is not None:
            adm.dedup = (dedup_key, turn.replies)
        else:
            self.dedup.put(dedup_key, turn.replies)
        live: list[tuple[str, dict[str, Any]]] = []
        if stored is not None:
            loaded = state.version if state is not None else 0
            try:
                with metrics.timed("store"):
                    live = self._store_turn(message, turn, stored, state, adm)
            except Exception:  # noqa: BLE001
                log.exception("could not store turn of %s; spooling", mask_pii(message.conversation_key))
                self._spool({"kind": "turn", "message": _message_dict(message),
                             "replies": [r.text for r in turn.replies], "label": turn.label})
                if state is not None:  # the state store keeps it its own way (Redis, while SQL is down)
                    state.version = loaded
                    self.engine.states.save(state)
        return turn, live

    def _sql_states(self) -> SqlStateStore | None:
        """The engine's SQL state store when it is on this inbox's database (then the inbox
        loads and saves states in its own transactions), else None."""
        store = self.engine.states
        sql = getattr(store, "backing", store)
        if not isinstance(sql, SqlStateStore):
            return None
        mine, theirs = self.sessions.kw.get("bind"), sql.bind
        if mine is None or theirs is None or (mine is not theirs and str(mine.url) != str(theirs.url)):
            return None
        return sql

    # --- store -------------------------------------------------------------------------------
    def _store_inbound(self, message: Message, load_state: bool = False, adm: Admission | None = None
                       ) -> tuple[Stored | Duplicate, DialogueState | None]:
        """Commit the inbound message (and, with ``load_state``, read the dialogue state with it):
        :class:`Stored`, or :class:`Duplicate` for a retried delivery."""
        stored = self.log.store_inbound(message)
        if isinstance(stored, Duplicate) or not load_state:
            return stored, None
        state = DialogueState.from_json(stored.state) if stored.state else DialogueState(key=message.conversation_key)
        state.version = stored.state_version
        return stored, self._with_pending(message, stored, state, adm)

    def _with_pending(self, message: Message, stored: Stored, state: DialogueState,
                      adm: Admission | None) -> DialogueState:
        """``state``, unless a state of the conversation kept in Redis during a database outage
        has not been written back yet: that one wins."""
        if adm is not None:
            kept = adm.pending
        else:
            pending = getattr(self.engine.states, "pending", None)
            kept = pending(message.conversation_key) if pending is not None else None
        if kept is not None:  # saved in Redis during a database outage, not written back yet: it wins
            kept.version = state.version
            stored.pending_state = True
            state = kept
        return state

    def _store_turn(self, message: Message, turn: Turn, stored: Stored,
                    state: DialogueState | None = None, adm: Admission | None = None
                    ) -> list[tuple[str, dict[str, Any]]]:
        """Commit the turn (and ``state``, when the inbox loaded it) in one transaction."""
        from crm_store.models import Conversation, Resident

        live: list[tuple[str, dict[str, Any]]] = []
        forget = False
        raw_state: str | None = None
        now = utcnow()
        cid, rid = stored.conversation_id, stored.resident_id
        if self.log.pg is not None and state is not None and writes_all(turn):
            fast = self._store_turn_pg(turn, stored, state, now)
            if fast is not None:
                self._cache_state(state, stored, fast[1], adm)
                return fast[0]
        with self.sessions.begin() as s:
            conn = s.connection()
            handoff = turn.routing.action == "handoff"
            if state is not None:
                sql_states = self._sql_states()
                assert sql_states is not None
                extra = {"handed_off": True, "department": turn.routing.department} if handoff else None
                raw_state = sql_states.save_in(conn, state, cid, extra)
            else:
                conn.execute(update(Conversation).where(Conversation.id == cid).values(
                    updated_at=now, **({"handed_off": True, "department": turn.routing.department}
                                       if handoff else {})))
            self.log.turn_in(conn, stored, turn, now)
            tags = stored.needs_tags
            for ev in turn.events:
                if ev.type == "handoff":
                    conv = s.get_one(Conversation, cid)
                    resident = s.get(Resident, rid)
                    h = handoffs.open_handoff(s, conv, resident, ev.data["department"], ev.data["priority"],
                                              ev.data["reason"], ev.data.get("summary", ""))
                    if ev.data.get("after_hours"):
                        h.reason = f"callback:{ev.data['reason']}"
                    s.flush()
                    live.append((f"dept:{h.department}", {"type": "handoff", "handoff_id": h.id,
                                                          "department": h.department, "priority": h.priority}))
                elif ev.type == "handoff_withdrawn":
                    h = handoffs.withdraw(s, cid)
                    if h is not None:
                        live.append((f"dept:{h.department}", {"type": "handoff_closed", "handoff_id": h.id,
                                                              "department": h.department}))
                elif ev.type in ("callback", "emergency_note"):
                    # The call-back's number and message, or what a resident in an emergency added,
                    # go on the conversation's open hand-off, where the agent reads them.
                    due = self._callback_due() if ev.type == "callback" else None
                    h = handoffs.annotate(s, cid, ev.type, ev.data, due_at=due)
                    if h is not None:
                        live.append((f"dept:{h.department}", {"type": "handoff_updated", "handoff_id": h.id,
                                                              "department": h.department}))
                elif ev.type == "paused":
                    open_h = s.query(Handoff).filter(Handoff.conversation_id == cid,
                                                     Handoff.status != "closed").first()
                    if open_h is not None:
                        live.append((f"handoff:{open_h.id}", {"type": "message", "handoff_id": open_h.id,
                                                              "text": message.text}))
                        live.append((f"dept:{open_h.department}", {"type": "message", "handoff_id": open_h.id}))
                elif ev.type == "feedback":
                    conv = s.get_one(Conversation, cid)
                    last = s.query(Handoff).filter(Handoff.conversation_id == cid) \
                        .order_by(Handoff.id.desc()).first()
                    s.add(Feedback(conversation_id=cid, resident_id=conv.resident_id,
                                   handoff_id=last.id if last else None, rating=int(ev.data["rating"])))
                elif ev.type == "contact_consent" and rid is not None:
                    # Reminders' consent (bot/reminders.py): given by answering 예 to the offer, withdrawn
                    # with 수신거부 on any channel; audited, like an SMS STOP.
                    s.get_one(Resident, rid).contact_consent = bool(ev.data["consent"])
                    s.add(audit("resident", "consent.given" if ev.data["consent"] else "consent.withdrawn",
                                f"resident:{rid}"))
                elif ev.type == "request_subscribed":
                    # A resident took an open ticket instead of filing a duplicate (the action wrote the
                    # subscription): the department's console shows the ticket's new count live.
                    live.append((f"dept:{ev.data.get('department') or 'general'}",
                                 {"type": "request_subscribed", "ticket": ev.data.get("ticket")}))
                elif ev.type == "delete_data" and rid is not None:
                    residents.delete_resident(s, rid)
                    forget = True
            new_tags = _new_tags(turn, tags) if rid is not None else []
            if new_tags and not forget:
                self.log.add_needs_tags(conn, rid, new_tags)
        if forget:  # after the commit: the state store may write to the same database
            self.engine.forget(message.conversation_key)
        elif state is not None:
            self._cache_state(state, stored, raw_state, adm)
        return live

    def _queue_callback(self, conversation_id: int, message: Message, lang: str) -> list[Reply]:
        """A resident still waiting for a person after ``sla.callback_offer_after_minutes`` (10 by
        default) is offered a call-back once; a number they then give becomes a call-back task on the
        same queued hand-off, which keeps its place in the queue (``queued_at`` is unchanged)."""
        from datetime import timedelta

        from bot.dialogue.understanding import phone_number
        from crm_store import callbacks
        from crm_store.models import AuditLog
        from crm_store.timeutil import as_utc

        k = self.engine.knowledge
        limit = int(k.municipality.sla.callback_offer_after_minutes)
        with self.sessions.begin() as s:
            h = s.query(Handoff).filter(Handoff.conversation_id == conversation_id,
                                        Handoff.status == "queued").first()
            if h is None or utcnow() - as_utc(h.queued_at) < timedelta(minutes=limit):
                return []
            task = callbacks.for_handoff(s, h.id)
            if task is not None and task.status == "open":
                return []
            target = f"handoff:{h.id}"
            offered = s.query(AuditLog).filter(AuditLog.action == "callback.offered", AuditLog.target == target).first()
            phone = phone_number(message.text or "")
            if phone and offered is not None:
                callbacks.record(s, h, {"phone": phone, "reason": "queue_wait", "message": ""}, utcnow())
                return [Reply(k.render("utter_queue_callback_booked", lang, phone=phone))]
            if offered is None:
                s.add(audit("resident", "callback.offered", target))
                return [Reply(k.render("utter_queue_callback_offer", lang, minutes=limit))]
        return []

    def _callback_due(self) -> datetime:
        """When a call-back should be made: when people are next at work, plus the configured
        minutes (``sla.callback_due_minutes``, 60 by default) to reach it."""
        from datetime import timedelta

        minutes = int(self.engine.knowledge.municipality.sla.callback_due_minutes)
        return self.engine.hours.next_open(self.engine.clock()) + timedelta(minutes=minutes)

    def _cache_state(self, state: DialogueState, stored: Stored, raw_state: str | None,
                     adm: Admission | None) -> None:
        if adm is not None and adm.locked:  # written by the gate on leaving
            adm.state = (state, raw_state if raw_state is not None else state.to_json(), stored.pending_state)
            return
        saved = getattr(self.engine.states, "saved", None)
        if saved is not None:  # the Redis cache in front of SQL
            saved(state, was_pending=stored.pending_state, raw=raw_state)

    def _store_turn_pg(self, turn: Turn, stored: Stored, state: DialogueState, now: datetime
                       ) -> tuple[list[tuple[str, dict[str, Any]]], str] | None:
        """:meth:`_store_turn` in one statement; None (nothing written) when the state was saved by
        someone else since it was loaded: the general path applies its rule."""
        handoff = turn.routing.action == "handoff"
        loaded = state.version
        state.version = loaded + 1
        raw = state.to_json()
        written = self.log.store_turn(
            stored, turn, state_json=raw, loaded=loaded, handed_off=True if handoff else state.handed_off,
            department=turn.routing.department if handoff else (
                state.handoff_department if state.handed_off else None),
            now=now, new_tags=_new_tags(turn, stored.needs_tags))
        if isinstance(written, Clash):
            state.version = loaded
            return None
        live: list[tuple[str, dict[str, Any]]] = []
        h = written.handoff
        if h is not None:
            live.append((f"dept:{h.department}", {"type": "handoff", "handoff_id": h.id,
                                                  "department": h.department, "priority": h.priority}))
        return live, raw

    def _call_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro``'s result, from an inbox thread: run on the event loop that handed the message
        over (an inbox thread is a plain executor's, not an AnyIO worker thread, so
        ``anyio.from_thread`` cannot find that loop); with no loop running anywhere (a script
        calling :meth:`receive_sync`), on a loop of its own."""
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                return asyncio.run_coroutine_threadsafe(coro, loop).result()
        return asyncio.run(coro)

    def _phone_link_reply(self, message: Message, turn: Turn) -> Reply:
        """Issue and text a one-time code, or check one and link the phone ("전화번호 연결").

        Runs in an inbox thread of :meth:`receive` (or a caller's thread through
        :meth:`receive_sync`); the SMS sender is async, so it runs on the loop that handed the
        message over (:meth:`_call_async`).
        """
        from bot.masking import mask_phone
        from bot.phones import normalize_phone
        from crm_store import otp

        k, lang = self.engine.knowledge, turn.lang
        secret = self.engine.settings.pcrm_secret_key
        key = message.conversation_key
        ev = turn.event("otp_request") or turn.event("otp_verify")
        assert ev is not None
        try:
            phone = normalize_phone(str(ev.data.get("phone") or ""))
        except ValueError:
            return Reply(k.render("utter_otp_failed", lang))
        if ev.type == "otp_request":
            from bot import throttle
            from bot.ratelimit import RateLimited

            try:  # SMS bombing through the conversation: the same limits as the API
                if self.limiter is not None:
                    throttle.otp_issue(self.limiter, key, phone, None)
            except RateLimited:
                return Reply(k.render("utter_otp_not_sent", lang))
            with self.sessions.begin() as s:
                code = otp.issue(s, key, phone, secret=secret)
            city = k.municipality.municipality.name.get(lang)
            text = (f"[{city}] 인증번호 {code} (5분 안에 입력해 주세요)" if lang == "ko"
                    else f"[{city}] Your code is {code}. It expires in 5 minutes.")
            sender = self.sms_sender
            sent = bool(sender and self._call_async(sender.send_sms(phone, text)))
            if not sent:
                return Reply(k.render("utter_otp_not_sent", lang))
            return Reply(k.render("utter_otp_sent", lang, phone=mask_phone(phone)))
        with self.sessions.begin() as s:  # the attempt is committed whatever the outcome
            outcome, _until = otp.check(s, key, phone, str(ev.data.get("code")), secret=secret)
            if outcome == "ok":
                residents.link_phone(s, message.channel, message.sender_id, phone)
        if outcome != "ok":
            return Reply(k.render("utter_otp_failed", lang))
        return Reply(k.render("utter_phone_linked", lang))

    def _record_publish_consent(self, turn: Turn) -> None:
        """A ``request_opened`` event with ``publish_consent`` (the resident said yes to publication
        in the conversation) marks that request for the public Open311 feed; default: not published."""
        tickets = [str(ev.data.get("ticket")) for ev in turn.events
                   if ev.type == "request_opened" and ev.data.get("publish_consent") is True and ev.data.get("ticket")]
        if not tickets:
            return
        from sqlalchemy import update

        from crm_store.models import ServiceRequest

        with self.sessions.begin() as s:
            s.execute(update(ServiceRequest).where(ServiceRequest.service_request_id.in_(tickets))
                      .values(public_consent=True).execution_options(synchronize_session=False))

    def _my_data_reply(self, resident_id: int, lang: str) -> Reply:
        """"내 정보 보기": what we hold, summarised (the full export is a staff CLI away)."""
        with self.sessions() as s:
            data = residents.export_resident(s, resident_id)
        k = self.engine.knowledge

        def shown(prefix: str, code: str) -> str:  # a resident never sees an internal code ("rest")
            return k.render(f"{prefix}_{code}", lang) if f"{prefix}_{code}" in k.responses else code

        channels = sorted({shown("channel", i["channel"]) for i in data["identities"] if i["channel"] != "phone"})
        requests = ", ".join(f"{r['service_request_id']} ({shown('status', r['sub_status'])})"
                             for r in data["service_requests"])
        text = k.render("utter_my_data", lang, channels=", ".join(channels) or "-",
                                            messages=len(data["interactions"]), requests=requests or "-")
        return Reply(text)

    # --- spool -------------------------------------------------------------------------------
    @contextmanager
    def _spool_file(self) -> Any:
        """The spool, locked against the other threads and workers (``flock``)."""
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool_path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _spool(self, record: dict[str, Any]) -> None:
        """Keep what could not be written, one JSON line each, for :meth:`flush_spool`."""
        metrics.ERRORS.labels("spooled").inc()
        with self._spool_file() as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()

    def flush_spool(self) -> int:
        """Write spooled inbound messages to the store; returns how many were written.

        Also writes back dialogue states that a Redis state cache kept during the outage.
        """
        flush_dirty = getattr(self.engine.states, "flush_dirty", None)
        if flush_dirty is not None:
            try:
                flush_dirty(self.gate.hold)
            except Exception:  # noqa: BLE001 - still down: next time
                log.warning("dialogue states kept in Redis not written back yet", exc_info=True)
        if not self.spool_path.exists():
            return 0
        with self._spool_file() as fh:
            fh.seek(0)
            lines = [line for line in fh.read().splitlines() if line.strip()]
            if not lines:
                return 0
            written, left = 0, []
            for line in lines:
                rec = json.loads(line)
                if rec.get("kind") != "inbound":
                    continue
                try:
                    self._store_inbound(_message_from(rec["message"]))
                    written += 1
                except Exception:  # noqa: BLE001 - still down: keep it
                    left.append(line)
            fh.seek(0)
            fh.truncate()
            fh.write("".join(x + "\n" for x in left))
            fh.flush()
        return written


def _new_tags(turn: Turn, tags: list[str]) -> list[str]:
    """The resident's new ``needs_tags``: services asked for, FAQ topics and status queries."""
    new: list[str] = []
    for ev in turn.events:
        code = ev.data.get("service_code") if ev.type in ("request_opened", "request_subscribed") else None
        if code and code not in tags and code not in new:
            new.append(code)
    if turn.label.startswith(("faq.", "conv.request_status")) and turn.label not in tags and turn.label not in new:
        new.append(turn.label)
    return new


def _dedup_key(message: Message) -> str:
    return f"{message.channel}:{message.message_id}"


def _message_dict(m: Message) -> dict[str, Any]:
    return asdict(m)


def _message_from(d: dict[str, Any]) -> Message:
    atts = [Attachment(**a) for a in d.pop("attachments", [])]
    return Message(**d, attachments=atts)

