"""Kiwi loads only the part of its default dictionary our texts use (``bot/nlu/kiwi_words.py``),
and tokenizes every one of those texts exactly as it would with the whole dictionary."""

from __future__ import annotations

import warnings

from kiwipiepy import Kiwi

from bot.nlu import kiwi_words, tokenizer


def _entries(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_words_file_holds_every_default_entry_our_texts_use() -> None:
    """Fails when data added since the file was written uses a word it lacks: regenerate it with
    ``python -m bot.nlu.kiwi_words``."""
    wanted = kiwi_words.used_entries(kiwi_words.corpus_texts(), kiwi_words.default_dictionary())
    have = _entries(kiwi_words.WORDS_FILE.read_text(encoding="utf-8"))
    assert sorted(wanted) == sorted(have), "run `python -m bot.nlu.kiwi_words`"


def test_our_texts_tokenize_as_with_kiwis_whole_default_dictionary() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        whole = Kiwi(num_workers=0, load_multi_dict=False)
    ours = tokenizer.kiwi()
    differ = []
    for text in kiwi_words.corpus_texts():
        a = [(t.form, t.tag, t.start, t.len) for t in whole.tokenize(text)]
        b = [(t.form, t.tag, t.start, t.len) for t in ours.tokenize(text)]
        if a != b:
            differ.append(text)
    assert differ == []


def test_a_proper_noun_of_our_texts_stays_one_word() -> None:
    """국민신문고 is in the default dictionary, not in Kiwi's model: without our file it splits
    (국민 + 신문고)."""
    tokens = [(t.form, t.tag) for t in tokenizer.kiwi().tokenize("국민신문고에 올렸어요")]
    assert tokens[0] == ("국민신문고", "NNP")


def test_the_tokenizer_version_names_the_dictionary_file() -> None:
    """The NLU model's and the KB index's cache keys change with the file (both rebuild)."""
    assert len(tokenizer.version()) == 16
    assert "국민신문고\tNNP" in kiwi_words.WORDS_FILE.read_text(encoding="utf-8")
