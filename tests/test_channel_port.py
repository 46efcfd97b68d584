"""The channel port (bot/ports.py) on the inbox: channel events reach the store through one
writer (crm_store/channel_events.py), dialogue-state changes run under the conversation's lock,
anonymous senders take the same admission path as everyone, and the layer contracts hold.

Runs on SQLite and PostgreSQL (the ``session_factory`` fixture)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.dialogue.state import DialogueState, InMemoryStateStore
from bot.inbox import Inbox
from bot.live import InProcessLiveEvents
from bot.locks import InProcessLock
from bot.messages import Message, Reply, Turn
from bot.ports import CallStatus, ContactKeyword, DeliveryStatus, Reachability
from bot.ratelimit import InProcessRateLimiter, RateLimited
from bot.settings import ROOT
from crm_store import residents
from crm_store.models import AuditLog, ChannelIdentity, Conversation, Interaction, Resident

PHONE = "+821055501234"


class FakeEngine:
    """The engine's surface the inbox uses on these paths: it counts turns and keeps states."""

    def __init__(self) -> None:
        self.states = InMemoryStateStore()
        self.turns = 0
        self.released: list[str] = []

    def handle(self, message: Message) -> Turn:
        self.turns += 1
        return Turn(message.conversation_key, "ko", "faq.test", 1.0, replies=[Reply(f"answer {self.turns}")])

    def restart(self, key: str, lang: str = "ko") -> None:
        state = self.states.load(key)
        state.reset()
        state.handed_off = False
        state.lang = lang  # type: ignore[assignment]
        self.states.save(state)

    def release(self, key: str, ask_rating: bool = True) -> list[Reply]:
        self.released.append(key)
        return [Reply("rate us")] if ask_rating else []


class RecordingLock(InProcessLock):
    """The in-process lock, remembering which conversations it was held for (and by which thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[str] = []

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        self.held.append(key)
        with super().hold(key):
            yield


@pytest.fixture
def inbox(session_factory: sessionmaker[Session], tmp_path: Any) -> Inbox:
    return Inbox(FakeEngine(), session_factory, InProcessLiveEvents(),  # type: ignore[arg-type]
                 spool_path=tmp_path / "spool.jsonl", lock=RecordingLock())


def _stop(sid: str, keyword: str = "stop") -> ContactKeyword:
    msg = Message(channel="twilio_sms", sender_id=PHONE, text=keyword.upper(), lang="en", message_id=sid)
    return ContactKeyword(msg, keyword, f"reply to {keyword}")  # type: ignore[arg-type]


def test_an_sms_stop_noted_through_the_port_opts_out_once_and_start_opts_back_in(inbox: Inbox) -> None:
    assert inbox.may_contact("twilio_sms", PHONE)
    anyio.run(inbox.note, _stop("SM1"))
    anyio.run(inbox.note, _stop("SM1"))  # Twilio retried the webhook: nothing more
    assert not inbox.may_contact("twilio_sms", PHONE)
    assert not inbox.may_contact("twilio_sms", "010-5550-1234")  # however the number is written
    with inbox.sessions() as s:
        rows = s.scalars(select(Interaction).order_by(Interaction.id)).all()
        assert [(r.direction, r.label, r.handled_by, r.text) for r in rows] == [
            ("in", "sms.stop", "system", "STOP"), ("out", "sms.stop", "system", "reply to stop")]
        assert s.scalars(select(AuditLog.action).where(AuditLog.action.like("sms.opt%"))).all() == ["sms.opt_out"]
    anyio.run(inbox.note, _stop("SM2", "start"))
    assert inbox.may_contact("twilio_sms", PHONE)


def test_a_delivery_status_is_stored_once_and_a_carrier_unsubscribe_opts_out(inbox: Inbox) -> None:
    sent = DeliveryStatus("twilio_sms", "SMout1", "delivered", reported_by="twilio", recipient=PHONE)
    anyio.run(inbox.note, sent)
    anyio.run(inbox.note, sent)
    with inbox.sessions() as s:
        rows = s.scalars(select(AuditLog).where(AuditLog.target.like("sms:SMout1%"))).all()
        assert [(r.who, r.action, r.target) for r in rows] == [("twilio", "sms.status.delivered", "sms:SMout1")]
    assert inbox.may_contact("twilio_sms", PHONE)
    anyio.run(inbox.note, DeliveryStatus("twilio_sms", "SMout2", "failed", reported_by="twilio", error="21610",
                                         recipient=PHONE, outcome="opted_out"))
    assert not inbox.may_contact("twilio_sms", PHONE)
    with inbox.sessions() as s:
        assert s.scalars(select(AuditLog.who).where(AuditLog.action == "sms.opt_out")).all() == ["twilio"]


def test_an_unreachable_number_and_a_blocked_chat_are_not_contacted_until_they_write(inbox: Inbox) -> None:
    with inbox.sessions.begin() as s:
        residents.identify(s, "twilio_sms", PHONE)
        residents.identify(s, "telegram", "4242")
    anyio.run(inbox.note, DeliveryStatus("twilio_sms", "SMout3", "undelivered", reported_by="twilio",
                                         error="30005", recipient=PHONE, outcome="unreachable"))
    assert not inbox.may_contact("twilio_sms", PHONE)
    anyio.run(inbox.note, Reachability("telegram", "4242", False))
    assert not inbox.may_contact("telegram", "4242")
    anyio.run(inbox.note, Reachability("telegram", "4242", True))
    assert inbox.may_contact("telegram", "4242")
    with inbox.sessions() as s:
        ident = s.scalars(select(ChannelIdentity).where(ChannelIdentity.channel == "telegram")).one()
        assert ident.reachable is True
        assert s.get(Resident, ident.resident_id).sms_opt_out is False  # an SMS opt-out is not a chat's


def test_a_call_status_is_kept_once_on_the_callers_timeline(inbox: Inbox) -> None:
    status = CallStatus("twilio_voice", PHONE, "CA1", "completed", "42")
    anyio.run(inbox.note, status)
    anyio.run(inbox.note, status)
    with inbox.sessions() as s:
        rows = s.scalars(select(Interaction)).all()
        assert [(r.text, r.label, r.handled_by) for r in rows] == [("[call-status] completed (42s)", "call.status",
                                                                    "system")]
        conv = s.scalars(select(Conversation)).one()
        assert conv.key == f"twilio_voice:{PHONE}"


def test_reset_and_release_run_under_the_conversations_lock(inbox: Inbox) -> None:
    key = f"twilio_voice:{PHONE}"
    engine: FakeEngine = inbox.engine  # type: ignore[assignment]
    engine.states.save(DialogueState(key=key, active_form="streetlight", handed_off=True, lang="en"))
    lock: RecordingLock = inbox.gate.lock  # type: ignore[attr-defined]
    anyio.run(inbox.reset, key)
    state = engine.states.load(key)
    assert not state.active_form and not state.handed_off and state.lang == "ko"
    assert anyio.run(inbox.release, key) == [Reply("rate us")]
    assert engine.released == [key]
    assert lock.held == [key, key]


def test_a_turn_waits_for_a_reset_of_its_conversation(inbox: Inbox) -> None:
    """The reset holds the same FIFO lock as :meth:`Inbox.receive`: a message arriving meanwhile waits."""
    key = f"twilio_voice:{PHONE}"
    engine: FakeEngine = inbox.engine  # type: ignore[assignment]
    entered, go = threading.Event(), threading.Event()
    restart = engine.restart

    def slow_restart(k: str, lang: str = "ko") -> None:
        entered.set()
        go.wait(5)
        restart(k, lang)

    engine.restart = slow_restart  # type: ignore[method-assign]
    resetting = threading.Thread(target=inbox.reset_sync, args=(key,))
    resetting.start()
    assert entered.wait(5)
    answered: list[Turn] = []
    turn = threading.Thread(target=lambda: answered.append(anyio.run(
        inbox.receive, Message(channel="twilio_voice", sender_id=PHONE, text="hi", message_id="CA2:1"))))
    turn.start()
    turn.join(0.3)
    assert not answered and engine.turns == 0  # queued behind the reset
    go.set()
    resetting.join(5)
    turn.join(5)
    assert [t.text for t in answered] == ["answer 1"]


def test_an_anonymous_caller_is_limited_de_duplicated_and_not_stored(inbox: Inbox) -> None:
    inbox.limiter = InProcessRateLimiter(per_sender_per_minute=3)  # a retried delivery counts too
    engine: FakeEngine = inbox.engine  # type: ignore[assignment]
    anon = "anonymous:CA9"

    def say(n: int, text: str) -> Turn:
        return anyio.run(inbox.receive, Message(channel="twilio_voice", sender_id=anon, text=text,
                                                message_id=f"CA9:{n}"))

    first = say(1, "여권")
    again = say(1, "쓰레기")  # the same delivery id: answered as the first time, the engine not asked
    assert (again.label, again.text) == ("duplicate", first.text) and engine.turns == 1
    say(2, "가로등")
    with pytest.raises(RateLimited):
        say(3, "도로")
    assert engine.turns == 2
    # Each admitted delivery took the conversation's lock (the retry too: its answer is read under it).
    assert inbox.gate.lock.held.count(f"twilio_voice:{anon}") == 3  # type: ignore[attr-defined]
    with inbox.sessions() as s:
        assert s.scalars(select(Interaction)).all() == []
        assert s.scalars(select(ChannelIdentity)).all() == []


def test_the_layer_contracts_hold() -> None:
    """``lint-imports`` (pyproject.toml): the one-way flow of ARCHITECTURE.md, also run by ``make test``."""
    pytest.importorskip("importlinter")
    exe = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
