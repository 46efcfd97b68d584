"""Which language a resident writes in, and which one a conversation is answered in.

:func:`detect` reads one text: Korean unless it is plainly English.
:func:`conversation_lang` is the conversation's rule on top of it, shared by our
engine and by the Rasa project ``pcrm export rasa`` writes (its ``lang`` slot is
filled by ``actions/language.py`` with the same function).
"""

from __future__ import annotations

import re

_MARKUP = re.compile(r"<[^>]*>|https?://\S+|[\w.+-]+@[\w-]+\.[\w.]+")
_HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e\u1100-\u11ff]")  # syllables, compatibility jamo, jamo
_LATIN = re.compile(r"[a-zA-Z]")
#: Hangul for the conversation rule: syllables and compatibility jamo (conjoining jamo, which
#: NFKC composes into syllables when they form one, are left to :func:`detect`).
_HANGUL_TEXT = re.compile("[\uac00-\ud7a3\u3131-\u318e]")
_WORDS = re.compile(r"[A-Za-z]{2,}")


def detect(text: str, default: str = "ko") -> str:
    """``ko`` or ``en`` by script: any Hangul syllable or jamo means Korean.

    Script counting is all this product needs (Korean first, English for foreign
    residents); it is exact and takes microseconds, unlike a statistical model.
    Two regex searches instead of a Python loop over the characters: this runs on
    every message.
    """
    text = _MARKUP.sub(" ", text)  # tags, links and e-mail addresses say nothing about language
    if _HANGUL.search(text):
        return "ko"
    first = _LATIN.search(text)
    if first and _LATIN.search(text, first.end()):
        return "en"
    return default


def conversation_lang(text: str, detected: str, previous: str, hint: str | None, first_message: bool) -> str:
    """The language to answer in: sticky, so "ok", a button payload or a URL does not flip it.

    ``text`` is the normalised message (empty if there is nothing to read), ``detected``
    what :func:`detect` made of it (with ``hint or previous`` as its default),
    ``previous`` the conversation's language so far, ``hint`` the channel's language if
    it gives one. Any Hangul means Korean. A Korean conversation turns English only on a
    message of at least two English words; a first message follows the channel's hint.
    """
    if _HANGUL_TEXT.search(text):
        return "ko"
    if text.startswith("/") or not text:
        return (hint or previous) if first_message else previous
    if detected == "en" and not first_message and previous == "ko":
        return "en" if len(_WORDS.findall(text)) >= 2 else "ko"
    if first_message and hint and detected != "en":
        return hint
    return detected
