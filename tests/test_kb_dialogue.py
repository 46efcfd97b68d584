"""Questions answered from the knowledge base inside whole conversations (``Engine.handle``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.dialogue.questions import looks_like_question
from bot.engine import Engine
from bot.kb.articles import load_dir
from bot.kb.retrieval import KnowledgeBase
from bot.messages import Message
from bot.service_requests import InMemoryRequestStore
from bot.settings import ROOT, get_settings, load_config

OPEN = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)  # Thursday 11:00 KST
CONFIG = load_config(ROOT / "config.yml")


@pytest.fixture(scope="module")
def shared_nlu():
    return Engine().nlu


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase(load_dir(ROOT / "tests" / "data" / "kb", CONFIG), CONFIG,
                         cache_dir=get_settings().pcrm_model_dir)


@pytest.fixture
def engine(shared_nlu, kb) -> Engine:
    return Engine(nlu=shared_nlu, kb=kb, clock=lambda: OPEN, requests=InMemoryRequestStore())


def say(engine: Engine, text: str, sender: str = "r1", channel: str = "rest"):
    return engine.handle(Message(channel, sender, text))


def test_a_catalog_faq_is_answered_from_its_article_with_the_source(engine, kb):
    turn = say(engine, "여권 발급 얼마나 걸려요?")
    assert turn.label == "faq.passport" and turn.routing.action == "answer"
    body, cite = turn.replies[0].text.rsplit("\n", 1)
    assert body == kb.text(kb.get("civil.passport"), "answer", "ko")
    assert "02-210-1400" in body                      # {dept.civil.phone} from config.yml
    assert cite == "출처: 외교부 여권안내 https://www.passport.go.kr"
    assert turn.event("kb_answer").data["article"] == "civil.passport"
    assert engine.states.load("rest:r1").last_article == "civil.passport"


def test_an_article_beyond_the_catalog_is_answered_and_labelled_kb(engine):
    turn = say(engine, "인감증명서 떼려면 뭐 필요해요?")
    assert turn.label == "kb.civil.seal_certificate"
    assert "인감증명서" in turn.text and turn.text.splitlines()[-1].startswith("출처:")


def test_follow_up_question_uses_the_last_article(engine):
    say(engine, "거주자 우선주차 신청하려면 어떻게 해요?", sender="p1")
    turn = say(engine, "요금은 얼마에요", sender="p1")
    assert turn.label == "faq.parking_permit"
    assert "40,000원" in turn.text
    photo = say(engine, "사진은 몇 장 필요해요?", sender="p2")  # alone: not sure it is the passport
    say(engine, "여권 발급 얼마나 걸려요?", sender="p3")
    after = say(engine, "사진은 몇 장 필요해요?", sender="p3")
    assert after.label == "faq.passport" and after.event("kb_answer").data["context"] is True
    assert photo.event("kb_answer") is None or photo.label == "faq.passport"


def test_two_questions_get_two_answers_in_order(engine):
    turn = say(engine, "여권 얼마고 등본은 어디서 떼요?")
    assert len(turn.replies) == 2
    assert "여권" in turn.replies[0].text and "등본" in turn.replies[1].text
    assert turn.label == "faq.passport"


def test_a_question_about_a_request_topic_is_answered_but_a_report_opens_the_form(engine):
    question = say(engine, "층간소음 상담은 어디서 받아요?", sender="n1")
    assert question.label == "kb.environment.floor_noise" and question.routing.action == "answer"
    report = say(engine, "윗집 소음 때문에 신고하려고요", sender="n2")
    assert report.label == "environment.noise" and report.routing.action == "collect"


def test_report_wording_is_not_a_question():
    assert looks_like_question("층간소음 상담은 어디서 받아요?", "ko")
    assert not looks_like_question("윗집 소음 때문에 신고하려고요", "ko")
    assert not looks_like_question("가로등 고장 신고 어떻게 해요?", "ko")  # asks to report: the form
    assert looks_like_question("Where can I get help with noise from upstairs?", "en")


def test_an_unanswerable_question_gets_an_honest_answer_and_a_person(engine):
    turn = say(engine, "비트코인 지금 시세가 얼마예요?", sender="u1")
    assert turn.routing.action in ("answer", "smalltalk")
    assert "/conv.human" in [b.payload for r in turn.replies for b in r.buttons]
    assert turn.event("kb_answer") is None


def test_a_suggestion_button_answers_that_article(engine):
    turn = say(engine, "/kb.tax.certificate", sender="b1")
    assert turn.label == "kb.tax.certificate" and "납세증명서" in turn.text


def test_a_faq_button_payload_answers_from_the_article(engine, kb):
    turn = say(engine, "/faq.office_hours", sender="b2")
    assert turn.label == "faq.office_hours"
    assert turn.replies[0].text.startswith(kb.text(kb.get("general.office_hours"), "answer", "ko"))


def test_voice_gets_the_spoken_version_as_a_hint(engine, kb):
    turn = say(engine, "여권 발급 얼마나 걸려요?", sender="v1", channel="twilio_voice")
    assert turn.replies[0].hints["spoken"] == kb.text(kb.get("civil.passport"), "spoken", "ko")
    assert len(turn.replies[0].hints["spoken"]) < len(turn.replies[0].text)


def test_english_question_answered_in_english(engine):
    turn = say(engine, "When is the office open?", sender="e1")
    assert turn.lang == "en" and turn.label == "faq.office_hours"
    assert "weekdays 09:00–18:00" in turn.text and turn.text.splitlines()[-1].startswith("Source:")


def test_action_answer_faq_answers_from_the_knowledge_base(engine, kb):
    tracker = {"sender_id": "x", "slots": {"lang": "en"},
               "latest_message": {"text": "", "intent": {"name": "faq.waste_schedule"}, "entities": []},
               "events": [], "paused": False, "followup_action": None, "active_loop": {},
               "latest_action_name": None}
    from actions import backend

    backend.configure(engine.knowledge, engine.requests, kb)
    _, responses = engine.call_action("action_answer_faq", tracker)
    assert responses[0]["text"].startswith(kb.text(kb.get("waste.schedule"), "answer", "en"))


def test_indirect_questions_are_questions_and_reports_stay_reports():
    assert looks_like_question("층간소음 몇 데시벨부터 기준 넘는 거예요", "ko")
    assert looks_like_question("아들이 있는데 저도 수급자 될 수 있나", "ko")
    assert looks_like_question("upstairs neighbors are so loud every night who can help", "en")
    assert not looks_like_question("하수도 막힘 신고 합니다", "ko")
    assert not looks_like_question("sidewalk is broken near the bus stop, please fix", "en")

