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
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from bot.dedup import DedupStore, InProcessDedup
from bot.engine import Engine
from bot.live import LiveEvents
from bot.locks import ConversationLock, InProcessLock
from bot.messages import Attachment, Message, Reply, Turn
from bot.sms import SmsSender
from crm_store import conversations, handoffs, interactions, residents
from crm_store.masking import mask_pii
from crm_store.models import Feedback, Handoff
from crm_store.phones import is_phone_channel

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

    async def receive(self, message: Message) -> Turn:
        """Store, decide, store. Messages of one conversation are handled strictly in order.

        Raises :class:`bot.ratelimit.RateLimited` when the sender or the channel is over its limit.
        """
        turn, live_events = await run_in_threadpool(self._receive_sync, message)
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
        try:
            ids = self._store_inbound(message)
        except Exception:  # noqa: BLE001 - the database may be down; the resident still gets an answer
            log.exception("store unavailable; spooling inbound %s", mask_pii(message.conversation_key))
            self._spool({"kind": "inbound", "message": _message_dict(message)})
        if ids is not None and ids.get("duplicate"):
            cached = self.dedup.get(dedup_key)
            return Turn(message.conversation_key, message.lang or "ko", "duplicate", 1.0,
                        replies=cached or []), []
        try:
            turn = self.engine.handle(message)
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
            try:
                live = self._store_turn(message, turn, ids)
            except Exception:  # noqa: BLE001
                log.exception("could not store turn of %s; spooling", mask_pii(message.conversation_key))
                self._spool({"kind": "turn", "message": _message_dict(message),
                             "replies": [r.text for r in turn.replies], "label": turn.label})
        return turn, live

    # --- store -------------------------------------------------------------------------------
    def _store_inbound(self, message: Message) -> dict[str, Any]:
        phone = message.sender_id if is_phone_channel(message.channel) else None
        contact = message.attachment("contact")
        with self.sessions.begin() as s:
            if contact and contact.phone:
                resident = residents.link_phone(s, message.channel, message.sender_id, contact.phone)
            else:
                resident = residents.identify(s, message.channel, message.sender_id, phone=phone)
            conv = conversations.get_or_create(s, message.conversation_key, message.channel, resident)
            row = interactions.record_inbound(s, message, conv, resident)
            if row is None:
                return {"duplicate": True}
            s.flush()
            return {"resident_id": resident.id, "conversation_id": conv.id, "inbound_id": row.id}

    def _store_turn(self, message: Message, turn: Turn, ids: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        from crm_store.models import Conversation, Interaction, Resident

        live: list[tuple[str, dict[str, Any]]] = []
        forget = False
        with self.sessions.begin() as s:
            conv = s.get(Conversation, ids["conversation_id"])
            resident = s.get(Resident, ids["resident_id"])
            inbound = s.get(Interaction, ids["inbound_id"])
            assert conv is not None
            interactions.record_turn(s, turn, conv, resident, inbound)
            for ev in turn.events:
                if ev.type == "handoff":
                    h = handoffs.open_handoff(s, conv, resident, ev.data["department"], ev.data["priority"],
                                              ev.data["reason"], ev.data.get("summary", ""))
                    if ev.data.get("after_hours"):
                        h.reason = f"callback:{ev.data['reason']}"
                    live.append((f"dept:{h.department}", {"type": "handoff", "handoff_id": h.id,
                                                          "department": h.department, "priority": h.priority}))
                elif ev.type == "paused":
                    open_h = s.query(Handoff).filter(Handoff.conversation_id == conv.id,
                                                     Handoff.status != "closed").first()
                    if open_h is not None:
                        live.append((f"handoff:{open_h.id}", {"type": "message", "handoff_id": open_h.id,
                                                              "text": message.text}))
                        live.append((f"dept:{open_h.department}", {"type": "message", "handoff_id": open_h.id}))
                elif ev.type == "feedback":
                    last = s.query(Handoff).filter(Handoff.conversation_id == conv.id) \
                        .order_by(Handoff.id.desc()).first()
                    s.add(Feedback(conversation_id=conv.id, resident_id=conv.resident_id,
                                   handoff_id=last.id if last else None, rating=int(ev.data["rating"])))
                elif ev.type == "delete_data" and resident is not None:
                    residents.delete_resident(s, resident.id)
                    forget = True
                elif ev.type == "request_opened" and resident is not None:
                    tags = list(resident.needs_tags or [])
                    code = ev.data.get("service_code")
                    if code and code not in tags:
                        resident.needs_tags = [*tags, code]
            if turn.label.startswith(("faq.", "conv.request_status")) and resident is not None:
                tags = list(resident.needs_tags or [])
                if turn.label not in tags:
                    resident.needs_tags = [*tags, turn.label]
        if forget:  # after the commit: the state store may write to the same database
            self.engine.forget(message.conversation_key)
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

