"""A spaCy tokenizer built on kiwipiepy's Korean morpheme analysis.

Korean glues particles and endings to words ("가로등이", "나갔어요") and residents
drop spaces ("쓰레기언제버려요"); whitespace tokenisation sees neither. Kiwi
splits text into morphemes, which is what the classifier and the entity
patterns need. Each token's text is the morpheme form, its ``tag_`` the Sejong
tag. Registered under ``pcrm.KiwiTokenizer.v1`` (:func:`register`) so a saved pipeline loads.

Serving does not import spaCy (:mod:`bot.nlu.lean`): :func:`morphemes` gives the words and
spaces a Doc would hold, and spaCy is imported only to train or to load a pipeline.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from kiwipiepy import Kiwi

from bot.nlu.kiwi_words import WORDS_FILE

if TYPE_CHECKING:
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

_kiwi_lock = threading.Lock()
#: Kiwi's constructor arguments (:func:`kiwi` says why each).
_OPTIONS: dict[str, Any] = {"num_workers": 0, "load_multi_dict": False, "load_default_dict": False}


@lru_cache(maxsize=1)
def kiwi() -> Kiwi:
    """One Kiwi per process (``pcrm serve --workers N``: one for all, loaded before the fork).

    * ``load_multi_dict=False``: Kiwi's multi-word dictionary (WikiData proper names) cost much
      memory and start-up time (README, "Memory and start-up") and tokenizes every training and
      held-out message exactly as without it, so the model and its accuracy are unchanged.
    * ``load_default_dict=False`` and :data:`bot.nlu.kiwi_words.WORDS_FILE` instead: the few
      hundred of its 113,000 proper nouns that our texts use, the same tokens for every one of
      them at ≈ 0.5 CPU s less start-up (:mod:`bot.nlu.kiwi_words` says why and how).
    * ``model_type``: ``kiwipiepy_model`` ships only the CoNg model ('cong', the default; 'knlm'
      and 'sbg' files are not in it), so there is no smaller one to choose.
    * ``num_workers=0``: no thread pool of its own (one call per message needs none), so no
      threads exist when the supervisor forks: a worker never waits on a thread it lacks.
    """
    with warnings.catch_warnings():  # kiwipiepy warns that 0 means "one thread" since 0.21: we mean it
        warnings.simplefilter("ignore", DeprecationWarning)
        analyser = Kiwi(**_OPTIONS)
    analyser.load_user_dictionary(str(WORDS_FILE))
    return analyser


def version() -> str:
    """What decides the tokens besides the text (Kiwi's options and its dictionary file): part of
    the NLU model's and the knowledge index's cache keys, so that changing either rebuilds both."""
    h = hashlib.sha256(repr(sorted(_OPTIONS.items())).encode())
    h.update(WORDS_FILE.read_bytes())
    return h.hexdigest()[:16]


def morphemes(text: str) -> tuple[list[str], list[bool], list[str]]:
    """The morphemes of ``text`` as a Doc holds them: forms, whether a space follows, Sejong tags."""
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
    return words, spaces, tags


class KiwiTokenizer:
    """Callable spaCy tokenizer: text in, a Doc of morphemes out."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(self, text: str) -> Doc:
        from spacy.tokens import Doc

        words, spaces, tags = morphemes(text)
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


def create_kiwi_tokenizer():  # noqa: ANN201 - spaCy's factory protocol
    """Factory spaCy resolves from ``[nlp.tokenizer] @tokenizers = "pcrm.KiwiTokenizer.v1"``."""

    def make(nlp: Any) -> KiwiTokenizer:
        return KiwiTokenizer(nlp.vocab)

    return make


@lru_cache(maxsize=1)
def register() -> None:
    """Register the tokenizer with spaCy (imports spaCy: call it before building or loading a pipeline)."""
    import spacy

    spacy.registry.tokenizers("pcrm.KiwiTokenizer.v1", func=create_kiwi_tokenizer)
