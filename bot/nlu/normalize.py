"""Text clean-up before NLU: Unicode form, control characters, spoken numbers.

Residents write with compatibility characters, stray control codes and (on the
phone) numbers read out as words. Everything downstream sees one clean form.
"""

from __future__ import annotations

import re
import unicodedata

MAX_NLU_CHARS = 1000  # the classifier only needs the start of a very long message

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SPACES = re.compile(r"\s+")
#: NFKC turns compatibility jamo (ㅇ, U+3147) into conjoining jamo (ᄋ, U+110B), so "ㅇㅇ"/"ㅇㅋ"
#: stopped matching anything; a lone conjoining jamo left after NFKC goes back to its compatibility form.
_JAMO_BACK = {ord(unicodedata.normalize("NFKC", chr(c))): chr(c) for c in range(0x3131, 0x318F)
              if unicodedata.normalize("NFKC", chr(c)) != chr(c) and len(unicodedata.normalize("NFKC", chr(c))) == 1}

_KO_DIGITS = {"공": "0", "영": "0", "빵": "0", "일": "1", "이": "2", "삼": "3", "사": "4", "오": "5",
              "육": "6", "륙": "6", "칠": "7", "팔": "8", "구": "9"}
_EN_DIGITS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
              "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_SEPARATORS_KO = {"다시", "에", "의", "하이픈", "대시", "-"}
_SEPARATORS_EN = {"dash", "hyphen", "-"}
_KO_WORD = re.compile(r"^[공영빵일이삼사오육륙칠팔구]+$")
_MIN_SPOKEN_DIGITS = 4  # shorter runs are ordinary words (일이, 사이, 오이 ...)


def clean(text: str) -> str:
    """NFKC, no control or bidi-override characters, single spaces, trimmed."""
    text = unicodedata.normalize("NFKC", text).translate(_JAMO_BACK)
    text = _CONTROL.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _digits_of(token: str) -> str | None:
    low = token.lower()
    if _KO_WORD.match(token):
        return "".join(_KO_DIGITS[c] for c in token)
    if low in _EN_DIGITS and low != "o":
        return _EN_DIGITS[low]
    if low.isdigit():
        return low
    return None


def spoken_numbers_to_digits(text: str) -> str:
    """Turn digit-by-digit speech into digits: "이공이육 다시 공공공 팔칠일" → "2026-000871".

    Only runs of at least four spoken digits are rewritten, so that ordinary words
    made of the same syllables ("일이 많아요", "사이") stay as they are. "다시" and
    "dash" inside a run become a hyphen, as people say them in ticket numbers.
    """
    tokens = text.split(" ")
    out: list[str] = []
    i = 0
    while i < len(tokens):
        run: list[str] = []
        j = i
        spoken = 0
        while j < len(tokens):
            tok = tokens[j]
            digits = _digits_of(tok)
            if digits is not None:
                if not tok.isdigit():
                    spoken += len(digits)
                run.append(digits)
                j += 1
                continue
            if run and tok.lower() in (_SEPARATORS_KO | _SEPARATORS_EN) and j + 1 < len(tokens) \
                    and _digits_of(tokens[j + 1]) is not None:
                run.append("-")
                j += 1
                continue
            break
        total = sum(len(r) for r in run if r != "-")
        if run and spoken > 0 and total >= _MIN_SPOKEN_DIGITS:
            out.append("".join(run))
            i = j
        else:
            out.append(tokens[i])
            i += 1
    return " ".join(out)


_SINO_UNITS = {"일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "륙": 6, "칠": 7, "팔": 8, "구": 9}
_SINO_POWERS = {"십": 10, "백": 100, "천": 1000}
#: A Sino-Korean numeral right after a road or lot word ("한빛로 이십일", "중앙로 백이십삼 번지").
_SINO_AFTER_PLACE = re.compile(r"((?:[가-힣]+(?:로|길|번길|동)|번지|번)\s+)([일이삼사오육륙칠팔구십백천]+)"
                               r"(?=$|[\s,.!?~]|[앞옆뒤에요번호의쯤근건맞])")


def _sino_prefix(word: str) -> tuple[int, int] | None:
    """The value and length of the longest Sino-Korean numeral that starts ``word`` ("십칠이요" → 17, 2)."""
    best: tuple[int, int] | None = None
    total, unit, i = 0, 0, 0
    last_power = 10_000
    while i < len(word):
        ch = word[i]
        if ch in _SINO_UNITS and unit == 0:
            unit = _SINO_UNITS[ch]
        elif ch in _SINO_POWERS and _SINO_POWERS[ch] < last_power:
            total += (unit or 1) * _SINO_POWERS[ch]
            last_power, unit = _SINO_POWERS[ch], 0
        else:
            break
        i += 1
        value = total + unit
        # A lone syllable is a number only before a power ("이십") or when nothing else follows.
        if value and (i > 1 or i == len(word) or word[i:i + 1] in _SINO_POWERS):
            best = (value, i)
    return best


def sino_numbers_to_digits(text: str) -> str:
    """Spoken house numbers as digits: "한빛로 이십일 앞" → "한빛로 21 앞" (only after a road/lot word)."""
    def repl(m: re.Match[str]) -> str:
        word = m.group(2)
        found = _sino_prefix(word)
        if found is None or (found[1] == 1 and found[1] < len(word)):
            return m.group(0)
        value, n = found
        return f"{m.group(1)}{value}{word[n:]}"
    return _SINO_AFTER_PLACE.sub(repl, text)


def normalize(text: str) -> str:
    """The form NLU works on: cleaned, spoken digits as digits, cut to a sane length."""
    return sino_numbers_to_digits(spoken_numbers_to_digits(clean(text)[:MAX_NLU_CHARS]))


# --- fillers ------------------------------------------------------------------------------------

#: Hesitations and call openers residents (and speech recognisers) put around the real words:
#: "여보세요 저기 그 뭐냐 …", "um so …". They carry no topic and no intent. One list for the
#: dialogue (``strip_fillers``: the start of a reply, so "어 네 맞아요" reads as yes) and the
#: knowledge base (``strip_fillers(..., anywhere=True)`` with :data:`OPENERS` too).
HESITATIONS = (
    "여보세요", "저기요", "저기", "저", "아+", "어+", "음+", "엄", "흠+", "그", "그게", "그러니까", "그니까",
    "아\\s*참", "참", "근데", "그\\s*뭐냐", "뭐냐", "뭐더라", "있잖아요", "있잖아",
    "um+", "uh+", "er+", "erm", "hmm+", "well", "oh", "so", "ok so", "hello", "hi", "hey")
#: Polite openers and topicless asides: words with a meaning in the dialogue (네 is a yes,
#: 안녕하세요 a greeting) that a question to the knowledge base does not need.
OPENERS = (
    "안녕하세요", "수고하십니다", "수고하세요", "실례합니다", "혹시", "네", "예", "제가", "저는", "좀",
    "궁금한\\s?게\\s?있는데요?", "뭐\\s?하나\\s?물어볼게요", "뭐\\s?좀\\s?물어보려고요", "문의\\s?좀\\s?드릴게요",
    "좋은\\s?아침(?:이에요|입니다)?", "excuse me", "sorry", "quick question", "i have a question",
    "good (?:morning|afternoon|evening)")
_LEAD = re.compile(rf"^(?:(?:{'|'.join(HESITATIONS)})[\s,.!~…]+)+", re.IGNORECASE)
_ANYWHERE = re.compile(rf"(?:^|(?<=\s))(?:{'|'.join(HESITATIONS + OPENERS)})(?=[\s,.!?]|$)[\s,.!]*",
                       re.IGNORECASE)


def strip_fillers(text: str, *, anywhere: bool = False) -> str:
    """Fillers off: "아 네 됐어요" → "네 됐어요" (leading hesitations only, the dialogue's reading);
    with ``anywhere`` hesitations and openers go wherever they stand ("여보세요 저 혹시 여권 …" →
    "여권 …", the knowledge base's), and the text itself comes back if nothing is left."""
    if not anywhere:
        return _LEAD.sub("", text.strip()).strip()
    stripped = _ANYWHERE.sub(" ", text).strip()
    return _SPACES.sub(" ", stripped) if len(stripped) >= 2 else text
