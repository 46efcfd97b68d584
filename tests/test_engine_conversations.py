"""Whole multi-turn conversations through ``Engine.handle``, in Korean and English."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from bot.engine import Engine
from bot.messages import Attachment, Message
from bot.service_requests import InMemoryRequestStore, RequestRecord

OPEN = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)     # Thursday 11:00 KST
CLOSED = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)  # Thursday 23:00 KST
TICKET = re.compile(r"\d{4}-\d{6}")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def shared_nlu():
    return Engine().nlu  # trains once (cached in var/model by data hash)


@pytest.fixture
def clock() -> Clock:
    return Clock(OPEN)


@pytest.fixture
def engine(shared_nlu, clock) -> Engine:
    return Engine(nlu=shared_nlu, clock=clock, requests=InMemoryRequestStore())


class Chat:
    """One resident talking to the engine."""

    def __init__(self, engine: Engine, sender: str = "r1", channel: str = "rest") -> None:
        self.engine, self.sender, self.channel = engine, sender, channel

    def say(self, text: str, **kw):
        return self.engine.handle(Message(self.channel, self.sender, text, **kw))


def test_faq_answer_in_korean_is_specific(engine):
    turn = Chat(engine).say("쓰레기 언제 버려요?")
    assert turn.label == "faq.waste_schedule"
    assert turn.routing.action == "answer"
    assert "배출" in turn.text


def test_faq_answer_in_english_when_resident_writes_english(engine):
    turn = Chat(engine).say("How much does a passport cost?")
    assert turn.label == "faq.passport"
    assert turn.lang == "en"
    assert not re.search("[가-힣]{4,}", turn.replies[0].text.split("\n")[0])


def test_pothole_form_with_correction_opens_ticket(engine):
    chat = Chat(engine)
    t = chat.say("도로에 구멍이 크게 났어요")
    assert t.routing.action == "collect" and t.routing.service_code == "roads.pothole"
    t = chat.say("한빛동 중앙로 12 앞이요")
    assert engine.states.load("rest:r1").slots["location"].startswith("한빛동")
    t = chat.say("예")  # consent
    assert engine.states.load("rest:r1").awaiting_confirm
    t = chat.say("아니요 주소는 한빛동 중앙로 14")
    assert engine.states.load("rest:r1").slots["location"] == "한빛동 중앙로 14"
    t = chat.say("예")
    assert t.routing.action == "request"
    ticket = TICKET.search(t.text)
    assert ticket and t.event("request_opened").data["department"] == "roads"
    assert engine.requests.get(ticket.group(0)).address_string == "한빛동 중앙로 14"


def test_form_answers_are_recorded_under_the_form_not_the_classifiers_guess(engine):
    """"예" alone scores as faq.vaccination (예방접종): as the answer to a form question the turn is
    the pothole report's, at full confidence, with the classifier's guess kept in the intent event."""
    assert engine.parse("예", "ko").label != "roads.pothole"
    chat = Chat(engine)
    chat.say("도로에 구멍이 크게 났어요")
    answers = [chat.say(text) for text in ("한빛동 중앙로 12 앞이요", "예", "예")]
    assert answers[-1].routing.action == "request"
    for t in answers:
        assert (t.label, t.confidence) == ("roads.pothole", 1.0), t.text
    intent = answers[1].event("intent").data
    assert intent["label"] == "roads.pothole" and intent["nlu"]["label"] == engine.parse("예", "ko").label
    assert "faq.vaccination" not in engine.states.load("rest:r1").recent_intents


def test_a_person_asked_for_mid_form_keeps_its_label(engine):
    chat = Chat(engine)
    chat.say("도로에 구멍이 크게 났어요")
    t = chat.say("상담원 연결해 주세요")
    assert t.label == "conv.human" and t.routing.action == "handoff"
    assert "nlu" not in t.event("intent").data


@pytest.mark.parametrize("text,label", [
    ("처음으로", "sys.restart"), ("영어로", "sys.language"), ("수신거부", "sys.reminders_off"),
    ("내 정보 보여줘", "sys.show_data"), ("전화번호 연결", "sys.link_phone"),
    ("내 정보 삭제해 주세요", "sys.delete_data")])
def test_commands_are_recorded_as_understood_not_as_the_classifiers_guess(engine, text, label):
    """Commands the policy recognises by rule fit no catalog intent; as the classifier's guess at low
    confidence they filled the supervisors' "not understood" list."""
    chat = Chat(engine)
    chat.say("쓰레기 언제 버려요?")
    t = chat.say(text)
    assert (t.label, t.confidence) == (label, 1.0)
    assert t.event("intent").data["nlu"]["label"] != label
    assert engine.states.load("rest:r1").recent_intents == ["faq.waste_schedule"]  # not a resident's need


def test_reminder_offered_after_a_due_date_answer_once(engine):
    chat = Chat(engine)
    t = chat.say("재산세 언제까지 내요?")
    assert t.label == "faq.property_tax"
    assert t.replies[-1].text == engine.knowledge.render("utter_reminder_offer", "ko")
    assert [b.title for b in t.replies[-1].buttons] == ["예", "아니요"]
    t = chat.say("네")
    assert t.event("contact_consent").data == {"consent": True}
    assert (t.label, t.confidence) == ("faq.property_tax", 1.0)  # the "네" answered the tax question's offer
    t = chat.say("자동차세는 언제 내요?")
    assert t.label == "faq.vehicle_tax" and t.event("contact_consent") is None
    assert engine.knowledge.render("utter_reminder_offer", "ko") not in t.text  # once per conversation
    t = chat.say("알림 그만")
    assert t.event("contact_consent").data == {"consent": False}
    en = Chat(engine, sender="r2")
    t = en.say("When is the vehicle tax due?")
    assert t.replies[-1].text == engine.knowledge.render("utter_reminder_offer", "en")
    t = en.say("no")
    assert t.event("contact_consent") is None and t.text == engine.knowledge.render("utter_reminder_declined", "en")
    assert "reminder" not in Chat(engine, sender="r3").say("여권 발급 얼마나 걸려요?").text  # no due dates


def test_stop_inside_a_form_is_not_a_reminder_opt_out(engine):
    chat = Chat(engine)
    chat.say("도로에 구멍이 크게 났어요")
    t = chat.say("stop")
    assert t.event("contact_consent") is None


def test_form_skips_what_the_first_message_said(engine):
    t = Chat(engine).say("한빛동 중앙로 30 가로등이 어제부터 꺼져 있어요")
    assert t.routing.service_code == "roads.streetlight"
    st = engine.states.load("rest:r1")
    assert st.slots.get("location") and st.requested_slot == "consent"


def test_cancel_at_any_step(engine):
    chat = Chat(engine)
    chat.say("물이 새요 수도관 터진 것 같아요")
    t = chat.say("취소")
    assert t.event("form_cancelled") is not None
    assert engine.states.load("rest:r1").active_form is None


def test_every_service_form_reaches_a_ticket(engine):
    from bot.dialogue import policy
    for i, code in enumerate(engine.knowledge.services):
        chat = Chat(engine, sender=f"svc{i}")
        state = engine.states.load(f"rest:svc{i}")
        engine.states.save(state)
        t = chat.say(f"/{code}")
        assert t.routing.service_code == code, code
        for answer in ("한빛동 중앙로 5", "상황 설명입니다", "오늘 아침", "예", "예", "예"):
            if t.routing.action == "request":
                break
            t = chat.say(answer)
        assert t.routing.action == "request", (code, t.text)
        assert TICKET.search(t.text)
    assert policy.EMERGENCY_LABEL == "conv.emergency"


def test_status_by_spoken_ticket_number(engine):
    engine.requests.add(RequestRecord("2026-000871", "roads.pothole", "roads", sub_status="in_progress"))
    t = Chat(engine, channel="twilio_voice").say("이공이육 다시 공공공 팔칠일 처리 상태 알려주세요")
    assert t.routing.action == "status"
    assert "2026-000871" in t.text
    assert engine.knowledge.render("status_in_progress", "ko") in t.text


def test_status_without_a_number_shows_the_residents_own_requests(engine):
    chat = Chat(engine)
    t = chat.say("제가 신고한 민원 어떻게 됐어요?")
    assert t.text == engine.knowledge.render("utter_ask_ticket", "ko")  # none yet: asks for the number
    chat.say("취소")
    tickets = []
    for report in ("도로에 구멍이 크게 났어요", "가로등이 고장났어요"):
        chat.say(report)
        for answer in ("한빛동 중앙로 12", "예", "예"):
            t = chat.say(answer)
        tickets.append(TICKET.search(t.text).group(0))
    Chat(engine, sender="someone-else").say("도로에 구멍이 났어요")  # another resident's form, not listed
    t = chat.say("제 민원 어떻게 됐어요?")
    assert t.routing.action == "status" and t.event("status_lookup").data == {"listed": 2, "found": True}
    assert t.text.index(tickets[1]) < t.text.index(tickets[0])  # newest first
    assert engine.knowledge.render("status_received", "ko") in t.text
    t = chat.say(tickets[0])  # a number given next: that one in full
    assert t.event("status_lookup").data == {"ticket": tickets[0], "found": True}
    one = Chat(engine, sender="one")
    for text in ("도로에 구멍이 크게 났어요", "한빛동 새솔로 3", "예", "예"):
        t = one.say(text)
    t = one.say("What is the status of my request?")
    assert t.text.startswith(f"Ticket {TICKET.search(t.text).group(0)}") and "Department" in t.text


def test_status_asks_for_ticket_then_reports_unknown(engine):
    chat = Chat(engine)
    t = chat.say("제가 신고한 민원 어떻게 됐어요?")
    assert t.routing.action == "status"
    t = chat.say("2026-999999")
    assert t.event("status_lookup").data["found"] is False
    assert t.label == "conv.request_status"


def test_human_handoff_pauses_bot_until_released(engine):
    chat = Chat(engine)
    chat.say("재산세 언제 내요?")
    t = chat.say("상담원 연결해 주세요")
    assert t.routing.action == "handoff"
    assert t.event("handoff").data["department"] == "tax"  # from the conversation so far
    t = chat.say("여보세요?")
    assert t.routing.action == "paused" and t.replies == []
    replies = engine.release("rest:r1")
    assert replies and "1" in replies[0].text
    t = chat.say("5")
    assert t.event("feedback").data["rating"] == 5
    assert (t.label, t.confidence) == ("sys.rating", 1.0)


def test_after_hours_handoff_offers_a_call_back_and_records_it_with_the_number(engine, clock):
    clock.now = CLOSED
    chat = Chat(engine)
    t = chat.say("직원이랑 통화하고 싶어요")
    assert t.event("handoff").data["after_hours"] is True  # queued for the first person in ...
    assert t.event("callback") is None  # ... but no call promised before a number is given
    assert "09:00" in t.text and "콜백" in t.text
    assert not engine.states.load("rest:r1").handed_off
    t = chat.say("010-1234-56")
    assert t.event("callback") is None and "010-1234-5678" not in t.text  # a bad number is asked again
    t = chat.say("010-1234-5678로 전화 주세요")
    cb = t.event("callback").data
    assert cb["phone"] == "010-1234-5678" and "010-1234-5678" in t.text  # recorded and read back
    assert "다음 업무일" not in t.text
    t = chat.say("수도요금이 두 배로 나왔어요")
    assert "수도요금" in t.event("callback").data["message"]  # the message, added to the call-back


@pytest.mark.parametrize("text", ["불이 났어요 사람이 안에 있어요", "아버지가 쓰러지셨어요 숨을 안 쉬어요",
                                  "someone collapsed and is not breathing", "가스 냄새가 너무 심해요 폭발할 것 같아요"])
def test_emergency_first_reply_says_119_then_urgent_handoff(engine, text):
    t = Chat(engine).say(text)
    assert t.label == "conv.emergency"
    assert "119" in t.replies[0].text
    h = t.event("handoff").data
    assert h["department"] == "safety" and h["priority"] >= 100


def test_emergency_interrupts_a_form(engine):
    chat = Chat(engine)
    chat.say("나무가 쓰러질 것 같아요")
    t = chat.say("불이 났어요!! 사람이 갇혔어요")
    assert t.label == "conv.emergency" and "119" in t.replies[0].text


def test_low_confidence_clarifies_once_then_hands_off(engine):
    chat = Chat(engine)
    t = chat.say("그거 있잖아요 그거")
    if t.routing.action != "clarify":
        pytest.skip(f"classifier was confident on vague text ({t.label} {t.confidence:.2f})")
    assert 2 <= len(t.replies[0].buttons) <= 4
    t = chat.say("음 그니까 그거요")
    assert t.routing.action in ("handoff", "clarify", "answer", "smalltalk")


def test_clarification_button_payload_selects_intent(engine):
    t = Chat(engine).say("/faq.office_hours")
    assert t.label == "faq.office_hours" and t.routing.action == "answer"


def test_restart_resets_form(engine):
    chat = Chat(engine)
    chat.say("불법주차 신고할게요")
    t = chat.say("처음으로")
    assert t.event("reset") and engine.states.load("rest:r1").active_form is None


def test_greeting_thanks_goodbye(engine):
    chat = Chat(engine)
    assert chat.say("안녕하세요").label == "conv.greet"
    assert chat.say("감사합니다").label == "conv.thanks"
    assert chat.say("수고하세요 안녕히 계세요").label == "conv.goodbye"


def test_location_attachment_fills_location(engine):
    chat = Chat(engine, channel="telegram")
    chat.say("하수구가 막혔어요 물이 역류해요")
    chat.say("", attachments=[Attachment("location", lat=37.5, long=127.0)])
    st = engine.states.load("telegram:r1")
    assert st.slots["lat"] == 37.5 and st.slots["long"] == 127.0


def test_english_form(engine):
    chat = Chat(engine)
    t = chat.say("There is a big pothole on my street")
    assert t.lang == "en" and t.routing.service_code == "roads.pothole"
    t = chat.say("12 Jungang-ro, Hanbit-dong")
    t = chat.say("yes")
    t = chat.say("yes")
    assert t.routing.action == "request" and TICKET.search(t.text)


HOSTILE = ["", "   ", "가" * 20000, "\x00\x01\x02\x1b[31m", "<script>alert(1)</script>",
           "'; DROP TABLE interactions; --", "{{7*7}} ${7*7}", "\u202eevil", "😀😀😀", "Привет 你好 مرحبا"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_gets_a_sane_reply(engine, text):
    t = Chat(engine).say(text)
    assert t.replies and all(r.text.strip() for r in t.replies)
    assert t.label != "error"


def test_nlu_crash_becomes_apology_and_handoff(shared_nlu, clock):
    def broken(_text, _lang):
        raise RuntimeError("model exploded")

    engine = Engine(nlu=broken, clock=clock)
    t = engine.handle(Message("rest", "x", "안녕하세요"))
    assert t.event("error") and t.event("handoff")
    assert t.replies[0].text == engine.knowledge.render("utter_error", "ko")


def test_handoff_reply_names_the_routed_department(engine, clock):
    chat = Chat(engine)
    chat.say("대형폐기물 수수료 얼마예요?")
    t = chat.say("상담원 연결해 주세요")
    assert engine.knowledge.department_name("waste", "ko") in t.text
    clock.now = CLOSED
    t = Chat(engine, sender="late").say("상담원 연결해 주세요")
    assert t.replies[0].text == engine.knowledge.render("utter_after_hours", "ko", hours="평일 09:00–18:00",
                                                        next_open="내일(금) 09:00",
                                                        department=engine.knowledge.department_name("general", "ko"))


def test_button_payload_and_ok_keep_the_conversation_language(engine):
    chat = Chat(engine)
    chat.say("안녕하세요")
    assert chat.say("/faq.passport").lang == "ko"
    assert chat.say("ok").lang == "ko"
    assert chat.say("<img src=x onerror=alert(1)>").lang == "ko"
    assert chat.say("How much is a passport?").lang == "en"


def test_attachment_without_words_gets_a_prompt(engine):
    t = Chat(engine, channel="telegram").say("", attachments=[Attachment("photo", file_id="F1")])
    assert t.text == engine.knowledge.render("utter_attachment_received", "ko")
