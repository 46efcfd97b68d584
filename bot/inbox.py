"""The one path every inbound message takes: store → engine → store → live events.

Adapters call :meth:`Inbox.receive`. The inbound message is committed before
the engine runs (so it is never lost, and a retried delivery is recognised);
the engine's turn and its consequences (hand-offs, feedback, erasure) are
committed after. If the database is down, the resident still gets an answer
and the records wait in a local spool file until it is back.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anyio import CapacityLimiter, to_thread
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bot.dedup import DedupStore, InProcessDedup
from bot.dialogue.state import DialogueState
from bot.engine import Engine
from bot.live import LiveEvents
from bot.locks import ConversationLock, InProcessLock
from bot.messages import Attachment, Message, Reply, Turn
from bot.sms import SmsSender
from crm_store import conversations, handoffs, hot_path, interactions, residents
from crm_store.masking import mask_pii
from crm_store.models import Feedback, Handoff
from crm_store.phones import is_phone_channel
from crm_store.state_store import SqlStateStore
from crm_store.timeutil import utcnow

if TYPE_CHECKING:
    from bot.ratelimit import RateLimiter

log = logging.getLogger("pcrm.inbox")


class Inbox:
    """Receives normalized messages from every channel."""

    def __init__(self, engine: Engine, sessions: sessionmaker[Session], live: LiveEvents,
                 spool_path: Path | None = None, lock: ConversationLock | None = None,
                 dedup: DedupStore | None = None, limiter: RateLimiter | None = None) -> None:
        self.engine = engine
        self.sessions = sessions
        self.live = live
        self.spool_path = spool_path or Path("var/spool.jsonl")
        #: The send-SMS interface for one-time codes; create_app sets it once channels exist.
        self.sms_sender: SmsSender | None = None
        #: One conversation at a time (in-process, or across workers: Redis, the database).
        self.lock = lock or InProcessLock()
        #: The first answer of each delivery id (answers a retried webhook the same).
        self.dedup = dedup or InProcessDedup()
        #: Per-sender and per-channel limits (None: unlimited).
        self.limiter = limiter
        #: Messages handled at once by this process's threads (more only contend for the GIL).
        self.max_threads = int(os.environ.get("PCRM_INBOX_THREADS", "8"))
        self._threads: Any = None

    async def receive(self, message: Message) -> Turn:
        """Store, decide, store. Messages of one conversation are handled strictly in order.

        Raises :class:`bot.ratelimit.RateLimited` when the sender or the channel is over its limit.
        """
        if self._threads is None:  # created on the event loop
            self._threads = CapacityLimiter(self.max_threads)
        turn, live_events = await to_thread.run_sync(self._receive_sync, message, limiter=self._threads)
        for channel, payload in live_events:
            try:
                await self.live.publish(channel, payload)
            except Exception:  # noqa: BLE001 - a bus outage must not cost the resident the answer
                log.warning("live event to %s not published", channel, exc_info=True)
        return turn

    def _receive_sync(self, message: Message) -> tuple[Turn, list[tuple[str, dict[str, Any]]]]:
        if self.limiter is not None:
            self.limiter.check(message.channel, message.sender_id)
        with self.lock.hold(message.conversation_key):
            return self._receive_locked(message)

    def _receive_locked(self, message: Message) -> tuple[Turn, list[tuple[str, dict[str, Any]]]]:
        dedup_key = f"{message.channel}:{message.message_id}"
        answered = self.dedup.get(dedup_key)
        if answered is not None:  # a retry (maybe answered by another worker): the same answer
            return Turn(message.conversation_key, message.lang or "ko", "duplicate", 1.0, replies=answered), []
        ids: dict[str, Any] | None = None
        sql_states = self._sql_states()
        state: DialogueState | None = None
        try:
            try:
                ids, state = self._store_inbound(message, load_state=sql_states is not None)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # A pooled connection died (the database restarted): the pool is invalidated; once more.
                ids, state = self._store_inbound(message, load_state=sql_states is not None)
        except Exception:  # noqa: BLE001 - the database may be down; the resident still gets an answer
            log.exception("store unavailable; spooling inbound %s", mask_pii(message.conversation_key))
            self._spool({"kind": "inbound", "message": _message_dict(message)})
        if ids is not None and ids.get("duplicate"):
            cached = self.dedup.get(dedup_key)
            return Turn(message.conversation_key, message.lang or "ko", "duplicate", 1.0,
                        replies=cached or []), []
        try:
            # The state came with the inbound message's transaction (committed already);
            # it is saved with the turn. Without the database: the state store's own way.
            turn = self.engine.decide(message, state) if state is not None else self.engine.handle(message)
        except Exception:  # noqa: BLE001 - e.g. the state store is down too: still answer
            if ids is not None:
                raise
            log.exception("engine failed while the store is down")
            lang = message.lang or "ko"
            turn = Turn(message.conversation_key, lang, "error", 0.0,
                        replies=[Reply(self.engine.knowledge.render("utter_error", lang))])
        if ids is not None and turn.event("show_data"):
            turn.replies.append(self._my_data_reply(ids["resident_id"], turn.lang))
        if turn.event("otp_request") or turn.event("otp_verify"):
            turn.replies.append(self._phone_link_reply(message, turn))
        self.dedup.put(dedup_key, turn.replies)
        live: list[tuple[str, dict[str, Any]]] = []
        if ids is not None:
            loaded = state.version if state is not None else 0
            try:
                live = self._store_turn(message, turn, ids, state)
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
        mine, theirs = self.sessions.kw.get("bind"), sql._sessions.kw.get("bind")
        if mine is None or theirs is None or (mine is not theirs and str(mine.url) != str(theirs.url)):
            return None
        return sql

    # --- store -------------------------------------------------------------------------------
    def _store_inbound(self, message: Message, load_state: bool = False
                       ) -> tuple[dict[str, Any], DialogueState | None]:
        """Commit the inbound message (and, with ``load_state``, read the dialogue state in the
        same transaction). Returns the ids ({"duplicate": True} for a retried delivery)."""
        contact = message.attachment("contact")
        with self.sessions.begin() as s:
            conn = s.connection()
            found = None
            if not contact and not is_phone_channel(message.channel) and hot_path.supports_insert_ignore(conn):
                found = hot_path.lookup(conn, message.channel, message.sender_id, message.conversation_key)
                if found is None:  # first contact: Core inserts; the ORM path below if that raced
                    found = hot_path.register(conn, message.channel, message.sender_id,
                                              message.conversation_key, utcnow())
            if found is not None and found.conversation_id is not None:  # the common case: a known sender
                hot_path.touch(conn, found, utcnow())
                if found.conversation_resident_id != found.resident_id:
                    hot_path.set_conversation_resident(conn, found.conversation_id, found.resident_id)
                inbound_id = hot_path.insert_inbound(conn, message, found.conversation_id, found.resident_id)
                if inbound_id is None:
                    return {"duplicate": True}, None
                ids = {"resident_id": found.resident_id, "conversation_id": found.conversation_id,
                       "inbound_id": inbound_id, "channel": message.channel,
                       "needs_tags": list(found.needs_tags or [])}
                raw, version = found.state, found.state_version
            else:
                phone = message.sender_id if is_phone_channel(message.channel) else None
                if contact and contact.phone:
                    resident = residents.link_phone(s, message.channel, message.sender_id, contact.phone)
                else:
                    resident = residents.identify(s, message.channel, message.sender_id, phone=phone)
                conv = conversations.get_or_create(s, message.conversation_key, message.channel, resident)
                row = interactions.record_inbound(s, message, conv, resident)
                if row is None:
                    return {"duplicate": True}, None
                s.flush()
                ids = {"resident_id": resident.id, "conversation_id": conv.id, "inbound_id": row.id,
                       "channel": conv.channel, "needs_tags": list(resident.needs_tags or [])}
                raw, version = conv.state, conv.state_version
            if not load_state:
                return ids, None
            state = DialogueState.from_json(raw) if raw else DialogueState(key=message.conversation_key)
            state.version = version or 0
        pending = getattr(self.engine.states, "pending", None)
        kept = pending(message.conversation_key) if pending is not None else None
        if kept is not None:  # saved in Redis during a database outage, not written back yet: it wins
            kept.version = state.version
            ids["pending_state"] = True
            state = kept
        return ids, state

    def _store_turn(self, message: Message, turn: Turn, ids: dict[str, Any],
                    state: DialogueState | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Commit the turn (and ``state``, when the inbox loaded it) in one transaction."""
        from crm_store.models import Conversation, Resident

        live: list[tuple[str, dict[str, Any]]] = []
        forget = False
        raw_state: str | None = None
        now = utcnow()
        cid, rid = ids["conversation_id"], ids["resident_id"]
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
            hot_path.store_turn(conn, turn, cid, ids["channel"], rid, ids["inbound_id"], now)
            tags = ids.get("needs_tags") or []
            new_tags: list[str] = []
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
                elif ev.type == "delete_data" and rid is not None:
                    residents.delete_resident(s, rid)
                    forget = True
                elif ev.type == "request_opened" and rid is not None:
                    code = ev.data.get("service_code")
                    if code and code not in tags:
                        new_tags.append(code)
            if (turn.label.startswith(("faq.", "conv.request_status")) and rid is not None
                    and turn.label not in tags and turn.label not in new_tags):
                new_tags.append(turn.label)
            if new_tags and not forget:
                hot_path.add_needs_tags(conn, rid, new_tags)
        if forget:  # after the commit: the state store may write to the same database
            self.engine.forget(message.conversation_key)
        elif state is not None:
            saved = getattr(self.engine.states, "saved", None)
            if saved is not None:  # the Redis cache in front of SQL
                saved(state, was_pending=bool(ids.get("pending_state")), raw=raw_state)
        return live

    def _phone_link_reply(self, message: Message, turn: Turn) -> Reply:
        """Issue and text a one-time code, or check one and link the phone ("전화번호 연결").

        Runs in the worker thread of :meth:`receive`; the SMS sender is async, so it is
        called on the event loop through ``anyio.from_thread``.
        """
        from anyio import from_thread

        from crm_store import otp
        from crm_store.masking import mask_phone
        from crm_store.phones import normalize_phone

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
            with self.sessions.begin() as s:
                code = otp.issue(s, key, phone, secret=secret)
            city = (k.config.get("municipality") or {}).get("name", {}).get(lang, "")
            text = (f"[{city}] 인증번호 {code} (5분 안에 입력해 주세요)" if lang == "ko"
                    else f"[{city}] Your code is {code}. It expires in 5 minutes.")
            sender = self.sms_sender
            sent = bool(sender and from_thread.run(sender.send_sms, phone, text))
            if not sent:
                return Reply(k.render("utter_otp_not_sent", lang))
            return Reply(k.render("utter_otp_sent", lang, phone=mask_phone(phone)))
        with self.sessions.begin() as s:
            if not otp.verify(s, key, phone, str(ev.data.get("code")), secret=secret):
                return Reply(k.render("utter_otp_failed", lang))
            residents.link_phone(s, message.channel, message.sender_id, phone)
        return Reply(k.render("utter_phone_linked", lang))

    def _my_data_reply(self, resident_id: int, lang: str) -> Reply:
        """"내 정보 보기": what we hold, summarised (the full export is a staff CLI away)."""
        with self.sessions() as s:
            data = residents.export_resident(s, resident_id)
        channels = sorted({i["channel"] for i in data["identities"] if i["channel"] != "phone"})
        requests = ", ".join(f"{r['service_request_id']} ({r['sub_status']})" for r in data["service_requests"])
        text = self.engine.knowledge.render("utter_my_data", lang, channels=", ".join(channels) or "-",
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
                flush_dirty(self.lock.hold)
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


def _message_dict(m: Message) -> dict[str, Any]:
    return asdict(m)


def _message_from(d: dict[str, Any]) -> Message:
    atts = [Attachment(**a) for a in d.pop("attachments", [])]
    return Message(**d, attachments=atts)

