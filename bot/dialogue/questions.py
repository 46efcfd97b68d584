"""Questions answered from the knowledge base, and how they share a turn with the classifier.

The classifier (bot/nlu) knows 30 catalog codes; the knowledge base (bot/kb) knows hundreds of
articles. Who decides:

* ``faq.*``, ``conv.out_of_scope`` and any low-confidence label: the KB is asked. Its
  calibrated decision stands: ``answer`` answers, ``suggest`` offers its closest titles as
  buttons (with a person), ``abstain`` leaves the turn to the classifier's own handling
  (clarify / out-of-scope), except that a plain *question* nobody can answer gets an honest
  "I don't know" with a person.
  A confident ``faq.X`` whose article the KB did not pick with confidence still gets
  article X: on the catalog's 12 topics the classifier is nearly always right (README,
  "Figures behind choices in the code").
* a confident service request ("윗집 소음 때문에 신고하려고요") stays a request, unless the
  message is a question (not a report, not a request to do something) *and* the KB answers
  it with high confidence ("층간소음 상담은 어디서 받아요?").
* greetings, thanks, hand-off, status, emergencies: never the KB.

Measured both ways by ``bench/kb_routing.py`` (service reports that still open their form, catalog
FAQ questions answered from an article, turn labels right: README, "Measured").

Turns answered from an article are recorded under its catalog FAQ code (``faq:``) or, for
articles beyond the catalog, ``kb.<article id>``; the state remembers the article so the
next, elliptical question ("요금은 얼마예요?") is read in its context.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bot.dialogue.understanding import asks_for_person
from bot.kb.retrieval import is_elliptical
from bot.messages import Button, Reply

if TYPE_CHECKING:
    from bot.dialogue.context import TurnContext
    from bot.kb.articles import Article
    from bot.kb.retrieval import Hit, Result

#: Label prefix of turns answered by an article that no catalog FAQ topic covers.
KB_PREFIX = "kb."
#: Button payload that asks for one article.
PAYLOAD_PREFIX = "/kb."
#: A confident service label yields to the KB only from this calibrated KB confidence on.
DIVERT_REQUEST_AT = 0.85
#: A low-confidence label (the alternative is a menu of the classifier's guesses) yields to an
#: article from this calibrated KB confidence on, even when the message is not a question,
#: unless its words report something (``_ACTION``) and the label is a form's.
WEAK_LABEL_YIELDS_AT = 0.70
#: Below this the classifier's service label is a guess: a sure article of another department wins.
REQUEST_SURE = 0.6
#: A confident ``faq.X`` label: its own article is answered when the KB is unsure.
FAQ_TRUST_AT = 0.6
#: From here a ``faq.X`` label is answered with X's article whatever the KB says; from
#: ``FAQ_TRUST_AT`` only when X is among the KB's closest articles.
FAQ_SURE_AT = 0.8
#: A confident ``faq.X`` label wins over an unsure KB whose top article scores at most this much
#: above X's own article (fused scores).
FAQ_CLOSE_SHARE = 0.95
#: Suggestions are articles scoring at least this share of the best one (not filler).
SUGGEST_SHARE = 0.8
_NEVER = frozenset({"conv.greet", "conv.thanks", "conv.goodbye", "conv.human", "conv.request_status",
                    "conv.emergency"})

_QUESTION_KO = re.compile(
    r"\?|？|어디|어떻게|어케|어떡|언제|얼마|몇\s?[가-힣]|무엇|뭐[가야예에요지]|뭔가요|누구|왜|궁금|알려\s?주|"
    r"(?:나요|까요|가요|는지|인지|[을를]까|되요|돼요\?|있어요\?|려면|하면\s?돼|되죠|맞죠|있죠|"
    r"해야\s?(?:돼|되|하)|받을\s?수|할\s?수\s?있|있을까|없을까|없나|있나|되나|될까)")
_QUESTION_EN = re.compile(r"\?|^\s*(?:how|what|when|where|which|who|why|can|could|do|does|is|are|should|may)\b"
                          r"|\b(?:tell me|i want to know|wondering|is there|are there)\b"
                          r"|\b(?:how|what|when|where|which|who|why)\s+(?:can|do|does|did|is|are|should|to|much|many|long)\b",
                          re.IGNORECASE)
#: Words of a report or a request for action: such a message is a service request, even
#: phrased as a question ("가로등 고장 신고 어떻게 해요?" opens the streetlight form).
_ACTION = re.compile(
    r"신고|접수|신청|고쳐|치워|수거해|가져가|와\s?주|해\s?주세요|해주실|처리해|막혔|터졌|나갔|부서졌|"
    r"\b(?:report|fix|repair|pick ?up|collect|take away|send someone|complain)", re.IGNORECASE)


#: Asking someone to come and do something ("치워 주세요", "조치 바랍니다", "please fix"), not
#: to be told how: narrower than ``_ACTION`` (신청 is in "어디서 신청해요?" too).
_DO_IT = re.compile(
    r"(?:치워|고쳐|수리해|보내|가져가|수거해|와|처리해)\s?(?:주세요|줘요|주시|줄\s?수|주면|달라)|조치\s?(?:해|바랍|부탁)|"
    r"\b(?:fix|repair|pick up|collect|take away|send someone|remove)\b", re.IGNORECASE)


#: Asking how or where a report or an application is made ("불법주차 신고는 어떻게 해요",
#: "소파 버리려면 어디서 신청해요", "how do I report a broken streetlight"): the procedure is an
#: article, and the resident may well mean to report now, so both are given.
_HOW = re.compile(r"어떻게|어케|어떡|어디|방법|절차|뭐\s?필요|"
                  r"\b(?:how|where)\b|\bwhat do i need\b", re.IGNORECASE)


def _weak(ctx: TurnContext) -> bool:
    """The classifier's label is a guess: low confidence, or a hand-off read into words that ask
    for nobody ("결혼한 형이랑 세대를 나누려고 해요": 형이랑 is not 사람이랑). A hand-off the
    classifier is sure of never gets here (``policy.wants_person`` took it)."""
    return ctx.low_confidence or (ctx.label == "conv.human" and not asks_for_person(ctx.text))


def _sure_elsewhere(ctx: TurnContext, result: Result) -> bool:
    """The KB is sure of one article and the classifier's guess is weak or off its topic.

    Residents describe situations ("베란다에 벌집이 생겼어요", "부모님이랑 세대 분리하고 싶어요",
    "수돗물 수질 검사 신청하고 싶어요") that are neither phrased as questions nor one of the
    catalog's reports; the classifier, which knows 30 codes, then guesses low (a greeting, a
    hand-off, another department's form). The KB's calibrated confidence is the better signal
    there: a low-confidence label yields to a sure article, and an unsure request
    (< ``REQUEST_SURE``) yields when the article belongs to another department than the form.
    """
    services = ctx.knowledge.services
    bar = WEAK_LABEL_YIELDS_AT if _weak(ctx) else DIVERT_REQUEST_AT
    if result.decision != "answer" or result.parts or result.confidence < bar:
        return False
    dept = ctx.knowledge.department_of(ctx.label) if ctx.label in services else None
    same_topic = bool(dept) and result.hits[0].article.department == dept
    if _weak(ctx):
        # The alternative is a menu of guesses, unless the words report something on the
        # article's own topic ("하수도 막힘 신고 합니다"): that is the form's.
        # A request to come and do something is a report too when the classifier's guess at
        # its form is only low ("sidewalk is broken, please fix" is no bus-route question).
        return not ((same_topic and _ACTION.search(ctx.text)) or (ctx.label in services and _DO_IT.search(ctx.text)))
    if ctx.label not in services or ctx.confidence >= REQUEST_SURE:
        return False
    # A fair guess at a form (not low) whose department's article the KB is sure of ("하수구
    # 막혀서 물이 안 내려가요" → the sewer article): the two agree on a report, its form answers.
    # Unless the article is another of that department's topics, not the form's own (whose id
    # starts with the form's code: water.leak → water.leak_report), and the words report
    # nothing ("아침부터 수돗물이 안 나와요" is an outage, not a leak to locate).
    if same_topic and not _ACTION.search(ctx.text):
        return not result.hits[0].article.id.startswith(ctx.label)
    return bool(dept) and not same_topic


def _hit(article: Article) -> Hit:
    from bot.kb.retrieval import Hit

    return Hit(article, 0.0)


def looks_like_question(text: str, lang: str) -> bool:
    """A request for information, not a report or a request for action."""
    if _ACTION.search(text):
        return False
    return bool((_QUESTION_EN if lang == "en" else _QUESTION_KO).search(text)) or \
        bool(_QUESTION_KO.search(text) or _QUESTION_EN.search(text))


def label_for(article: Article) -> str:
    """The label a turn answered by ``article`` is recorded under."""
    return article.faq or f"{KB_PREFIX}{article.id}"


def answer_question(ctx: TurnContext) -> bool:
    """Answer the message from the knowledge base if that is the right thing; True if done.

    Called first in ``policy.respond_to_intent``. When it returns False the classifier's
    handling goes on; it may have left ``ctx.kb_suggestions`` for :func:`suggestion_buttons`.
    """
    kb = ctx.kb
    if kb is None:
        return False
    text, label, state = ctx.text, ctx.label, ctx.state
    if text.startswith(PAYLOAD_PREFIX):  # a suggestion button
        article = kb.get(text[len(PAYLOAD_PREFIX):].strip())
        if article is not None:
            _answer(ctx, [article])
            return True
        return False
    faq_article = kb.for_faq(label) if label.startswith("faq.") else None
    if ctx.forced_label is not None:
        if faq_article is not None:
            _answer(ctx, [faq_article])
            return True
        return False
    if label in _NEVER and not _weak(ctx):
        return False
    is_request = label in ctx.knowledge.services and not ctx.low_confidence
    asks = bool(_QUESTION_KO.search(text) or _QUESTION_EN.search(text))
    # "그거 신청은 어디서 해요?" right after an article asks about it, 신청 or not.
    question = looks_like_question(text, ctx.lang) or (bool(state.last_article) and is_elliptical(text) and asks)
    guarded = label in _NEVER or label in ctx.knowledge.services  # not the KB's unless a question
    unsure = _weak(ctx) or (label in ctx.knowledge.services and ctx.confidence < REQUEST_SURE)
    how = is_request and bool(_HOW.search(text))  # "신고는 어떻게 해요": the article, then the form
    if guarded and not question and not unsure and not how:
        return False  # a report the classifier is sure of: its form, not an article
    if guarded and not question and len(text.split()) < 2:
        return False  # one word the classifier reads as social or a report ("싫어요"): not a topic
    social = label in _NEVER and not question  # "ok thanks, bye", "여보세요 물이 안 나와요"
    # A social turn is not read in the last article's context: "ok thanks, bye" after the
    # waste calendar is not a follow-up question about it.
    result = kb.answer(text, ctx.lang, context=None if social else state.last_article)
    if guarded and not question and not _sure_elsewhere(ctx, result):
        # "ok thanks, bye" scored low, or a report the classifier is unsure of: clarify or the
        # form, unless the KB is sure of an article the classifier's guess does not cover.
        if how:
            _explain_before_form(ctx, result)
        return False
    if is_request:
        if (result.decision == "answer" and result.confidence >= DIVERT_REQUEST_AT and not result.parts) \
                or _sure_elsewhere(ctx, result):
            _answer(ctx, [result.hits[0].article], result)
            return True
        if how:
            _explain_before_form(ctx, result)
        return False  # the form opens (after the explanation, if any)
    if result.decision == "answer" and faq_article is not None and ctx.confidence >= FAQ_TRUST_AT \
            and not result.parts and not result.used_context and result.confidence < 0.95:
        top = result.hits[0].article
        own = next((h for h in result.hits[1:] if h.article.id == faq_article.id), None)
        if top.faq and top.faq != faq_article.faq:
            # Two catalog topics disagree: on those the classifier is nearly always right.
            result.hits.insert(0, next(h for h in [*result.hits, _hit(faq_article)] if h.article is faq_article))
        elif own is not None and result.confidence < DIVERT_REQUEST_AT and top.area != faq_article.area \
                and own.score >= FAQ_CLOSE_SHARE * result.hits[0].score:
            # The KB is unsure between its top and the classifier's topic, nearly tied: the two
            # signals agree on the topic ("I just moved, how do I register my new address?" is
            # the moving-in report, not the foreigners' change of address). A sibling article of
            # the same area is the topic said more precisely (paying the vehicle tax early is
            # the vehicle-tax prepayment article, not the vehicle-tax bill): it stays.
            result.hits.remove(own)
            result.hits.insert(0, own)
    if result.decision == "answer":
        articles = [p.hits[0].article for p in result.parts] if result.parts else [result.hits[0].article]
        _answer(ctx, articles, result)
        return True
    # The KB's closest articles include the catalog topic's own: the two signals do not disagree.
    near = faq_article is not None and any(h.article.id == faq_article.id for h in result.hits[:3])
    if faq_article is not None and (ctx.confidence >= FAQ_SURE_AT or (ctx.confidence >= FAQ_TRUST_AT and near) or (
            result.hits and result.hits[0].article.id == faq_article.id)):
        # The classifier is sure of a catalog topic, or both agree on it: its article.
        _answer(ctx, [faq_article], result)
        return True
    # A fair guess at a catalog topic the KB does not see near the message at all ("애들 불소
    # 바르는 거" is no vaccination, "캠핑용 가스통 버리는 법" no bulky-waste fee): not answered.
    off_topic_faq = faq_article is not None and not near
    close = [h.article for h in result.hits[:3] if h.score >= SUGGEST_SHARE * result.hits[0].score]
    if result.decision == "suggest" and close:
        if ctx.low_confidence and label in ctx.knowledge.services:
            ctx.kb_suggestions = close[:2]
            return False  # clarify() offers them beside the catalog's candidates
        _suggest(ctx, close)
        return True
    if off_topic_faq or (question and (label in ("conv.out_of_scope",) or label.startswith("faq.") or _weak(ctx))):
        ctx.route("answer")
        ctx.say("utter_kb_abstain", buttons=[ctx.button("btn_human", "/conv.human")])
        ctx.event("kb_abstain", query=text[:200])
        return True
    return False


def reply_for(ctx: TurnContext, article: Article) -> Reply:
    """The article's answer with its source on a last line; voice gets ``spoken`` as a hint."""
    from bot.kb.retrieval import cited_answer

    assert ctx.kb is not None
    text, hints = cited_answer(ctx.kb, article, ctx.lang)
    return Reply(text, [], hints)


def _answer(ctx: TurnContext, articles: list[Article], result: Result | None = None) -> None:
    first = articles[0]
    label = label_for(first)
    topic = ctx.knowledge.faq.get(ctx.label) if ctx.confidence >= FAQ_TRUST_AT else None
    if topic and not first.faq and first.department == topic.get("department"):
        # A more specific article on the catalog topic the classifier recognised (a passport
        # photo question → civil.passport_photo): still the resident's need faq.passport for
        # analytics, hand-off summaries and reminders; the article is in the kb_answer event.
        label = ctx.label
    ctx.route("answer", department=first.department)
    for article in articles:
        ctx.replies.append(reply_for(ctx, article))
        ctx.event("kb_answer", article=article.id, revision=ctx.kb.revision if ctx.kb else 0,
                  confidence=round(result.confidence, 4) if result else 1.0,
                  context=bool(result and result.used_context))
    last = articles[-1]
    ctx.state.last_article = last.id
    if last.department and last.department != "general":
        ctx.state.last_department = last.department
    ctx.answered(label)
    ctx.state.clarify_options = []
    ctx.state.clarify_count = 0
    if len(articles) == 1 and label.startswith("faq."):
        from bot.dialogue.policy import offer_reminder  # policy imports this module

        offer_reminder(ctx, label)  # due-date topics: "shall I remind you?"


def _explain_before_form(ctx: TurnContext, result: Result) -> None:
    """The article on how the form's department takes such reports, then the offer to take it
    here; the caller goes on to open the form, whose first question follows. The turn stays
    the form's (its label and routing): the article is in the ``kb_answer`` event."""
    if result.decision != "answer" or result.parts:
        return  # no article the KB is sure of: the form alone
    article = result.hits[0].article
    if article.department != ctx.knowledge.department_of(ctx.label):
        return  # another department's topic is no explanation of this form
    ctx.replies.append(reply_for(ctx, article))
    ctx.event("kb_answer", article=article.id, revision=ctx.kb.revision if ctx.kb else 0,
              confidence=round(result.confidence, 4), context=bool(result.used_context), before_form=True)
    ctx.say("utter_kb_then_form")


def _suggest(ctx: TurnContext, articles: list[Article]) -> None:
    ctx.route("clarify")
    ctx.event("kb_suggest", articles=[a.id for a in articles])
    ctx.say("utter_kb_suggest", buttons=[*suggestion_buttons(ctx, articles),
                                         ctx.button("btn_human", "/conv.human")])


def suggestion_buttons(ctx: TurnContext, articles: list[Article] | None = None) -> list[Button]:
    """Buttons for articles (default: those :func:`answer_question` left on ``ctx``)."""
    kb = ctx.kb
    if kb is None:
        return []
    chosen = articles if articles is not None else getattr(ctx, "kb_suggestions", [])
    return [Button(kb.text(a, "title", ctx.lang), f"{PAYLOAD_PREFIX}{a.id}") for a in chosen]
