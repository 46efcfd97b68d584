"""Retrieval on the fixture KB: hits, honest abstention, follow-ups, two questions, live edits."""

from __future__ import annotations

from datetime import date

import pytest

from bot.kb.articles import Article, ArticleError, load_dir
from bot.kb.retrieval import KnowledgeBase, lexical_tokens, split_questions
from bot.settings import ROOT, get_settings, load_config

FIXTURE = ROOT / "tests" / "data" / "kb"
CONFIG = load_config(ROOT / "config.yml")


def make_kb(today: date = date(2026, 12, 6), articles: list[Article] | None = None) -> KnowledgeBase:
    return KnowledgeBase(articles if articles is not None else load_dir(FIXTURE, CONFIG), CONFIG,
                         cache_dir=get_settings().pcrm_model_dir, today=lambda: today)


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return make_kb()


def test_korean_tokens_are_morphemes_without_particles_plus_bigrams():
    tokens = lexical_tokens("여권은 어디서 만들어요?")
    assert "여권" in tokens and "은" not in tokens and "어요" not in tokens
    assert "#여권" in tokens  # Hangul bigrams catch compounds Kiwi splits (층간소음 → 층/가/ㄴ/소음)


@pytest.mark.parametrize(("text", "lang", "article"), [
    ("여권 새로 만들려면 어디로 가야 돼요?", "ko", "civil.passport"),
    ("등본 인터넷으로 떼는 방법", "ko", "civil.resident_certificate"),
    ("쓰레기언제버려요", "ko", "waste.schedule"),          # no spaces
    ("차 세금은 언제 내는 거예요?", "ko", "tax.vehicle"),    # no word of the title
    ("인감증명 떼려면 뭐 가져가요", "ko", "civil.seal_certificate"),
    ("Where do I get a flu shot?", "en", "health.vaccination"),
    ("층간소음 상담은 어디서 받아요?", "ko", "environment.floor_noise"),
])
def test_questions_are_answered_by_their_article(kb, text, lang, article):
    r = kb.answer(text, lang)
    assert r.decision == "answer", (r.decision, r.confidence, [h.article.id for h in r.hits])
    assert r.article is not None and r.article.id == article


@pytest.mark.parametrize("text", ["ㅁㄴㅇㄹ", "아아아아", "비트코인 지금 시세 얼마예요?",
                                  "What's the weather like tomorrow?"])
def test_nonsense_and_off_topic_are_not_answered(kb, text):
    assert kb.answer(text, "ko").decision != "answer"


def test_an_elliptical_follow_up_is_read_in_the_context_of_the_last_article(kb):
    bare = kb.answer("사진은 몇 장 필요해요?", "ko")
    assert bare.decision != "answer" or bare.article.id == "civil.passport"
    after = kb.answer("사진은 몇 장 필요해요?", "ko", context="civil.passport")
    assert after.decision == "answer" and after.article.id == "civil.passport" and after.used_context
    fee = kb.answer("요금은 얼마에요", "ko", context="faq.parking_permit")  # a catalog code works too
    assert fee.decision == "answer" and fee.article.id == "traffic.resident_parking"
    weekend = kb.answer("and on weekends?", "en", context="general.office_hours")
    assert weekend.decision == "answer" and weekend.article.id == "general.office_hours"


def test_context_does_not_override_a_confident_new_topic(kb):
    r = kb.answer("재산세 언제 내요?", "ko", context="civil.passport")
    assert r.article is not None and r.article.id == "tax.property" and not r.used_context


def test_two_questions_in_one_message_get_two_answers(kb):
    assert split_questions("여권 얼마고 등본은 어디서 떼요?") == ["여권 얼마고", "등본은 어디서 떼요?"]
    r = kb.answer("여권 얼마고 등본은 어디서 떼요?", "ko")
    assert r.decision == "answer"
    assert [p.article.id for p in r.parts] == ["civil.passport", "civil.resident_certificate"]


def test_split_needs_the_connective_ending_not_a_noun_in_go():
    # 신고 is a noun, "-다고" a quotation, "-고 싶다" one predicate: one question each.
    assert split_questions("결혼했는데 혼인신고 어디서 해요") == ["결혼했는데 혼인신고 어디서 해요"]
    assert split_questions("담배 끊고 싶은데 도와주는 곳 있나요") == ["담배 끊고 싶은데 도와주는 곳 있나요"]
    assert split_questions("환급금 있다고 문자가 왔는데 진짜예요?") == ["환급금 있다고 문자가 왔는데 진짜예요?"]
    assert split_questions("재산세 얼마고 자동차세는 언제 내요") == ["재산세 얼마고", "자동차세는 언제 내요"]


def test_one_question_with_a_connective_is_not_split(kb):
    r = kb.answer("이사하고 전입신고는 어떻게 해요?", "ko")
    assert r.decision == "answer" and r.article.id == "civil.moving_in" and not r.parts


def test_an_article_outside_its_validity_window_is_not_served():
    articles = load_dir(FIXTURE, CONFIG)
    before = make_kb(date(2026, 12, 6), articles)
    during = make_kb(date(2026, 12, 28), articles)
    q = "1월 1일 신정에도 민원실 열어요?"
    assert all(h.article.id != "general.year_end_hours" for h in before.answer(q, "ko").hits)
    r = during.answer(q, "ko")
    assert r.decision == "answer" and r.article.id == "general.year_end_hours"


def test_replace_swaps_the_index_and_bumps_the_revision(kb):
    articles = load_dir(FIXTURE, CONFIG)
    fresh = make_kb(articles=articles)
    rev = fresh.revision
    extra = Article.from_dict({
        "id": "general.lost_and_found", "department": "general",
        "title": {"ko": "분실물 찾기", "en": "Lost and found"},
        "questions": {"ko": ["구청에서 지갑 잃어버렸어요", "분실물 센터 어디예요?"],
                      "en": ["I lost my wallet at the office", "Where is lost and found?"]},
        "answer": {"ko": "분실물은 {city} 1층 종합민원실에서 보관해요. 문의 {city.phone}.",
                   "en": "Lost items are kept at the {city} front desk. Call {city.phone}."}})
    assert fresh.replace([*articles, extra]) == rev + 1
    r = fresh.answer("분실물 센터 어디예요?", "ko")
    assert r.article is not None and r.article.id == "general.lost_and_found"
    assert "02-2100-1000" in fresh.text(r.article, "answer", "ko")
    # A bad edit is refused whole; the published index stays.
    broken = Article.from_dict({**extra.to_dict(), "id": "general.broken",
                                "answer": {"ko": "{dept.nowhere.phone}", "en": "x"}})
    with pytest.raises(ArticleError):
        fresh.replace([*articles, broken])
    assert fresh.revision == rev + 1 and fresh.get("general.lost_and_found") is not None


def test_leave_one_out_on_the_fixture_is_mostly_right(kb):
    results = kb.leave_one_out()
    answered = [(gold, r.article.id) for _, gold, r in results if r.decision == "answer"]
    right = sum(g == a for g, a in answered)
    assert right / len(results) >= 0.6
    assert (len(answered) - right) / len(results) <= 0.1


def test_a_repeated_question_is_retrieved_once_per_index_and_callers_get_copies(kb: KnowledgeBase) -> None:
    """The search memo: the same result, without sharing what ``answer`` marks up."""
    question = "여권 발급 수수료 얼마예요?"
    first = kb.search(question)
    memo = kb._index._memo
    size = len(memo)
    first.hits.clear()
    first.used_context = True
    again = kb.search(question)
    assert len(memo) == size and again.hits and not again.used_context
    assert [h.article.id for h in again.hits] == [h.article.id for h in kb._search(question).hits]


def test_fast_bm25_scoring_adds_up_to_what_bm25s_computes(kb):
    import bm25s
    import numpy as np

    from bot.kb.retrieval import Postings, bm25_scores

    lines = [a.title.get("ko", "") + " " + " ".join(a.questions.get("ko", [])) for a in kb.articles]
    model = bm25s.BM25()
    model.index([lexical_tokens(t) or ["∅"] for t in lines], show_progress=False)
    stored = Postings.of(model)  # what an index keeps of it
    assert isinstance(kb._index.bm25, Postings)  # noqa: SLF001 - no bm25s object is pickled
    for text in ("여권 새로 만들려면 어디로 가야 돼요?", "쓰레기 쓰레기 언제 버려요", "passport fee", "없는말", "여"):
        tokens = lexical_tokens(text)
        expected = model.get_scores(tokens) if any(t in model.vocab_dict for t in tokens) \
            else np.zeros(len(lines))
        assert np.allclose(bm25_scores(stored, tokens), expected, atol=1e-5)
