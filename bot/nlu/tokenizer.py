"""A spaCy tokenizer built on kiwipiepy's Korean morpheme analysis.

Korean glues particles and endings to words ("가로등이", "나갔어요") and residents
drop spaces ("쓰레기언제버려요"); whitespace tokenisation sees neither. Kiwi
splits text into morphemes, which is what the classifier and the entity
patterns need. Each token's text is the morpheme form, its ``tag_`` the Sejong
tag. Registered under ``pcrm.KiwiTokenizer.v1`` so a saved pipeline loads.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import spacy
from kiwipiepy import Kiwi
from spacy.tokens import Doc
from spacy.vocab import Vocab

_kiwi_lock = threading.Lock()


@lru_cache(maxsize=1)
def kiwi() -> Kiwi:
    """One Kiwi per process: loading its model takes about a second."""
    return Kiwi()


class KiwiTokenizer:
    """Callable spaCy tokenizer: text in, a Doc of morphemes out."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(self, text: str) -> Doc:
        with _kiwi_lock:  # Kiwi objects are not documented as thread-safe
            tokens = kiwi().tokenize(text)
        words: list[str] = []
        spaces: list[bool] = []
        tags: list[str] = []
        for i, tok in enumerate(tokens):
            form = tok.form.strip()
            if not form:
                continue
            words.append(form)
            tags.append(tok.tag)
            end = tok.start + tok.len
            nxt = tokens[i + 1].start if i + 1 < len(tokens) else end
            spaces.append(nxt > end)
        doc = Doc(self.vocab, words=words, spaces=spaces)
        for token, tag in zip(doc, tags, strict=True):
            token.tag_ = tag
        return doc

    # spaCy calls these when saving and loading a pipeline; Kiwi has no state to keep.
    def to_bytes(self, **_: object) -> bytes:
        return b""

    def from_bytes(self, _data: bytes, **_: object) -> KiwiTokenizer:
        return self

    def to_disk(self, _path: object, **_: object) -> None:
        return None

    def from_disk(self, _path: object, **_: object) -> KiwiTokenizer:
        return self


@spacy.registry.tokenizers("pcrm.KiwiTokenizer.v1")
def create_kiwi_tokenizer():  # noqa: ANN201 - spaCy's factory protocol
    """Factory spaCy resolves from ``[nlp.tokenizer] @tokenizers = "pcrm.KiwiTokenizer.v1"``."""

    def make(nlp: spacy.Language) -> KiwiTokenizer:
        return KiwiTokenizer(nlp.vocab)

    return make
