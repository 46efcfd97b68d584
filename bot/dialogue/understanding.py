"""What a reply *is*, before the policy decides what to do with it.

The policy (``bot/dialogue/policy.py``) asks residents questions: where, what, when, may we
contact you, is this right, do you want a call-back, what number. A reply is not always an
answer: it may be a question of its own, a change of mind, a pause, a correction, a second
problem. These functions tell them apart with lexicons and patterns, so the policy can read as
a list of rules. They know nothing about channels or stores, and are pure (no NLU calls).

Why hand-written lexicons: these are closed classes of conversational words (yes/no in their
Korean and English variants, jamo shorthand, fillers, cancel phrases), where a list is exact,
explainable and instant, and where the classifier, trained on whole requests, is weakest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.nlu.entities import EN_ADDRESS, PHONE, ROAD_ADDRESS, WHEN
from bot.nlu.normalize import strip_fillers  # one list of fillers for the dialogue and the KB

# --- small helpers ----------------------------------------------------------------------------

_PUNCT = re.compile(r"[\s.,!?~…^ㅎㅋ;:'\"()\[\]\-_]+")


def squash(text: str) -> str:
    """Lower case without spaces or punctuation: "네, 네!" → "네네"."""
    return _PUNCT.sub("", text.lower())


# --- yes / no ---------------------------------------------------------------------------------

# Whole-reply forms (after :func:`squash`). Compatibility jamo (ㅇㅇ) survive clean() since
# bot/nlu/normalize.py maps NFKC's conjoining jamo back.
_YES_WHOLE = {
    "예", "네", "넹", "넵", "넴", "녜", "예예", "네네", "넵넵", "네네네", "응", "웅", "ㅇㅇ", "ㅇㅋ", "ㅇㅇㅇ", "ㅇ",
    "ok", "okay", "okey", "오케이", "오키", "yes", "yeah", "yep", "yup", "ya", "y", "sure", "confirm", "correct",
    "그래", "그래요", "그래요네", "그럼요", "그러세요", "그러시죠", "그렇게해주세요", "그렇게해줘", "좋아", "좋아요",
    "좋습니다", "맞아", "맞아요", "맞습니다", "맞네요", "맞음", "동의", "동의해요", "동의합니다", "동의함", "접수",
    "접수해주세요", "접수해줘", "접수해요", "연락주세요", "연락해주세요", "연락줘요", "연락주셔도돼요", "연락주셔도됩니다",
    "연락하셔도돼요", "연락하셔도됩니다", "연락가능해요", "연락가능", "전화주세요", "전화해주세요", "전화주셔도돼요",
    "괜찮아요연락주세요", "네그렇게해주세요", "네맞아요", "네맞습니다", "네좋아요", "네부탁해요", "부탁해요",
    "부탁드려요", "부탁드립니다", "yesplease", "pleasedo", "goahead", "ofcourse", "thatsright", "thatscorrect",
    "itscorrect", "right", "alright", "allright", "fine", "sounds good", "soundsgood", "yesitis", "yesthatsright",
    "uhhuh", "mhm", "mmhm", "yeahsure", "yessure", "surething", "absolutely", "definitely",
}
_NO_WHOLE = {
    "아니", "아니요", "아니오", "아뇨", "아니에요", "아닙니다", "아니야", "노", "ㄴㄴ", "ㄴ", "no", "nope", "nah", "n",
    "싫어", "싫어요", "싫습니다", "안돼", "안돼요", "안됩니다", "됐어요아니요", "아니요괜찮아요", "아니괜찮아요",
    "필요없어요", "필요없습니다", "안해도돼요", "안하셔도돼요", "nothanks", "nothankyou", "noneed", "wrong", "incorrect",
    "아니요틀려요", "틀려요", "틀렸어요", "notreally", "dont", "donot", "pleasedont",
}
# Phrases that say no wherever they stand ("연락은 안 주셔도 돼요", "연락하지 마세요").
_NO_ANYWHERE = re.compile(
    r"(연락|전화|문자)\S*\s*(하지|주지|드리지|안\s*(하셔|주셔|해|줘|드려))|(하지|주지)\s*마(세요|요|십시오)|"
    r"동의\s*(안|하지\s*않|못)|원하지\s*않|안\s*원해|필요\s*없|괜찮습니다\s*$|"
    r"\bdon'?t\b|\bdo not\b|\bno thanks\b|\bnot (?:now|necessary|needed)\b", re.IGNORECASE)
# Phrases that say yes wherever they stand ("내일 오전에 전화 주세요", "please call me").
_YES_ANYWHERE = re.compile(r"(전화|연락|콜백)\s*(주세요|줘요|주시면|해\s*주세요|해\s*줘|부탁|받을게요|받고\s*싶|원해요|바랍니다)|"
                           r"\bcall me\b|\bcall me back\b|\bplease call\b|\bcall back\b", re.IGNORECASE)
# Leading words that carry the verdict when more follows ("네 그리고 사진도 있어요").
_YES_LEAD = re.compile(r"^(?:(?:예|네|넹|넵|응|ㅇㅇ|ㅇㅋ|yes|yeah|yep|sure|ok(?:ay)?|그래요|좋아요|맞아요|맞습니다)[\s,.!~]*)+"
                       r"(?:[\s,.!~]+|$)|^(?:예|네|넹|넵|응)+(?=[가-힣])(?!요)", re.IGNORECASE)
_NO_LEAD = re.compile(r"^(?:아니요|아니오|아뇨|아니|no|nope)(?:[\s,.!~]+|$)", re.IGNORECASE)


@dataclass(frozen=True)
class YesNo:
    """A yes/no reading of a reply: ``verdict`` None when it is neither; ``rest`` is what follows."""

    verdict: bool | None
    rest: str = ""


def yes_no(text: str) -> YesNo:
    """Read a reply to a yes/no question, robustly.

    "ㅇㅇ", "네네", "그러세요", "연락 주세요" are yes; "연락하지 마세요", "ㄴㄴ", "no thanks" are no;
    "어" (a filler), "2번 출구" or a question are neither. A verdict followed by more words keeps
    those words in ``rest`` so that the policy can keep them (an extra detail is never lost).
    """
    raw = text.strip()
    core = strip_fillers(raw) or raw
    sq = squash(core)
    if not sq:
        return YesNo(None)
    if _NO_ANYWHERE.search(core):
        return YesNo(False)
    if sq in _YES_WHOLE:
        return YesNo(True)
    if _YES_ANYWHERE.search(core) and not _QUESTION.search(core):
        return YesNo(True)
    if sq in _NO_WHOLE:
        return YesNo(False)
    m = _NO_LEAD.match(core)
    if m:
        return YesNo(False, core[m.end():].strip())
    m = _YES_LEAD.match(core)
    if m and not _QUESTION.search(core):
        return YesNo(True, core[m.end():].strip())
    return YesNo(None)


# --- questions, cancels, pauses, persons ------------------------------------------------------

_QUESTION = re.compile(
    r"\?|？|(나요|까요|가요|ㄴ가요|는지|은지|니까|습니까|어요\s*\?|에요\s*\?|죠\s*\?)\s*$|"
    r"(어떻게|언제|어디서|어디에|어딨|얼마|몇\s*(시|개|장|일|명|번)|무엇|뭐|뭘|왜|되나요|있나요|하나요|돼요\?|"
    r"열어요|해요\?|인가요|할\s*수\s*있)|"
    r"^(what|when|where|how|why|who|which|is|are|do|does|can|could|will|should)\b", re.IGNORECASE)


def is_question(text: str) -> bool:
    """A reply that asks something ("근데 민원실 토요일에도 열어요?", "how much is it")."""
    return bool(_QUESTION.search(text.strip()))


_CANCEL = re.compile(
    r"^(?:취소|그만|됐어요|됐습니다|됐고|됐어|nvm|안\s*할래|안\s*할게|안\s*해요|나중에\s*(?:할게|할래|하겠)|"
    r"다음에\s*(?:할게|할래|하겠)|신고\s*안\s*할|신고\s*취소|접수\s*취소|그만\s*(?:할게|할래|둘게|두겠)|"
    r"필요\s*없어|관둘게|관두|cancel|stop|quit|never\s*mind|nevermind|forget\s*(?:it|about it)|"
    r"i\s*(?:don'?t|do not)\s*want\s*to|no\s*longer|not\s*anymore)"
    r"|(?:안\s*할래요|안\s*할게요|취소(?:할게요|해\s*주세요|해요|할래요)|그만\s*할게요|나중에\s*할게요|"
    r"다음에\s*할게요|관둘래요|필요\s*없어요|(?:신고|접수)?\s*안\s*해도\s*(?:될|돼|되)|할\s*필요\s*없|"
    r"no need to (?:report|file)|(?:i|we)\s*don'?t need to|(?:don'?t|do not) want to (?:report|file|continue|do (?:it|this))|"
    r"\bcancel\b|let'?s\s*(?:stop|not)|"
    r"(?:i'?ll|i\s*will)\s*do\s*it\s*later)", re.IGNORECASE)


def is_cancel(text: str) -> bool:
    """"아 됐어요 안 할래요", "나중에 할게요", "never mind", "stop": the resident gives up the form."""
    core = strip_fillers(text) or text
    return bool(_CANCEL.search(core)) and len(core) <= 80


_PAUSE = re.compile(
    r"^(?:잠깐만요?|잠시만요?|잠깐|잠시만\s*기다려\s*(?:주세요|줘요)?|잠깐\s*기다려\s*(?:주세요|줘요)?|"
    r"잠시\s*(?:만)?\s*(?:요)?|기다려\s*주세요|확인\s*좀\s*해\s*볼게요|찾아\s*볼게요|"
    r"hold on|wait|one (?:sec|second|moment|minute)|just a (?:sec|second|moment|minute)|"
    r"give me a (?:sec|second|moment|minute)|hang on|let me (?:check|see|look))[\s.!~…]*$", re.IGNORECASE)


_PAUSE_LEAD = re.compile(r"^(?:잠깐만요?|잠시만요?|잠깐|잠시만|hold on|wait|one sec(?:ond)?|just a (?:sec|second|moment|minute)|"
                         r"hang on|give me a (?:sec|second|moment|minute))\b[\s,.!~…]*", re.IGNORECASE)
_LOOKING = re.compile(r"(찾아\s*볼게|확인해\s*볼게|볼게요|알아볼게|기다려|물어볼게|a sec|a second|a moment|a minute|let me|"
                      r"check|look|find|ask)", re.IGNORECASE)


def is_pause(text: str) -> bool:
    """"잠깐만요", "잠시만요 주소 좀 찾아볼게요", "hold on a sec": a moment needed; nothing is filled."""
    core = strip_fillers(text) or text
    if _PAUSE.match(core):
        return True
    m = _PAUSE_LEAD.match(core)
    if not m:
        return False
    rest = core[m.end():]
    return not rest or (bool(_LOOKING.search(rest)) and not ROAD_ADDRESS.search(rest) and len(rest) <= 30)


_DONT_KNOW = re.compile(r"(모르겠|몰라요|몰라|잘\s*모름|모름|기억이?\s*안|기억\s*못|확실하지\s*않|"
                        r"i\s*(?:don'?t|do not)\s*know|not\s*sure|no\s*idea|can'?t\s*remember|unsure)",
                        re.IGNORECASE)


def is_dont_know(text: str) -> bool:
    return bool(_DONT_KNOW.search(text)) and len(text) <= 40


_PERSON = re.compile(
    r"(상담원|상담사|담당자|담당\s*부서|담당\s*직원|직원(?:분|이랑|하고|과|와)|사람(?:이랑|하고|과|한테|이)\s*(?:통화|얘기|이야기|연결|상담)|"
    r"직접\s*(?:얘기|이야기|통화|말)|통화\s*(?:하고\s*싶|할\s*수|하고|가능)|연결\s*해\s*주|바꿔\s*주|"
    r"talk to|speak (?:to|with)|real person|human|an agent|\bagent\b|someone from|operator|representative|"
    r"the department directly)", re.IGNORECASE)


_PERSON_STRONG = re.compile(
    r"((연결|바꿔|돌려)\s*(해\s*)?(주|줘|주실|줄\s*수)|(통화|얘기|이야기|말|상담)\s*(좀\s*)?(하고\s*싶|할\s*수\s*있|하려고|할게|할래|원해|드리고\s*싶)|"
    r"직접\s*(얘기|이야기|통화|말)|사람이랑|상담원|상담사|"
    r"talk (?:to|with)|speak (?:to|with)|real person|a human|an agent|connect me|put me through|representative|operator)",
    re.IGNORECASE)


def asks_for_person(text: str, strong: bool = False) -> bool:
    """Words that ask for a person, whatever else the message says (``strong``: unmistakably)."""
    return bool((_PERSON_STRONG if strong else _PERSON).search(text))


_CHANGE_OF_MIND = re.compile(r"(아니다|아니에요|됐어요|그냥|괜찮아요|필요\s*없|never\s*mind|forget it|actually|instead)",
                             re.IGNORECASE)


def changes_mind(text: str) -> bool:
    """"아니다 그냥 여기서 할게요", "never mind": back to the bot."""
    return bool(_CHANGE_OF_MIND.search(text))


# --- corrections ------------------------------------------------------------------------------

_SLOT_WORD = re.compile(
    r"(주소|위치|장소|곳|내용|설명|상황|시간|언제|날짜|때|번호|전화\s*번호|연락처|"
    r"address|location|place|description|details|time|date|when|number|phone)", re.IGNORECASE)
_SLOT_OF = {"주소": "location", "위치": "location", "장소": "location", "곳": "location", "address": "location",
            "location": "location", "place": "location", "내용": "description", "설명": "description",
            "상황": "description", "description": "description", "details": "description", "시간": "when",
            "언제": "when", "날짜": "when", "때": "when", "time": "when", "date": "when", "when": "when",
            "번호": "phone", "전화번호": "phone", "연락처": "phone", "number": "phone", "phone": "phone"}
_CORRECTION_CUE = re.compile(
    r"(잘못|틀렸|틀려|틀린|틀림|아니라|아니고|아니구|말고|바꿔|바꿀|수정|정정|고쳐|고칠|변경|다시\s*말|"
    r"wrong|mistake|change|correct(?:ion)?|update|should be|actually|instead|not\b)", re.IGNORECASE)
# "주소는 한빛로 17", "the address is 5 Main-ro": a slot word with its new value.
_SLOT_IS = re.compile(
    r"(주소|위치|장소|내용|설명|시간|날짜|번호|address|location|place|description|time|date|number)"
    r"\s*(?:는|은|가|이|를|을|:|is|should be|=)\s*(.+)$", re.IGNORECASE)
_CUE_TAIL = re.compile(
    r"^.*(?:잘못\s*(?:말했|썼|적었|입력했|알려\s*드렸)\S*|틀렸\S*|틀려요|틀림|아니라|아니고|아니구|말고|바꿔\s*주세요|바꿀게요|"
    r"수정해\s*주세요|수정할게요|정정할게요|고쳐\s*주세요|변경해\s*주세요|wrong|mistake|should be|is actually|actually|"
    r"change it to|change to)[\s,.!]*", re.IGNORECASE)
_POLITE_TAIL = re.compile(r"\s*(이에요|예요|에요|입니다|이요|요|이라고요|라고요|로 해주세요|으로 해주세요|로 해 주세요|"
                          r"으로 해 주세요|로요|으로요|이고요|고요)?[.!~]*$")


def strip_polite(text: str) -> str:
    """"중앙로 12 앞이요" → "중앙로 12 앞": the value without the sentence ending."""
    return _POLITE_TAIL.sub("", text.strip()).strip() or text.strip()


_APOLOGY = re.compile(r"(죄송|미안|정정|아\s*참|잘못\s*말|sorry|my bad|i mean|oops)", re.IGNORECASE)


@dataclass(frozen=True)
class Correction:
    """"아 잠깐 주소 잘못 말했어요 한빛로 17이에요" → slot ``location``, value ``한빛로 17``.

    ``value`` is empty when the resident only said what was wrong ("아니 내용이 틀렸어요"): the
    policy then asks for that slot again, and never stores "틀렸어".
    """

    slot: str
    value: str


def correction(text: str, at_confirmation: bool, asked: str | None) -> Correction | None:
    """A correction of a slot in natural words, or None.

    Needs a slot word plus a cue ("잘못", "틀렸", "아니라", "바꿔", "wrong", "should be"), or, at the
    confirmation, "아니요 주소는 …"/"주소는 …" alone. An answer to the very slot being asked
    ("주소는 중앙로 12요" at the location question) is an answer, not a correction.
    """
    core = strip_fillers(text) or text
    slot_m = _SLOT_WORD.search(core)
    cue = _CORRECTION_CUE.search(core)
    is_m = _SLOT_IS.search(core)
    address = last_address(core)
    if address and asked != "location" and (_APOLOGY.search(core) or (cue and INSTEAD.search(core))):
        # "아 죄송해요 한빛로 91이에요", "중앙로 50 아니고 52예요" after the location was given.
        after = core[core.rfind(address) + len(address):]
        return Correction("location", strip_polite(address + landmark_tail(after)))
    if not slot_m:
        return None
    slot = _SLOT_OF.get(re.sub(r"\s+", "", slot_m.group(1).lower()))
    if slot is None:
        return None
    if not cue and not (is_m and (at_confirmation or _NO_LEAD.match(core))):
        return None
    if not cue and slot == asked:
        return None
    value = ""
    address = last_address(core) if slot == "location" else None
    phone = PHONE.search(core) if slot == "phone" else None
    if address:
        after = core[core.find(address) + len(address):]
        value = address + landmark_tail(after)
    elif phone:
        value = phone.group(0)
    elif cue and _CUE_TAIL.match(core) and _CUE_TAIL.sub("", core, count=1).strip():
        value = _CUE_TAIL.sub("", core, count=1)
    elif is_m and not _CORRECTION_CUE.fullmatch(is_m.group(2).strip()):
        value = is_m.group(2)
    value = strip_polite(value)
    left = squash(_CORRECTION_CUE.sub("", value))
    if len(left) < 2 or re.fullmatch(r"(었|어|요|네|다|됐|되었|습니다|거든|같아)+", left):
        value = ""  # only the complaint ("틀렸어요"), no new value
    return Correction(slot, value[:300])


# --- slot values ------------------------------------------------------------------------------

_LANDMARK = re.compile(
    r"(앞|옆|뒤|근처|건너편|맞은편|사이|입구|출구|정문|후문|골목|모퉁이|코너|사거리|삼거리|오거리|교차로|횡단보도|육교|"
    r"다리|터널|역|정류장|버스정류장|아파트|빌라|빌딩|건물|상가|시장|마트|편의점|학교|초등학교|중학교|고등학교|공원|놀이터|"
    r"주차장|주민센터|구청|병원|약국|은행|교회|성당|카페|식당|주유소|번지|번길|\d+\s*동|\d+\s*호|\d+\s*층|로\s*\d|길\s*\d|"
    r"[가-힣]+동(?:\s|$)|[가-힣]+로(?:\s|$)|[가-힣]+길(?:\s|$)|"
    r"\bnear\b|in front of|opposite|across from|next to|corner|intersection|station|exit|street|road|\bro\b|-ro|-gil|"
    r"-dong|apartment|\bapt\b|building|park|school|market|bus stop|crossing|outside|behind|beside|by the|bakery|shop|"
    r"store|cafe|restaurant|church|bank|pharmacy|hospital|playground|alley|entrance|gate)", re.IGNORECASE)


def longest(rx: re.Pattern[str], text: str) -> str | None:
    """The longest match of ``rx`` in ``text`` ("중앙로 100", never just "중앙로")."""
    best = None
    for m in rx.finditer(text):
        v = m.group(0).strip()
        if best is None or len(v) > len(best):
            best = v
    return best


INSTEAD = re.compile(r"(?:아니고|아니라|말고|이\s*아니라|가\s*아니라|not\b)", re.IGNORECASE)


def last_address(text: str) -> str | None:
    """The address a resident settles on: "중앙로 50 아니고 중앙로 52예요" → "중앙로 52";
    "it's 52 Jungang-ro, not 50" → "52 Jungang-ro"."""
    english_not = re.search(r"[,;]?\s+not\s+\d", text)
    if english_not:
        text = text[:english_not.start()]
        return longest(EN_ADDRESS, text) or longest(ROAD_ADDRESS, text)
    cuts = [m.end() for m in INSTEAD.finditer(text)]
    tail = text[cuts[-1]:] if cuts else text
    return longest(ROAD_ADDRESS, tail) or longest(EN_ADDRESS, tail) or longest(ROAD_ADDRESS, text) or longest(EN_ADDRESS, text)


def landmark_tail(after: str) -> str:
    """" 앞이요" → " 앞": a landmark word right after an address belongs to it."""
    m = re.match(r"\s*(앞|옆|뒤|근처|건너편|맞은편|입구|사거리)", after)
    return f" {m.group(1)}" if m else ""


def looks_like_place(text: str) -> bool:
    """Something a resident would give as a location: an address, a landmark, a street word."""
    return bool(ROAD_ADDRESS.search(text) or _LANDMARK.search(text))


_CLAUSE = re.compile(r"(?:,\s*|\.\s+|(?<=[가-힣])(?:인데|는데|은데|이고|구요|고요)\s+|\s+and\s+|\s+but\s+)")


def split_location(text: str, address: str | None) -> tuple[str, str]:
    """A location answer → (the place, extra details said with it).

    "중앙로 12 앞인데 구멍이 엄청 커요" → ("중앙로 12 앞", "구멍이 엄청 커요"): the place is every
    clause that says where ("21 Jungang-ro, outside the bakery" stays whole); the rest is kept for
    the description.
    """
    parts = [p.strip() for p in _CLAUSE.split(text.strip()) if p and p.strip()]
    if len(parts) <= 1:
        return strip_polite(text), ""
    where = [i for i, p in enumerate(parts) if (address and address in p) or looks_like_place(p)] or [0]
    place = strip_polite(", ".join(parts[i] for i in where))
    rest = " ".join(p for i, p in enumerate(parts) if i not in where)
    return place, rest.strip()


_VAGUE_WHEN = re.compile(r"^(계속|매일|늘|항상|자주|요즘|밤|새벽|아침|저녁|낮|every ?day|every ?night|always|often|at night)$",
                         re.IGNORECASE)
_TIME_WORD = re.compile(
    r"(\d|오늘|어제|그제|그저께|엊그제|내일|모레|글피|지난|이번|다음\s*주|아까|방금|며칠|전부터|부터|쯤|경|째|요즘|최근|"
    r"새벽|아침|오전|오후|점심|저녁|밤|주말|평일|월요일|화요일|수요일|목요일|금요일|토요일|일요일|한\s*시간|두\s*시간|"
    r"한\s*달|일주일|계속|매일|today|yesterday|tomorrow|morning|afternoon|evening|night|ago|since|last|this|"
    r"next|week|month|monday|tuesday|wednesday|thursday|friday|saturday|sunday|hour|minute|now|earlier)", re.IGNORECASE)


def time_expression(entities: list[dict[str, object]]) -> str | None:
    """The first real time expression among ``when`` entities (not "계속", "매일", a bare "밤")."""
    for e in entities:
        if e.get("entity") == "when":
            v = str(e.get("value", "")).strip()
            if v and not _VAGUE_WHEN.match(v):
                return v
    return None


def looks_like_time(text: str) -> bool:
    """A reply to "when?" that talks about time ("사흘 전부터", "last night", "매일 밤")."""
    return bool(_TIME_WORD.search(text) or WHEN.search(text))


def phone_number(text: str) -> str | None:
    """A Korean phone number in the text, formatted 010-1234-5678, or None."""
    m = PHONE.search(text.replace("‐", "-").replace("–", "-"))
    if not m:
        return None
    area = m.group(1)
    prefix = area if area.startswith("0") else "0" + area
    return f"{prefix}-{m.group(2)}-{m.group(3)}"


# --- emergencies ------------------------------------------------------------------------------

_EMERGENCY = re.compile(
    r"(불이\s*(났|붙|번지)(?!던)|불났(?!던)|불길|불이\s*붙|타고\s*있어|화재(?!\s*(보험|경보기|예방|안전|감지기|대피\s*훈련|훈련|신고\s*방법))|"
    r"연기가\s*(많이|가득|나|자욱|올라)|타는\s*냄새|일산화탄소|보일러.{0,25}(머리가|두통|어지러)|머리가\s*깨질\s*듯.{0,15}어지러|"
    r"(하천|강|물|바다|저수지|호수|개울|계곡|수영장)\S{0,3}\s*빠(졌|져)|입술이\s*파래|"
    r"말이\s*어눌|한쪽\s*(팔|다리|얼굴|몸)\S{0,2}\s*(을|이|를|가)?\s*(못|마비|안)|"
    r"(사람|아버지|어머니|엄마|아빠|할머니|할아버지|아이|애|남편|아내|친구|동생|형|누나|언니|오빠)\S{0,3}\s*(이|가|께서)?\s*.{0,20}쓰러(졌|지셨|져)|"
    r"(?<!나무가\s)(?<!나무가)(?<!수가\s)(?<!대가\s)(?<!판이\s)쓰러(지셨어|지셨습니다|져\s*있는\s*사람|져서\s*(안|못))|"
    r"사람이\s*쓰러|쓰러진\s*사람|가슴을?\s*(움켜|부여|쥐고)|가슴\s*통증|불남|연기\S{0,2}\s.{0,12}(올라|가득|차\s*있|자욱)|못\s*내려(와|가|옴)|"
    r"숨을?\s*(잘\s*)?(안|못)\s*쉬|숨이\s*(안|막혀|멎)|호흡이\s*(없|멈)|의식이\s*없|심정지|심장\s*마비|경련|발작|"
    r"피(를|가)?\s*(많이|철철)|피투성이|칼(을|로)|흉기|살려\s*주|살려줘|폭발|터졌어요.*(가스|보일러)|"
    r"가스\S{0,2}\s*(가|이)?\s*(새|누출|냄새)|물에\s*빠졌|갇혔|깔렸|자살|죽고\s*싶|목숨을|뛰어내리|"
    r"넘어져서?\s*(못|일어나지\s*못|안)\s*(일어나|움직)|못\s*일어나|(머리|크게)\s*다쳐|"
    r"응급(?!실\s*(있는|어디|위치|찾|알려|가까운)|\s*상황\s*(은|이)?\s*아니|\s*아니|의료|실이|\s*호출기|\s*안전\s*(안심|알림))|"
    r"구급차\s*(좀|불러|보내|와|필요|빨리)|구급차(?!\s*(사이렌|소리|소음))|"
    r"\bfire\b(?!\s*(insurance|drill|alarm|safety|extinguisher|station|department|hydrant|exit|escape|inspection|lane|door|code|regulation))|on fire|"
    r"grabbed (?:his|her|their|my) chest|fell to the floor|won'?t (?:answer|wake up|respond)|unresponsive|not responding|"
    r"breaking into|broke into|break-?in|intruder|burglar|someone is (?:in|inside) my (?:house|home|apartment)|"
    r"(?:there'?s|thick|black|lots of|full of|see|smell(?:s|ing)?)\s+smoke|smoke\s+(?:coming|everywhere|is\s+coming|from)|not breathing|can'?t breathe|"
    r"unconscious|heart attack|clutching (?:his|her|their|my) chest|chest pain|bleeding (?:a lot|heavily|badly)|"
    r"\bbleeding\b|help me(?!\s+(?:find|with|get|to|know|understand|pay|apply|check|report|file|make|book|fill|register|please))|"
    r"help!|\btrapped\b|"
    r"drowning|gas (?:leak|smell)|smells? (?:like |of )?gas|smelling gas|가스\s*leak|fell into (?:the )?(?:river|water|stream|lake|sea|pool|canal)|"
    r"\bsmoke\s*(?:가|이)\s|explosion|\bknife\b|\bgun\b|call an ambulance|need an ambulance|"
    r"suicide|kill myself|collapsed|fell and can'?t get up|can'?t get up|overdose|stroke|seizure)",
    re.IGNORECASE)
_NOT_EMERGENCY = re.compile(
    r"(응급\s*상황\s*(은|이)?\s*아니|긴급\s*(한\s*건|상황)?\s*(은|이)?\s*아니|급한\s*(건|거)\s*아니|위급\s*(하지|한\s*건)\s*않|"
    r"not an emergency|not urgent|no emergency|isn'?t an emergency|it'?s not urgent|"
    r"(소음|시끄러워|더워|추워|배고파|피곤|힘들어|짜증|답답해|심심해|웃겨)\S*\s*.{0,12}죽(을|겠)|"
    r"(죽겠어요|죽을\s*것\s*같아요)\s*$)", re.IGNORECASE)


def looks_like_emergency(text: str) -> bool:
    """Words that mean a life may be at stake, unless the words deny it.

    A false alarm is cheaper than a miss, but not free: "소음 때문에 죽을 것 같아요", "화재보험",
    "응급실 있는 병원", "구급차 사이렌 소음", "help me find the passport office" and "응급상황
    아니고요" used to start the emergency script.
    """
    if _NOT_EMERGENCY.search(text) and not re.search(
            r"(불이|불났|연기|쓰러|숨을|숨이|의식|피를|피가|칼|흉기|가스|자살|죽고\s*싶|fire|smoke|breath|unconscious|"
            r"bleed|gas|suicide)", text, re.IGNORECASE):
        return False
    return bool(_EMERGENCY.search(text))


def denies_emergency(text: str) -> bool:
    """"아니 응급상황 아니고요", "not an emergency"."""
    return bool(_NOT_EMERGENCY.search(text)) and not _EMERGENCY.search(re.sub(r"응급\s*상황|긴급|emergency", "", text))


_KINDS = (
    ("gas", re.compile(r"가스|gas|냄새.*(새|누출)|일산화탄소|보일러|carbon monoxide", re.IGNORECASE)),
    ("fire", re.compile(r"불이|불났|불길|화재|연기|타는|폭발|fire|smoke|burn|explosion", re.IGNORECASE)),
    ("flood", re.compile(r"물에\s*빠|(하천|강|바다|저수지|호수|개울|계곡)\S{0,3}\s*빠|침수|물이\s*(차|넘)|홍수|떠내려|flood|drown", re.IGNORECASE)),
    ("collapse", re.compile(r"붕괴|무너|깔렸|갇혔|collapse(?!d\b)|trapped|cave", re.IGNORECASE)),
    ("crime", re.compile(r"칼|흉기|폭행|때려|강도|도둑|납치|위협|스토킹|knife|gun|attack|robbery|threat|stalk|breaking into|"
                         r"broke into|break-?in|intruder|burglar",
                         re.IGNORECASE)),
    ("suicide", re.compile(r"자살|죽고\s*싶|목숨|뛰어내리|suicide|kill myself|end my life", re.IGNORECASE)),
    ("medical", re.compile(r"쓰러|숨|의식|심장|가슴|피|경련|발작|넘어져|넘어지|일어나|다쳐|어눌|마비|입술|breath|unconscious|heart|chest|"
                           r"bleed|seizure|stroke|collapsed|get up|overdose|ambulance|구급", re.IGNORECASE)),
)


def emergency_kind(text: str) -> str:
    """Which safety advice fits: gas, fire, flood, collapse, crime, suicide, medical (or general)."""
    for kind, rx in _KINDS:
        if rx.search(text):
            return kind
    return "general"


_CALL_ME = re.compile(r"(으?로|번호로|에)?\s*(연락|전화|콜백)\s*(주세요|줘요|해\s*주세요|부탁(해요|드려요|드립니다)?|주시면\s*돼요)[.!]?|"
                      r"(please\s*)?call\s*me(\s*(back|at|on))?|my number is|number is|\bat\b|\bon\b", re.IGNORECASE)


def words_besides_number(text: str) -> str:
    """"010-4444-5555로 연락 주세요 보도블록 깨진 거 문의예요" → "보도블록 깨진 거 문의예요"."""
    rest = PHONE.sub(" ", text.replace("‐", "-").replace("–", "-"))
    rest = _CALL_ME.sub(" ", rest)
    rest = re.sub(r"^\s*(네|예|yes|ok|okay)\b[\s,.]*", " ", rest.strip(), flags=re.IGNORECASE)
    rest = re.sub(r"\s+", " ", rest).strip(" ,.")
    return rest if len(squash(rest)) >= 6 else ""


_DANGER_HINT = re.compile(r"(불|연기|가스|숨|피|쓰러|다쳐|다친|위험|살려|급해|빨리|119|112|구급|넘어|무너|갇|빠졌|터졌|"
                          r"fire|smoke|gas|breath|blood|hurt|injur|help|urgent|hurry|collaps|trapped|ambulance)", re.IGNORECASE)
_INFO_ASK = re.compile(r"(보험|문의|insurance|응급실|emergency room|\ber\b|병원\s*(알려|어디|찾|있)|언제|철거|교육|설치|점검|지원|신청|"
                       r"작년|예전|지난\s*(해|달)|course|training|class|subsid|install|last year)", re.IGNORECASE)


def classifier_emergency_stands(text: str, confidence: float, confident: float) -> bool:
    """Whether the classifier's ``conv.emergency``, with none of the danger words behind it, stands.

    It stands unless the words deny danger, ask for information (insurance, the nearest ER, a
    fire that was last year), or are a few words with no hint of danger at low confidence.
    """
    if denies_emergency(text) or _INFO_ASK.search(text):
        return False
    return confidence >= confident or bool(_DANGER_HINT.search(text)) or len(text.replace(" ", "")) > 8
