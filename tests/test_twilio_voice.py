"""Twilio voice channel end to end: whole phone calls against the real app under uvicorn,
every webhook signed as Twilio signs it, following the action URLs of the TwiML the app
returns, with the real NLU model and a real SQLite store. Business hours come from the
engine's clock, which each test sets."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from channels.twilio_voice import speakable
from crm_store.models import ChannelIdentity, Handoff, Interaction, Resident, ServiceRequest
from tests.twilio_helpers import ACCOUNT_SID, CLOSED, FROM_NUMBER, OPEN, TwilioApp, sid, xml_root

TICKET = re.compile(r"(?<!\d)20\d{2}-\d{6}(?!\d)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwilioApp]:
    app = TwilioApp(tmp_path_factory.mktemp("twilio-voice"))
    yield app
    app.close()


@pytest.fixture(autouse=True)
def business_hours(server: TwilioApp) -> Iterator[None]:
    server.now = OPEN
    yield
    server.now = OPEN


class Call:
    """One phone call: posts what Twilio would post and follows the TwiML's action URLs."""

    def __init__(self, server: TwilioApp, caller: str) -> None:
        self.server, self.caller, self.sid = server, caller, sid("CA")
        self.root: ET.Element | None = None

    def params(self, **extra: str) -> dict[str, str]:
        return {"CallSid": self.sid, "From": self.caller, "To": FROM_NUMBER, "AccountSid": ACCOUNT_SID,
                "Direction": "inbound", **extra}

    def start(self) -> ET.Element:
        self.root = xml_root(self.server.post("/webhooks/twilio/voice", self.params(CallStatus="ringing")))
        return self.root

    def path(self, url: str) -> str:
        assert url.startswith(self.server.url), url
        return url[len(self.server.url):]

    def gather(self) -> ET.Element:
        assert self.root is not None
        node = self.root.find("Gather")
        assert node is not None, ET.tostring(self.root, encoding="unicode")
        return node

    def respond(self, **extra: str) -> ET.Element:
        """Answer the current <Gather> (SpeechResult=... or Digits=...)."""
        self.last_raw = self.server.post(self.path(self.gather().get("action", "")), self.params(**extra))
        self.root = xml_root(self.last_raw)
        return self.root

    def say(self, speech: str) -> ET.Element:
        return self.respond(SpeechResult=speech, Confidence="0.91")

    def press(self, digits: str) -> ET.Element:
        return self.respond(Digits=digits)

    def silence(self) -> ET.Element:
        return self.respond()

    def spoken(self) -> str:
        assert self.root is not None
        return " ".join(s.text or "" for s in self.root.iter("Say"))


def count(server: TwilioApp, model: Any, *where: Any) -> int:
    with server.sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_call_start_greets_with_a_korean_speech_and_keypad_gather(server: TwilioApp) -> None:
    call = Call(server, "+821022220001")
    root = call.start()
    gather = call.gather()
    assert gather.get("input") == "speech dtmf"
    assert gather.get("language") == "ko-KR"
    assert gather.get("speechTimeout") == "auto"
    assert gather.get("action", "").startswith(server.url + "/webhooks/twilio/voice/gather")
    assert "가로등 고장 신고" in gather.get("hints", "")
    says = list(gather.iter("Say"))
    assert says[0].get("voice") == "Polly.Seoyeon" and says[0].get("language") == "ko-KR"
    assert "1번" in says[0].text and "0번" in says[0].text
    assert any(s.get("voice") == "Polly.Joanna" and "press 9" in (s.text or "") for s in says)
    assert root.find("Hangup") is None


def test_unsigned_and_forged_calls_are_refused(server: TwilioApp) -> None:
    params = {"CallSid": sid("CA"), "From": "+821022220002", "To": FROM_NUMBER}
    assert server.post("/webhooks/twilio/voice", params, sign=False).status_code == 403
    assert server.post("/webhooks/twilio/voice", params, token="wrong").status_code == 403
    path = "/webhooks/twilio/voice/gather?n=1&lang=ko"
    forged = server.post(path, {**params, "SpeechResult": "상담원 연결해 주세요"}, token="wrong")
    assert forged.status_code == 403
    # The signature covers the query string: a signed answer replayed to another step is refused.
    good = server.signature(path, {**params, "SpeechResult": "예"})
    replayed = server.post(path.replace("n=1", "n=2"), {**params, "SpeechResult": "예"}, signature=good)
    assert replayed.status_code == 403
    assert server.post("/webhooks/twilio/voice", {"To": FROM_NUMBER}).status_code == 400


def test_spoken_faq_is_answered_in_the_next_gather(server: TwilioApp) -> None:
    call = Call(server, "+821022220003")
    call.start()
    root = call.say("쓰레기 언제 버려요")
    gather = call.gather()
    kb = server.engine.kb  # the answer is the article's spoken version (no source line on a call)
    answer = speakable(kb.text(kb.for_faq("faq.waste_schedule"), "spoken", "ko"))
    assert any(s.text == answer for s in gather.iter("Say")), ET.tostring(root, encoding="unicode")
    assert gather.get("language") == "ko-KR"
    assert "n=2" in gather.get("action", "")  # the next step of this call
    with server.sessions() as s:
        row = s.scalars(select(Interaction).where(Interaction.message_id == f"{call.sid}:1")).one()
        assert row.text == "쓰레기 언제 버려요" and row.label == "faq.waste_schedule"


def test_streetlight_reported_by_voice_gets_a_ticket(server: TwilioApp) -> None:
    call = Call(server, "+821022220004")
    call.start()
    call.say("가로등이 나갔어요")
    assert "위치" in call.spoken()
    call.say("한빛동 중앙로 30 앞이에요")
    assert "1번 예" in call.spoken()
    assert call.gather().get("numDigits") == "1"
    call.press("1")  # consent: yes
    assert "중앙로 30" in call.spoken()
    call.press("1")  # confirm
    ticket = TICKET.search(call.spoken())
    assert ticket, call.spoken()
    with server.sessions() as s:
        row = s.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == ticket.group(0))).one()
        assert row.service_code == "roads.streetlight" and row.channel == "twilio_voice" and row.consent


def test_agent_request_in_business_hours_dials_the_department(server: TwilioApp) -> None:
    call = Call(server, "+821022220005")
    call.start()
    call.say("쓰레기 언제 버려요")  # the waste department is now the one in question
    root = call.say("상담원 연결해 주세요")
    dial = root.find("Dial")
    assert dial is not None, ET.tostring(root, encoding="unicode")
    assert dial.text == server.settings.config()["departments"]["waste"]["phone"]
    assert dial.get("action", "").startswith(server.url + "/webhooks/twilio/voice/dial")
    assert "상담원" in call.spoken()
    with server.sessions() as s:
        resident_id = s.scalars(select(ChannelIdentity.resident_id).where(
            ChannelIdentity.channel == "twilio_voice", ChannelIdentity.external_id == call.caller)).one()
        handoff = s.scalars(select(Handoff).where(Handoff.resident_id == resident_id)).one()
        assert handoff.department == "waste" and handoff.status == "queued"
    # Nobody picked up: the caller can leave a message.
    after = xml_root(server.post(call.path(dial.get("action", "")), call.params(DialCallStatus="no-answer")))
    assert after.find("Record") is not None


def test_keypad_zero_after_hours_records_a_voicemail_for_a_call_back(server: TwilioApp) -> None:
    server.now = CLOSED
    call = Call(server, "+821022220006")
    call.start()
    root = call.press("0")
    assert root.find("Dial") is None and root.find("Record") is None
    assert "010-2222-0006" in call.spoken()  # a call-back on the caller's own number is offered, not promised
    root = call.say("네")
    assert "010-2222-0006" in call.spoken()  # booked, and read back
    record = root.find("Record")  # then a message for the department, as a voicemail
    assert record is not None, ET.tostring(root, encoding="unicode")
    assert record.get("maxLength") == "120"
    assert record.get("action", "").startswith(server.url + "/webhooks/twilio/voice/recording")
    url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{sid('RE')}"
    done = xml_root(server.post(call.path(record.get("action", "")),
                                call.params(RecordingUrl=url, RecordingSid=sid("RE"), RecordingDuration="14")))
    assert done.find("Hangup") is not None
    assert server.engine.knowledge.render("utter_callback_message_taken", "ko") in \
        " ".join(s.text or "" for s in done.iter("Say"))  # the voicemail went with the call-back
    with server.sessions() as s:
        vm = s.scalars(select(Interaction).where(Interaction.message_id == f"{call.sid}:recording")).one()
        assert vm.text == f"[voicemail] {url}" and vm.direction == "in"
        handoff = s.scalars(select(Handoff).where(Handoff.resident_id == vm.resident_id)).one()
        assert handoff.reason.startswith("callback:")


def test_spoken_agent_request_after_hours_records(server: TwilioApp) -> None:
    server.now = CLOSED
    call = Call(server, "+821022220007")
    call.start()
    root = call.say("상담원 연결해 주세요")
    assert root.find("Dial") is None and root.find("Gather") is not None
    root = call.say("네 이 번호로 해 주세요")
    assert root.find("Record") is not None and root.find("Dial") is None


def test_retried_gather_is_recorded_once_and_answered_the_same(server: TwilioApp) -> None:
    call = Call(server, "+821022220008")
    call.start()
    action = call.path(call.gather().get("action", ""))
    params = call.params(SpeechResult="여권 발급 어떻게 해요", Confidence="0.88")
    first = server.post(action, params)
    before = count(server, Interaction)
    again = server.post(action, params)
    assert again.text == first.text
    assert count(server, Interaction) == before
    assert count(server, Interaction, Interaction.message_id == f"{call.sid}:1") == 1


def test_english_callers_get_english_recognition_and_voice(server: TwilioApp) -> None:
    call = Call(server, "+14155550100")
    call.start()
    call.press("9")
    gather = call.gather()
    assert gather.get("language") == "en-US"
    says = list(gather.iter("Say"))
    assert says and all(s.get("voice") == "Polly.Joanna" and s.get("language") == "en-US" for s in says)
    call.say("When is garbage collected?")
    assert call.gather().get("language") == "en-US"
    kb = server.engine.kb
    assert kb.text(kb.for_faq("faq.waste_schedule"), "spoken", "en")[:20] in call.spoken()


def test_no_input_twice_transfers_in_business_hours_and_says_goodbye_after(server: TwilioApp) -> None:
    call = Call(server, "+821022220009")
    call.start()
    call.silence()
    assert "다시" in call.spoken() and call.gather() is not None
    root = call.silence()
    assert root.find("Dial") is not None
    assert root.find("Dial").text == server.settings.config()["departments"]["general"]["phone"]  # type: ignore[union-attr]

    server.now = CLOSED
    late = Call(server, "+821022220010")
    late.start()
    late.silence()
    root = late.silence()
    assert root.find("Dial") is None and root.find("Hangup") is not None
    assert "감사합니다" in late.spoken()


def test_goodbye_hangs_up(server: TwilioApp) -> None:
    call = Call(server, "+821022220011")
    call.start()
    root = call.say("감사합니다 안녕히 계세요")
    if root.find("Gather") is not None:  # taken as thanks: say goodbye once more
        root = call.say("이만 끊을게요 안녕히 계세요")
    assert root.find("Hangup") is not None, ET.tostring(root, encoding="unicode")


def test_call_status_is_stored_on_the_callers_conversation(server: TwilioApp) -> None:
    call = Call(server, "+821022220012")
    call.start()
    params = call.params(CallStatus="completed", CallDuration="42")
    assert server.post("/webhooks/twilio/voice/status", params, sign=False).status_code == 403
    assert server.post("/webhooks/twilio/voice/status", params).status_code == 204
    assert server.post("/webhooks/twilio/voice/status", params).status_code == 204
    with server.sessions() as s:
        rows = s.scalars(select(Interaction).where(Interaction.label == "call.status",
                                                   Interaction.message_id == f"{call.sid}:status:completed")).all()
        assert [(r.text, r.handled_by) for r in rows] == [("[call-status] completed (42s)", "system")]


def test_sms_and_voice_from_one_number_are_one_resident(server: TwilioApp) -> None:
    number = "+821022220013"
    sms = {"From": number, "To": FROM_NUMBER, "Body": "여권 발급 어떻게 해요", "MessageSid": sid("SM")}
    xml_root(server.post("/webhooks/twilio/sms", sms))
    call = Call(server, number)
    call.start()
    call.say("쓰레기 언제 버려요")
    with server.sessions() as s:
        idents = s.scalars(select(ChannelIdentity).where(ChannelIdentity.external_id == number)).all()
        assert {i.channel for i in idents} >= {"twilio_sms", "twilio_voice"}
        resident_ids = {i.resident_id for i in idents}
        assert len(resident_ids) == 1
        (resident_id,) = resident_ids
        assert s.get(Resident, resident_id).merged_into_id is None
        channels = set(s.scalars(select(Interaction.channel).where(Interaction.resident_id == resident_id)))
        assert channels == {"twilio_sms", "twilio_voice"}


def test_an_anonymous_caller_is_de_duplicated_by_the_inbox_and_nothing_is_stored(server: TwilioApp) -> None:
    """A withheld number used to go straight to the engine (no lock, no de-duplication, no limit):
    now it takes the inbox's path; the same gather delivered again (here with other words, so the
    adapter's own answer cache does not catch it) gets the first answer, and nothing is stored."""
    call = Call(server, "anonymous")
    call.start()
    action = call.path(call.gather().get("action", ""))
    first = xml_root(server.post(action, call.params(SpeechResult="여권 발급 어떻게 해요", Confidence="0.9")))
    again = xml_root(server.post(action, call.params(SpeechResult="쓰레기 언제 버려요", Confidence="0.9")))
    spoken = [" ".join(s.text or "" for s in r.iter("Say")) for r in (first, again)]
    assert spoken[0] and spoken[1] == spoken[0]
    with server.sessions() as s:
        assert count(server, Interaction, Interaction.message_id.like(f"{call.sid}:%")) == 0
        assert s.scalars(select(ChannelIdentity).where(ChannelIdentity.external_id.like("anonymous:%"))).all() == []


def test_an_anonymous_caller_is_rate_limited_like_everyone(server: TwilioApp) -> None:
    from bot.ratelimit import InProcessRateLimiter

    inbox = server.app.state.inbox
    saved, inbox.limiter = inbox.limiter, InProcessRateLimiter(per_sender_per_minute=2)
    try:
        call = Call(server, "anonymous")
        call.start()
        call.say("여권 발급 어떻게 해요")
        assert "일시적인 문제" not in call.spoken()
        call.say("쓰레기 언제 버려요")
        call.say("가로등이 고장 났어요")  # the third within the minute: over the caller's limit
        assert "일시적인 문제" in call.spoken()
    finally:
        inbox.limiter = saved


def test_a_new_call_resets_the_dialogue_under_the_conversations_lock(server: TwilioApp) -> None:
    number = "+821022220014"
    call = Call(server, number)
    call.start()
    call.say("가로등이 고장 났어요")  # a form left half-filled
    key = f"twilio_voice:{number}"
    assert server.engine.states.load(key).active_form
    inbox = server.app.state.inbox
    held: list[str] = []
    hold = inbox.gate.hold

    def recording(k: str) -> object:
        held.append(k)
        return hold(k)

    inbox.gate.hold = recording
    try:
        Call(server, number).start()
    finally:
        del inbox.gate.hold
    assert held == [key]
    state = server.engine.states.load(key)
    assert not state.active_form and state.lang == "ko"
