"""Proactive service: remind residents of a due date they asked about (``pcrm reminders run``).

Who gets a reminder of topic *T* due on *D* (``deadlines`` in ``config.yml``, ``MM-DD`` in
municipality time) on day *today*:

* *today* is within ``remind_days_before`` days before *D* (``0 ≤ D - today ≤ remind_days_before``);
* the resident asked about *T*: an inbound message labelled *T* in the 365 days before *D*
  (messages of merged residents count for the resident they were merged into);
* the resident consented (``contact_consent``: given by answering 예/yes to the bot's offer after an
  answer about a topic with due dates, withdrawn with 수신거부/알림 그만/STOP on any channel; see
  ``offer_reminder`` in bot/dialogue/policy.py), is not erased and not merged away;
* no reminder for (resident, *T*, *D*) was sent before: every sent reminder is an ``AuditLog`` row
  ``reminder.sent`` with target ``<resident>:<topic>:<due>``; the row is written *before* sending
  (and removed again if no channel took the message), so a crash never leads to a second message.
  On PostgreSQL a run holds an advisory lock, so two runs at once cannot both send.

Channel: the resident's channel identities, most recently seen first, that are reachable and can
push: Telegram, web chat, and SMS (``twilio_sms``; SMS, voice and ``phone`` identities are texted)
unless the resident opted out of SMS. The first adapter whose ``send`` succeeds delivers it; the
message is stored as an outbound interaction (``handled_by="reminder"``) of that conversation.
Text: ``utter_reminder_<topic without "faq.">`` of ``nlu_data/responses.yml`` in the resident's
language, ``{due}`` filled.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from bot.masking import mask_pii
from bot.messages import Reply
from bot.municipality import Municipality
from bot.phones import PHONE_CHANNELS, PHONE_IDENTITY
from crm_store.models import AuditLog, ChannelIdentity, Conversation, Interaction, Resident
from crm_store.timeutil import as_utc

log = logging.getLogger("pcrm.reminders")

ACTION = "reminder.sent"
WHO = "reminders"
ASKED_WITHIN = timedelta(days=365)
#: Identity channel -> the adapter that can push to it.
_ADAPTER = {"telegram": "telegram", "webchat": "webchat",
            **{c: "twilio_sms" for c in (*PHONE_CHANNELS, PHONE_IDENTITY)}}
_LOCK_KEY = 0x7063726D_52454D  # "pcrm" "REM"


@dataclass
class Reminder:
    resident_id: int
    topic: str
    due: date
    lang: str
    text: str
    channel: str | None = None
    status: str = "planned"  # planned | sent | undelivered | dry-run

    @property
    def target(self) -> str:
        return f"{self.resident_id}:{self.topic}:{self.due.isoformat()}"


def due_dates(config: Municipality | Mapping[str, Any], today: date) -> list[tuple[str, date]]:
    """(topic, due date) pairs whose reminder window contains ``today``."""
    m = Municipality.of(config)
    ahead = m.remind_days_before
    out = []
    for topic, days in m.deadlines.items():
        for mmdd in days:
            month, day = (int(x) for x in mmdd.split("-"))
            for year in (today.year, today.year + 1):
                try:
                    due = date(year, month, day)
                except ValueError:  # 02-29 in a common year
                    continue
                if 0 <= (due - today).days <= ahead:
                    out.append((str(topic), due))
    return sorted(out, key=lambda td: (td[1], td[0]))


def format_due(due: date, lang: str) -> str:
    return f"{calendar.month_name[due.month]} {due.day}" if lang == "en" else f"{due.month}월 {due.day}일"


def response_key(topic: str) -> str:
    return "utter_reminder_" + topic.split(".", 1)[-1]


def plan(sessions: sessionmaker[Session], knowledge: Any, today: date, tz: ZoneInfo) -> list[Reminder]:
    """Reminders due today that were not sent yet (nothing is written)."""
    out: list[Reminder] = []
    with sessions() as s:
        merged = dict(s.execute(select(Resident.id, Resident.merged_into_id)
                                .where(Resident.merged_into_id.is_not(None))).all())
        for topic, due in due_dates(knowledge.municipality, today):
            due_end = as_utc(datetime.combine(due + timedelta(days=1), time.min, tz))
            asked = set(s.scalars(select(Interaction.resident_id).where(
                Interaction.direction == "in", Interaction.label == topic, Interaction.resident_id.is_not(None),
                Interaction.created_at >= due_end - ASKED_WITHIN, Interaction.created_at < due_end).distinct()))
            finals = set()
            for rid in asked:
                hops = 0
                while rid in merged and hops < 20:
                    rid, hops = merged[rid], hops + 1
                finals.add(rid)
            if not finals:
                continue
            done = set(s.scalars(select(AuditLog.target).where(
                AuditLog.action == ACTION, AuditLog.target.in_([f"{r}:{topic}:{due.isoformat()}" for r in finals]))))
            for res in s.scalars(select(Resident).where(Resident.id.in_(sorted(finals))).order_by(Resident.id)):
                if not res.contact_consent or res.deleted_at is not None or res.merged_into_id is not None:
                    continue
                lang = res.preferred_lang if res.preferred_lang in ("ko", "en") else "ko"
                r = Reminder(res.id, topic, due, lang,
                             knowledge.render(response_key(topic), lang, due=format_due(due, lang)))
                if r.target not in done:
                    out.append(r)
    return out


def routes(session: Session, resident_id: int) -> list[tuple[str, str]]:
    """(adapter, recipient) to try for a resident, most recently seen identity first."""
    res = session.get_one(Resident, resident_id)
    out: list[tuple[str, str]] = []
    for ident in session.scalars(select(ChannelIdentity).where(ChannelIdentity.resident_id == resident_id)
                                 .order_by(ChannelIdentity.last_seen_at.desc(), ChannelIdentity.id.desc())):
        adapter = _ADAPTER.get(ident.channel)
        if adapter is None or not ident.reachable or (adapter == "twilio_sms" and res.sms_opt_out):
            continue
        if (adapter, ident.external_id) not in out:
            out.append((adapter, ident.external_id))
    return out


def _claim(sessions: sessionmaker[Session], r: Reminder) -> bool:
    with sessions.begin() as s:
        if s.scalars(select(AuditLog.id).where(AuditLog.action == ACTION, AuditLog.target == r.target)).first():
            return False
        s.add(AuditLog(who=WHO, action=ACTION, target=r.target))
    return True


def _release(sessions: sessionmaker[Session], r: Reminder) -> None:
    with sessions.begin() as s:
        for row in s.scalars(select(AuditLog).where(AuditLog.action == ACTION, AuditLog.target == r.target)):
            s.delete(row)


def _record(sessions: sessionmaker[Session], adapter: str, recipient: str, r: Reminder) -> None:
    with sessions.begin() as s:
        conv = s.scalars(select(Conversation).where(Conversation.key == f"{adapter}:{recipient}")).one_or_none()
        if conv is not None:
            s.add(Interaction(conversation_id=conv.id, resident_id=r.resident_id, channel=conv.channel,
                              direction="out", text=r.text, lang=r.lang, entities=[], handled_by="reminder"))


async def run(app: Any, today: date | None = None, dry_run: bool = False) -> list[Reminder]:
    """Send today's reminders through ``app.state.channels`` (an app from :func:`bot.app.create_app`)."""
    sessions: sessionmaker[Session] = app.state.sessions
    knowledge = app.state.engine.knowledge
    tz = knowledge.municipality.municipality.tz
    today = today or datetime.now(tz).date()
    bind = sessions.kw["bind"]
    lock = None
    if bind.dialect.name == "postgresql" and not dry_run:
        lock = bind.connect()
        if not lock.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}).scalar():
            lock.close()
            raise RuntimeError("another `pcrm reminders run` is in progress")
    try:
        planned = plan(sessions, knowledge, today, tz)
        for r in planned:
            with sessions() as s:
                tries = routes(s, r.resident_id)
            if dry_run:
                r.status, r.channel = "dry-run", tries[0][0] if tries else None
                continue
            if not tries or not _claim(sessions, r):
                r.status = "undelivered" if not tries else "sent-before"
                continue
            for adapter_name, recipient in tries:
                adapter = app.state.channels.get(adapter_name)
                if adapter is None:
                    continue
                try:
                    ok = bool(await adapter.send(recipient, [Reply(r.text)]))
                except Exception:  # noqa: BLE001 - try the next channel
                    log.exception("reminder via %s to %s failed", adapter_name, mask_pii(recipient))
                    ok = False
                if ok:
                    r.status, r.channel = "sent", adapter_name
                    _record(sessions, adapter_name, recipient, r)
                    break
            if r.status != "sent":
                r.status = "undelivered"
                _release(sessions, r)
        return planned
    finally:
        if lock is not None:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            lock.close()
