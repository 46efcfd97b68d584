"""Proactive reminders (``pcrm reminders run``): who gets one, on which channel, in which language,
and never twice. SMS goes through the real Twilio adapter to a fake Twilio API; Telegram is a local
fake channel that records what it was asked to send."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot import cli, reminders
from bot.app import create_app
from bot.messages import Message, Reply
from bot.settings import ROOT, Settings
from crm_store.db import make_session_factory, upgrade
from crm_store.models import AuditLog, ChannelIdentity, Conversation, Interaction, Resident
from crm_store.residents import identify
from crm_store.timeutil import as_utc
from tests.twilio_helpers import ACCOUNT_SID, FROM_NUMBER, TOKEN, FakeTwilioApi

SEOUL = ZoneInfo("Asia/Seoul")
TODAY = date(2026, 7, 25)  # property tax is due 07-31: inside the 7-day window
ASKED = as_utc(datetime(2026, 7, 1, 10, 0, tzinfo=SEOUL))


@dataclass
class FakeChannel:
    name: str = "telegram"
    sent: list[tuple[str, list[str]]] = field(default_factory=list)

    async def send(self, recipient_id: str, replies: list[Reply]) -> bool:
        self.sent.append((recipient_id, [r.text for r in replies]))
        return True


def seed(sessions: Any) -> dict[str, int]:
    ids: dict[str, int] = {}
    with sessions.begin() as s:
        def resident(name: str, channel: str, external: str, consent: bool = True, lang: str = "ko",
                     label: str | None = "faq.property_tax", asked: datetime = ASKED,
                     opt_out: bool = False) -> Resident:
            r = identify(s, channel, external)
            r.contact_consent, r.preferred_lang, r.sms_opt_out = consent, lang, opt_out
            for ident in s.scalars(select(ChannelIdentity).where(ChannelIdentity.resident_id == r.id)):
                ident.last_seen_at = asked  # last seen when they asked
            conv = Conversation(key=f"{channel}:{external}", channel=channel, resident_id=r.id)
            s.add(conv)
            s.flush()
            if label:
                s.add(Interaction(conversation_id=conv.id, resident_id=r.id, channel=channel, direction="in",
                                  text="재산세 언제까지 내요?", label=label, confidence=0.9, entities=[],
                                  created_at=asked))
            ids[name] = r.id
            return r

        resident("sms_ko", "twilio_sms", "+821011112222")
        b = resident("telegram_en", "twilio_sms", "+821033334444", lang="en")
        tg = ChannelIdentity(channel="telegram", external_id="777", resident_id=b.id,
                             last_seen_at=ASKED + timedelta(days=1))
        s.add(tg)
        resident("no_consent", "twilio_sms", "+821055556666", consent=False)
        resident("opted_out", "twilio_sms", "+821077778888", opt_out=True)
        resident("passport", "twilio_sms", "+821099990000", label="faq.passport")
        resident("long_ago", "twilio_sms", "+821012121212", asked=ASKED - timedelta(days=400))
        resident("vehicle", "twilio_sms", "+821034343434", label="faq.vehicle_tax")
        old = resident("merged_old", "twilio_sms", "+821056565656", consent=False)
        new = resident("merged_new", "telegram", "888", label=None)
        old.merged_into_id = new.id
    return ids


@pytest.fixture
def setup(db_url: str) -> Iterator[tuple[Any, FakeTwilioApi, FakeChannel, dict[str, int]]]:
    api = FakeTwilioApi().start()
    app = create_app(Settings(database_url=db_url, redis_url=None, pcrm_model_dir=ROOT / "var" / "model",
                              twilio_account_sid=ACCOUNT_SID, twilio_auth_token=TOKEN,
                              twilio_from_number=FROM_NUMBER, twilio_api_base_url=api.url))
    fake = FakeChannel()
    app.state.channels["telegram"] = fake
    ids = seed(app.state.sessions)
    try:
        yield app, api, fake, ids
    finally:
        api.stop()
        app.state.sessions.kw["bind"].dispose()


def test_due_dates_window() -> None:
    config = {"deadlines": {"faq.property_tax": ["07-31", "09-30"], "faq.vehicle_tax": ["12-31"]},
              "remind_days_before": 7}
    assert reminders.due_dates(config, date(2026, 7, 24)) == [("faq.property_tax", date(2026, 7, 31))]
    assert reminders.due_dates(config, date(2026, 7, 23)) == []
    assert reminders.due_dates(config, date(2026, 7, 31)) == [("faq.property_tax", date(2026, 7, 31))]
    assert reminders.due_dates(config, date(2026, 8, 1)) == []
    assert reminders.due_dates(config, date(2026, 12, 28)) == [("faq.vehicle_tax", date(2026, 12, 31))]


def test_reminders_once_to_consenting_residents_on_their_channel(setup: Any) -> None:
    app, api, fake, ids = setup
    sessions = app.state.sessions
    knowledge = app.state.engine.knowledge

    dry = asyncio.run(reminders.run(app, today=TODAY, dry_run=True))
    assert {(r.resident_id, r.status, r.channel) for r in dry} == {
        (ids["sms_ko"], "dry-run", "twilio_sms"), (ids["telegram_en"], "dry-run", "telegram"),
        (ids["opted_out"], "dry-run", None), (ids["merged_new"], "dry-run", "telegram")}
    assert api.requests == [] and fake.sent == []

    first = asyncio.run(reminders.run(app, today=TODAY))
    status = {r.resident_id: (r.status, r.channel) for r in first}
    assert status == {ids["sms_ko"]: ("sent", "twilio_sms"), ids["telegram_en"]: ("sent", "telegram"),
                      ids["merged_new"]: ("sent", "telegram"), ids["opted_out"]: ("undelivered", None)}
    ko = knowledge.render("utter_reminder_property_tax", "ko", due="7월 31일")
    en = knowledge.render("utter_reminder_property_tax", "en", due="July 31")
    assert [(r["form"]["To"], r["form"]["Body"]) for r in api.requests] == [("+821011112222", ko)]
    assert "7월 31일" in ko and "July 31" in en
    assert sorted(fake.sent) == [("777", [en]), ("888", [knowledge.render(
        "utter_reminder_property_tax", "ko", due="7월 31일")])]

    second = asyncio.run(reminders.run(app, today=TODAY + timedelta(days=1)))
    assert [(r.resident_id, r.status) for r in second] == [(ids["opted_out"], "undelivered")]
    assert len(api.requests) == 1 and len(fake.sent) == 2
    with sessions() as s:
        targets = sorted(s.scalars(select(AuditLog.target).where(AuditLog.action == "reminder.sent")))
        names = ("sms_ko", "telegram_en", "merged_new")
        assert targets == sorted(f"{ids[n]}:faq.property_tax:2026-07-31" for n in names)
        out = s.scalars(select(Interaction).where(Interaction.handled_by == "reminder")).all()
        # stored in the conversation of the channel used, where one exists (not for telegram:777)
        assert sorted((i.channel, i.resident_id, i.text) for i in out) == [
            ("telegram", ids["merged_new"], ko), ("twilio_sms", ids["sms_ko"], ko)]


def test_cli_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'pcrm.db'}"
    upgrade(url)
    sessions = make_session_factory(url)
    ids = seed(sessions)
    sessions.kw["bind"].dispose()
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli.main(["reminders", "run", "--today", "2026-07-25", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"dry-run      resident {ids['sms_ko']}  faq.property_tax due 2026-07-31  via twilio_sms" in out
    assert "4 reminder(s) due, 0 sent (dry run: nothing sent)" in out
    assert cli.main(["reminders", "run", "--today", "2026-08-20", "--dry-run"]) == 0
    assert "0 reminder(s) due" in capsys.readouterr().out


def test_consent_is_given_in_the_chat_and_withdrawn_with_수신거부(setup: Any) -> None:
    """Nothing else sets ``contact_consent``: the offer after an answer about a topic with due dates,
    answered 예, is what lets ``pcrm reminders`` write to a resident; "수신거부" on any channel
    (here the web chat the reminder arrives on) takes it back."""
    app, _api, _fake, _ids = setup
    sessions, knowledge = app.state.sessions, app.state.engine.knowledge

    def say(text: str) -> list[str]:
        return [r.text for r in asyncio.run(app.state.inbox.receive(Message("webchat", "consent-visit", text))).replies]

    def consent_and_planned() -> tuple[bool, bool]:
        with sessions() as s:
            rid = s.scalars(select(ChannelIdentity.resident_id).where(
                ChannelIdentity.channel == "webchat", ChannelIdentity.external_id == "consent-visit")).one()
            consent = s.get_one(Resident, rid).contact_consent
        today = date.today()
        day = next(today + timedelta(days=n) for n in range(366)
                   if any(t == "faq.property_tax" for t, _ in reminders.due_dates(knowledge.config,
                                                                                  today + timedelta(days=n))))
        return consent, rid in {r.resident_id for r in reminders.plan(sessions, knowledge, day, SEOUL)}

    answer = say("재산세 언제까지 내요?")
    assert answer[-1] == knowledge.render("utter_reminder_offer", "ko")
    assert consent_and_planned() == (False, False)
    assert say("예") == [knowledge.render("utter_reminder_on", "ko")]
    assert consent_and_planned() == (True, True)
    assert knowledge.render("utter_reminder_offer", "ko") not in say("자동차세는 언제 내요?")  # asked once
    assert say("수신거부") == [knowledge.render("utter_reminder_off", "ko")]
    assert consent_and_planned() == (False, False)
    with sessions() as s:
        assert s.scalars(select(Interaction.label).where(Interaction.text == "수신거부")).one() == "sys.reminders_off"
        assert list(s.scalars(select(AuditLog.action).where(AuditLog.action.like("consent.%"))
                              .order_by(AuditLog.id))) == ["consent.given", "consent.withdrawn"]
