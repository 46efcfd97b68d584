"""What a reply *is* (bot/dialogue/understanding.py): yes/no, cancels, pauses, corrections, places,
emergencies — the lexicons the conversation repair rests on, case by case."""

from __future__ import annotations

import pytest

from bot.dialogue import understanding as u
from bot.nlu.normalize import normalize


@pytest.mark.parametrize("text", ["ㅇㅇ", "ㅇㅋ", "네네", "그러세요", "연락 주세요", "응 연락해도 돼", "uh-huh", "yes please",
                                  "네 그 번호로 해 주세요", "내일 오전에 전화 주세요"])
def test_yes_in_its_many_forms(text):
    assert u.yes_no(normalize(text)).verdict is True


@pytest.mark.parametrize("text", ["아니요", "ㄴㄴ", "연락하지 마세요", "싫어요", "no, don't call me", "nope", "아뇨 괜찮아요"])
def test_no_in_its_many_forms(text):
    assert u.yes_no(normalize(text)).verdict is False


@pytest.mark.parametrize("text", ["어", "2번 출구", "근데 처리는 얼마나 걸려요?", "중앙로 12"])
def test_neither_yes_nor_no(text):
    assert u.yes_no(normalize(text)).verdict is None


def test_a_verdict_keeps_the_words_that_follow_it():
    assert u.yes_no("네 그리고 밤에 특히 위험해요").rest == "그리고 밤에 특히 위험해요"


@pytest.mark.parametrize("text", ["아 됐어요 안 할래요", "나중에 할게요", "never mind", "stop", "nvm",
                                  "아 지금 보니까 누가 닫았네요 신고 안 해도 될 것 같아요", "그냥 cancel 할게요"])
def test_cancel_in_any_words(text):
    assert u.is_cancel(text)


@pytest.mark.parametrize("text", ["잠깐만요", "잠시만요 주소 좀 찾아볼게요", "hold on a sec"])
def test_pause_fills_nothing(text):
    assert u.is_pause(text)


@pytest.mark.parametrize(("text", "slot", "value"), [
    ("아 잠깐 주소 잘못 말했어요 한빛로 17이에요", "location", "한빛로 17"),
    ("아니 내용이 틀렸어요", "description", ""),
    ("시간이 틀렸어요 어제가 아니라 오늘 아침이에요", "when", "오늘 아침"),
    ("아 중앙로 50 아니고 중앙로 52예요", "location", "중앙로 52"),
])
def test_corrections_in_natural_words(text, slot, value):
    fix = u.correction(text, at_confirmation=True, asked=None)
    assert fix is not None and fix.slot == slot and fix.value == value


def test_the_longest_address_wins_and_spoken_numbers_become_digits():
    assert u.longest(u.ROAD_ADDRESS, "중앙로 100 앞에 포트홀") == "중앙로 100"
    assert normalize("한빛로 이십일 앞에 가로등") == "한빛로 21 앞에 가로등"
    assert normalize("새솔로 사거리") == "새솔로 사거리"  # a place word, not a number


@pytest.mark.parametrize("text", ["아버지가 가슴을 움켜쥐고 쓰러지셨어요", "there is smoke coming from the building",
                                  "넘어져서 못 일어나요", "My mom grabbed her chest and fell to the floor",
                                  "아파트 불남 연기 계단까지 올라옴 사람들 못내려옴", "Someone is breaking into my house right now"])
def test_emergencies_are_recognised(text):
    assert u.looks_like_emergency(normalize(text))


@pytest.mark.parametrize("text", ["소음 때문에 죽을 것 같아요", "화재보험 문의", "응급실 있는 병원 알려주세요", "구급차 사이렌 소음",
                                  "싫어요", "help me find the passport office", "아니 응급상황 아니고요",
                                  "은행나무가 도로 쪽으로 쓰러졌어요", "The fire hydrant on my corner is leaking"])
def test_false_alarms_are_not_emergencies(text):
    assert not u.looks_like_emergency(normalize(text))


@pytest.mark.parametrize(("text", "kind"), [("가스 냄새가 나요", "gas"), ("불이 났어요", "fire"), ("애가 하천에 빠졌어요", "flood"),
                                            ("누가 흉기를 들고 있어요", "crime"), ("숨을 안 쉬어요", "medical")])
def test_safety_advice_fits_the_emergency(text, kind):
    assert u.emergency_kind(text) == kind


def test_one_filler_list_for_the_dialogue_and_the_knowledge_base():
    from bot.kb.retrieval import strip_fillers as kb_strip
    from bot.nlu.normalize import strip_fillers

    # The dialogue drops leading hesitations only: a leading 네 is still a yes.
    assert u.strip_fillers("아 네 됐어요") == "네 됐어요"
    assert u.strip_fillers("여보세요 저기 그 뭐냐 혼인신고 하려는데") == "혼인신고 하려는데"
    # The knowledge base drops openers anywhere, and keeps a message that is nothing else.
    assert kb_strip("네 안녕하세요 음 쓰레기 봉투 어디서 사요") == "쓰레기 봉투 어디서 사요"
    assert kb_strip("hi, good afternoon. my dog is lost") == "my dog is lost"
    assert kb_strip("여보세요") == "여보세요"
    assert strip_fillers("um so how do I renew my passport") == "how do I renew my passport"
