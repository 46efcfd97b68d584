"""``NLU.parse``'s fast paths give what scikit-learn and spaCy give, number for number.

The character model is scored by hand (``CharScorer``) instead of ``Pipeline.predict_proba``,
spaCy's pipes are called without ``Language.__call__``, the language check and the entity
patterns skip work that cannot change their answer. Each is compared here with the plain
library call (or the former loop) on every held-out message.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.nlu import data as nlu_data
from bot.nlu import entities as ent
from bot.nlu.language import _MARKUP, detect
from bot.nlu.model import NLU, SPACY_WEIGHT, CharScorer, _char_text, ensure_model
from bot.nlu.normalize import normalize
from bot.settings import ROOT, get_settings

HELDOUT_LINES = (ROOT / "bench" / "heldout.jsonl").read_text(encoding="utf-8").splitlines()
HELDOUT = [json.loads(line)["text"] for line in HELDOUT_LINES if line.strip()]
FUZZ_ALPHABET = "가나다동로길역앞 ㄱㅏㅠ abcXYZ 0123٣ <>@.-/:,"


@pytest.fixture(scope="module")
def nlu() -> NLU:
    settings = get_settings()
    return NLU(ensure_model(settings.pcrm_nlu_dir / "nlu", settings.pcrm_model_dir))


@pytest.fixture(scope="module")
def training_texts() -> list[str]:
    return [normalize(t) for t, _ in nlu_data.load(get_settings().pcrm_nlu_dir / "nlu").examples]


def _fuzz(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(n)]


def _reference_parse(nlu: NLU, text: str) -> tuple[str, float, list[tuple[str, float]], list[dict[str, Any]]]:
    """``parse`` as it was: ``nlp(text)``, ``Pipeline.predict_proba``, a per-label loop, every pattern."""
    norm = normalize(text)
    doc = nlu.nlp(norm)
    char_probs = nlu.char_model.predict_proba([_char_text(norm)])[0]
    scores = {}
    for label, p in zip(nlu.labels, char_probs, strict=True):
        scores[label] = (1 - SPACY_WEIGHT) * float(p) + SPACY_WEIGHT * float(doc.cats.get(label, 0.0))
    ranking = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:5]
    ruler = [{"entity": e.label_, "value": nlu.synonyms.get(e.text, e.text), "start": e.start_char,
              "end": e.end_char, "extractor": "entity_ruler"} for e in doc.ents]
    entities = ent.merge(ent._extract(norm, digits=True), ruler)
    return ranking[0][0], ranking[0][1], ranking, entities


def test_the_trained_character_model_is_hand_scored(nlu: NLU) -> None:
    assert nlu.char_scorer.by_hand, "the fitted pipeline fell back to predict_proba: the fast path is off"


@pytest.mark.parametrize("which", ["heldout", "training"])
def test_hand_scoring_equals_predict_proba(nlu: NLU, training_texts: list[str], which: str) -> None:
    texts = [normalize(t) for t in HELDOUT] if which == "heldout" else training_texts
    texts += ["", "☃☃☃", "ㅠㅠ 가로등ㄱㅊ?", "A  B\tC"]  # empty, no known n-gram, jamo, odd spacing
    for text in texts:
        x = _char_text(text)
        mine = nlu.char_scorer.predict_proba(x)
        ref = nlu.char_model.predict_proba([x])[0]
        assert mine.shape == ref.shape
        assert np.max(np.abs(mine - ref)) <= 1e-9, text
        assert list(np.argsort(-mine, kind="stable")) == list(np.argsort(-ref, kind="stable")), text


def test_parse_equals_the_library_calls(nlu: NLU) -> None:
    for text in HELDOUT:
        got = nlu.parse(text)
        label, conf, ranking, entities = _reference_parse(nlu, text)
        assert got.label == label, text
        assert abs(got.confidence - conf) <= 1e-9, text
        assert [k for k, _ in got.ranking] == [k for k, _ in ranking], text
        assert max(abs(a - b) for (_, a), (_, b) in zip(got.ranking, ranking, strict=True)) <= 1e-9, text
        assert got.entities == entities, text


def test_parse_from_threads_equals_sequential(nlu: NLU) -> None:
    texts = HELDOUT[:120]
    sequential = [nlu.parse(t).to_dict() for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda t: nlu.parse(t).to_dict(), texts))
    assert threaded == sequential


_SMALL_TEXTS = ["가로등이 나갔어요", "쓰레기 언제 버려요", "Pothole on Main-ro 3", "여권 발급 기간", "물이 새요 물이",
                "가로등 깜빡여요", "대형폐기물 수거", "Streetlight OUT", "수도 요금 문의", "여권 재발급"]
_SMALL_LABELS = ["light", "waste", "road", "civil", "water", "light", "waste", "light", "water", "civil"]


def _small_char_pipeline(params: dict[str, Any]) -> tuple[list[str], Any]:
    """A character model fitted on ten texts with ``params`` (the scorer must follow any settings)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(**params), SGDClassifier(loss="log_loss", random_state=0, max_iter=50,
                                                                   tol=None))
    pipe.fit(_SMALL_TEXTS, _SMALL_LABELS)
    return list(_SMALL_TEXTS), pipe


@pytest.mark.parametrize("params", [
    {"analyzer": "char", "ngram_range": (1, 4), "sublinear_tf": True},
    {"analyzer": "char", "ngram_range": (2, 3), "sublinear_tf": False, "norm": "l1"},
    {"analyzer": "char_wb", "ngram_range": (1, 3), "use_idf": False, "norm": None},
    {"analyzer": "char", "ngram_range": (1, 2), "binary": True, "smooth_idf": False},
    {"analyzer": "word", "ngram_range": (1, 2), "lowercase": False},
])
def test_hand_scoring_follows_the_vectorizer_parameters(params: dict[str, Any]) -> None:
    """The scorer reads the fitted vectorizer's settings rather than assuming the production ones."""
    texts, pipe = _small_char_pipeline(params)
    scorer = CharScorer(pipe)
    assert scorer.by_hand
    for text in [*texts, "", "unknown ☃", "가로등 STREET  light 물"]:
        ref = pipe.predict_proba([text])[0]
        assert np.max(np.abs(scorer.predict_proba(text) - ref)) <= 1e-9, text


@pytest.mark.parametrize("params", [
    {"analyzer": "char", "ngram_range": (1, 4), "sublinear_tf": True},
    {"analyzer": "char", "ngram_range": (2, 3), "sublinear_tf": False, "norm": "l1"},
    {"analyzer": "char", "ngram_range": (1, 2), "binary": True, "use_idf": False, "norm": None},
    {"analyzer": "char", "ngram_range": (1, 3), "lowercase": False},
])
def test_the_saved_character_model_scores_as_the_pipeline(tmp_path: Path, params: dict[str, Any]) -> None:
    """``char.npz`` (loaded without scikit-learn) gives ``predict_proba``'s numbers and keeps the synonyms."""
    texts, pipe = _small_char_pipeline(params)
    scorer = CharScorer(pipe)
    assert scorer.savable
    scorer.save(tmp_path / "char.npz", {"동사무소": "주민센터"})
    lean, synonyms = CharScorer.load(tmp_path / "char.npz")
    assert synonyms == {"동사무소": "주민센터"}
    assert lean.classes == [str(c) for c in pipe.classes_]
    for text in [*texts, "", "unknown ☃", "가로등 STREET  light 물", "a\t\n  b", "ㅠ"]:
        ref = pipe.predict_proba([text])[0]
        assert np.max(np.abs(lean.predict_proba(text) - ref)) <= 1e-9, text


def test_a_word_vectorizer_is_not_saved_alone() -> None:
    """Only scikit-learn's plain ``char`` analyzer is re-implemented; anything else keeps the pickle."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(analyzer="char_wb"), SGDClassifier(loss="log_loss", random_state=0))
    pipe.fit(["네", "예 맞아요", "아니요", "아뇨 틀려요", "몰라요"], ["yes", "yes", "no", "no", "maybe"])
    assert CharScorer(pipe).by_hand and not CharScorer(pipe).savable


def test_loading_the_model_imports_neither_scikit_learn_nor_scipy_nor_spacy(nlu: NLU) -> None:
    """Importing scikit-learn (and the SciPy it pulls in) cost ≈ 1 CPU s of every start, spaCy (and
    thinc) ≈ 1 CPU s more, for nothing a message needs once the numbers are saved alone."""
    code = ("import sys; from pathlib import Path; from bot.nlu.model import NLU; "
            f"n = NLU(Path({str(nlu.model_dir)!r})); n.parse('쓰레기 언제 버려요'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'spacy', 'thinc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]", out.stdout


def test_two_classes_fall_back_to_predict_proba() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(analyzer="char"), SGDClassifier(loss="log_loss", random_state=0))
    pipe.fit(["네", "예 맞아요", "아니요", "아뇨 틀려요"], ["yes", "yes", "no", "no"])
    scorer = CharScorer(pipe)
    assert not scorer.by_hand
    assert np.array_equal(scorer.predict_proba("네 맞아요"), pipe.predict_proba(["네 맞아요"])[0])


def _detect_by_loop(text: str, default: str = "ko") -> str:
    """``detect`` as it was: a Python loop counting Hangul and Latin letters."""
    hangul = latin = 0
    for ch in _MARKUP.sub(" ", text):
        o = ord(ch)
        if 0xAC00 <= o <= 0xD7A3 or 0x3131 <= o <= 0x318E or 0x1100 <= o <= 0x11FF:
            hangul += 1
        elif ("a" <= ch <= "z") or ("A" <= ch <= "Z"):
            latin += 1
    if hangul:
        return "ko"
    if latin >= 2:
        return "en"
    return default


def test_detect_equals_the_character_loop(training_texts: list[str]) -> None:
    extra = ["", "a", "ab", "é ü", "ᄀ", "ㆎ", "힣", "<b>hi</b>", "http://x.kr/abc 1", "me@x.kr", "Ａｂ"]
    for text in [*HELDOUT, *training_texts, *extra, *_fuzz(5000)]:
        for default in ("ko", "en"):
            assert detect(text, default) == _detect_by_loop(text, default), text


def test_entity_patterns_skip_only_what_needs_a_digit(training_texts: list[str]) -> None:
    extra = ["중앙로 3", "한빛동 12-3번지", "12 Jungang-ro", "Jungang-ro 5", "010-1234-5678", "2026-000871",
             "37.5665, 126.9780", "٣٣ 중앙로 ٣", "시청역 앞에서 오늘 아침"]
    for text in [*(normalize(t) for t in HELDOUT), *training_texts, *extra, *_fuzz(5000, seed=11)]:
        assert ent.extract_patterns(text) == ent._extract(text, digits=True), text


def test_a_repeated_short_message_is_parsed_once_and_each_caller_gets_its_own_copy(nlu: NLU) -> None:
    """The parse memo (``NLU.parse``): same answer, computed once, never shared mutable state."""
    nlu._memo.clear()
    first = nlu.parse("상담원 연결해 주세요")
    assert len(nlu._memo) == 1
    first.ranking.insert(0, ("emergency.report", 1.0))
    first.entities.append({"entity": "x"})
    first.label = "changed"
    again = nlu.parse("상담원 연결해 주세요")
    assert len(nlu._memo) == 1
    assert again.label != "changed" and again.ranking[0][0] != "emergency.report"
    assert {"entity": "x"} not in again.entities
    fresh = nlu._parse("상담원 연결해 주세요")
    assert (again.label, again.confidence, again.ranking, again.entities) == \
        (fresh.label, fresh.confidence, fresh.ranking, fresh.entities)
    long_text = "도로에 " + "아주 " * 40 + "큰 구멍이 있어요"
    nlu.parse(long_text)
    assert all(key[0] != long_text for key in nlu._memo)  # long, one-off texts are not kept


def test_lean_spacy_scores_as_spacy_bit_for_bit(nlu: NLU, training_texts: list[str]) -> None:
    """``spacy.npz`` scored without spaCy (bot/nlu/lean.py) gives the textcat's float32 numbers exactly
    and the entity ruler's spans, on every held-out and training message."""
    from bot.nlu.tokenizer import morphemes

    assert nlu.lean is not None, "the trained pipeline is not scored without spaCy: every start imports it"
    textcat = nlu.nlp.get_pipe("textcat")
    texts = [normalize(t) for t in HELDOUT] + training_texts + ["", "ㅠㅠ", "X NOUN ORTH 가로등", "한빛동 한빛 동 앞"]
    for text in texts:
        doc = nlu.nlp(text)
        words, spaces, _ = morphemes(text)
        assert words == [t.text for t in doc], text
        ref = np.asarray(textcat.predict([nlu.nlp.make_doc(text)])[0], dtype=np.float32)
        assert np.array_equal(nlu.lean.textcat(words), ref), text
        ents = [(e.label_, e.text, e.start_char, e.end_char) for e in doc.ents]
        assert nlu.lean.entities(words, spaces) == ents, text


def test_lean_spacy_follows_the_pipeline_it_was_taken_from(tmp_path: Path) -> None:
    """Another table length, trigrams and overlapping phrases: the numbers are read, not assumed."""
    import spacy
    from spacy.training import Example

    from bot.nlu.lean import LeanSpacy

    nlp = spacy.blank("en")
    textcat = nlp.add_pipe("textcat", config={"model": {
        "@architectures": "spacy.TextCatBOW.v3", "exclusive_classes": True, "ngram_size": 3,
        "no_output_layer": False, "length": 5000}})
    for label in ("light", "road", "water"):
        textcat.add_label(label)
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "ORTH"})
    data = [("street light out", "light"), ("the lamp is dark", "light"), ("pothole on main road", "road"),
            ("road is broken", "road"), ("water leak here", "water"), ("pipe burst water", "water")]
    examples = [Example.from_dict(nlp.make_doc(t), {"cats": {k: float(k == y) for k in ("light", "road", "water")}})
                for t, y in data]
    optimizer = nlp.initialize(lambda: examples)
    ruler.add_patterns([{"label": "place", "pattern": "main road"}, {"label": "street", "pattern": "main"},
                        {"label": "thing", "pattern": "road is"}, {"label": "place", "pattern": "X"}])
    for _ in range(5):
        nlp.update(examples, sgd=optimizer)
    lean = LeanSpacy.from_pipeline(nlp)
    assert lean is not None and lean.ngram_size == 3 and lean.length == 8192
    lean.save(tmp_path / "spacy.npz")
    lean = LeanSpacy.load(tmp_path / "spacy.npz")
    for text in [t for t, _ in data] + ["main road is X", "the main road is broken on main", "X", "", "ORTH LOC NOUN"]:
        doc = nlp(text)
        words, spaces = [t.text for t in doc], [bool(t.whitespace_) for t in doc]
        if words:
            assert np.array_equal(lean.textcat(words), textcat.predict([nlp.make_doc(text)])[0]), text
        assert lean.entities(words, spaces) == [(e.label_, e.text, e.start_char, e.end_char) for e in doc.ents], text
    ruler.add_patterns([{"label": "other", "pattern": "main"}])  # one phrase, two labels: spaCy's set decides
    assert LeanSpacy.from_pipeline(nlp) is None


def test_a_model_without_its_lean_file_writes_it_and_parses_the_same(nlu: NLU, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(nlu.model_dir, copy, ignore=shutil.ignore_patterns("spacy.npz"))
    fresh = NLU(copy)
    assert (copy / "spacy.npz").exists() and fresh.lean is not None
    again = NLU(copy)
    for text in HELDOUT[:60]:
        assert fresh.parse(text).to_dict() == nlu.parse(text).to_dict() == again.parse(text).to_dict(), text


def test_a_torn_lean_file_is_rewritten_from_the_pipeline(nlu: NLU, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(nlu.model_dir, copy)
    lean = copy / "spacy.npz"
    lean.write_bytes(lean.read_bytes()[:1000])  # a copy cut short
    fresh = NLU(copy)
    assert fresh.lean is not None and lean.stat().st_size > 1000
    assert [fresh.parse(t).to_dict() for t in HELDOUT[:20]] == [nlu.parse(t).to_dict() for t in HELDOUT[:20]]
