"""The NLU model: train, cache, load, parse.

Two classifiers vote, because each covers the other's blind spot:

* a spaCy ``textcat`` (bag of Kiwi morphemes and morpheme bigrams) knows that
  "버렸어요" and "버려요" share the verb 버리다, whatever the spacing;
* a character n-gram logistic regression (scikit-learn) survives typos and
  words Kiwi has never seen ("포트홀", "ㅠㅠ 가로등ㄱㅊ?").

The spaCy pipeline also carries an EntityRuler built from the lookup tables.
A trained model is saved under ``var/model/<fingerprint>``; the fingerprint is a
hash of ``nlu_data/nlu`` and this module's version, so changing the data retrains.
"""

from __future__ import annotations

import math
import pickle
import random
import re
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.nlu import data as nlu_data
from bot.nlu import entities as ent
from bot.nlu import lean as _lean
from bot.nlu import tokenizer as _tokenizer
from bot.nlu.language import detect
from bot.nlu.normalize import normalize

if TYPE_CHECKING:
    import spacy
    from spacy.tokens import Doc

MODEL_VERSION = "6"  # 6: compatibility jamo (ㅇㅇ, ㄱㅅ) kept as typed by normalize.clean
SPACY_WEIGHT = 0.45  # share of the spaCy vote in the ensemble (measured on bench/heldout.jsonl)
#: Parses remembered (texts up to ``PARSE_MEMO_MAX_CHARS``; see ``NLU.parse``).
PARSE_MEMO_SIZE = 8192
PARSE_MEMO_MAX_CHARS = 80
EPOCHS = 6


@dataclass
class Parse:
    """What NLU makes of one message."""

    text: str
    normalized: str
    lang: str
    label: str
    confidence: float
    ranking: list[tuple[str, float]] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": round(self.confidence, 4), "lang": self.lang,
                "entities": self.entities,
                "ranking": [{"label": k, "confidence": round(v, 4)} for k, v in self.ranking]}


def _char_text(text: str) -> str:
    """Input of the character model: lower case, spaces dropped (spacing errors vanish)."""
    return text.lower().replace(" ", "")


def _build_spacy(labels: list[str], td: nlu_data.TrainingData) -> spacy.Language:
    import spacy

    _tokenizer.register()
    nlp = spacy.blank("ko", config={"nlp": {"tokenizer": {"@tokenizers": "pcrm.KiwiTokenizer.v1"}}})
    textcat = nlp.add_pipe("textcat", config={"model": {
        "@architectures": "spacy.TextCatBOW.v3", "exclusive_classes": True,
        "ngram_size": 2, "no_output_layer": False, "length": 2**18}})
    for label in labels:
        textcat.add_label(label)
    nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "ORTH"})
    return nlp


def _add_lookup_patterns(nlp: spacy.Language, td: nlu_data.TrainingData) -> None:
    """Lookup tables become EntityRuler phrases (after ``initialize``, which would clear them)."""
    patterns = []
    for name, values in td.lookups.items():
        label = "address" if name in ("dong", "landmark", "road", "address") else name
        patterns += [{"label": label, "pattern": v} for v in values if v.strip()]
    nlp.get_pipe("entity_ruler").add_patterns(patterns)


def _train_char_model(texts: list[str], labels: list[str]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 4), sublinear_tf=True, min_df=1),
        # Logistic loss gives calibrated-enough probabilities for the ensemble; SGD trains an
        # order of magnitude faster than LogisticRegression's lbfgs for equal accuracy (README,
        # "Figures behind choices in the code").
        SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=50, tol=1e-4, random_state=0),
    )
    model.fit([_char_text(t) for t in texts], labels)
    return model


def train(nlu_dir: Path, out_dir: Path, progress: Callable[[str], None] | None = None) -> Path:
    """Train both classifiers on ``nlu_dir`` and save them to ``out_dir``."""
    import spacy
    from spacy.training import Example

    say = progress or (lambda _msg: None)
    td = nlu_data.load(nlu_dir)
    if not td.examples:
        raise ValueError(f"no training examples under {nlu_dir}")
    labels = td.labels
    texts = [normalize(t) for t, _ in td.examples]
    gold = [lab for _, lab in td.examples]
    say(f"{len(texts)} examples, {len(labels)} labels")

    t0 = time.perf_counter()
    nlp = _build_spacy(labels, td)
    examples = []
    for text, label in zip(texts, gold, strict=True):
        doc = nlp.make_doc(text)
        examples.append(Example.from_dict(doc, {"cats": {lab: float(lab == label) for lab in labels}}))
    optimizer = nlp.initialize(lambda: examples)
    _add_lookup_patterns(nlp, td)
    rng = random.Random(13)
    for epoch in range(EPOCHS):
        rng.shuffle(examples)
        losses: dict[str, float] = {}
        for batch in spacy.util.minibatch(examples, size=32):
            nlp.update(batch, sgd=optimizer, losses=losses, drop=0.2)
        say(f"spaCy textcat epoch {epoch + 1}/{EPOCHS} loss {losses.get('textcat', 0):.3f}")
    say(f"spaCy trained in {time.perf_counter() - t0:.1f}s")

    t0 = time.perf_counter()
    char_model = _train_char_model(texts, gold)
    say(f"character model trained in {time.perf_counter() - t0:.1f}s")

    out_dir.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(out_dir / "spacy")
    with open(out_dir / "char.pkl", "wb") as fh:
        pickle.dump({"model": char_model, "synonyms": td.synonyms}, fh)
    scorer = CharScorer(char_model)
    if scorer.savable:
        scorer.save(out_dir / LEAN_CHAR_FILE, td.synonyms)
    lean = _lean.LeanSpacy.from_pipeline(_load_spacy(out_dir / "spacy"))  # as a start loads it
    if lean is not None:
        lean.save(out_dir / _lean.FILE)
    (out_dir / "READY").write_text(MODEL_VERSION)
    return out_dir


#: What reading a missing, torn or foreign ``.npz`` raises (then the full model is loaded instead).
_UNREADABLE = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)
#: The character model's numbers alone (no scikit-learn objects), written beside ``char.pkl``.
LEAN_CHAR_FILE = "char.npz"
_WHITE_SPACES = re.compile(r"\s\s+")  # scikit-learn's ``_VectorizerMixin._white_spaces``
_NORMS = {None: 0, "l1": 1, "l2": 2}


def _expit(scores: np.ndarray) -> np.ndarray:
    """``scipy.special.expit`` bit for bit (``1 / (1 + exp(-x))`` with the C library's exp, which
    ``math.exp`` is), without importing SciPy at start for 30 numbers a message (README, "Figures
    behind choices in the code")."""
    out = []
    for x in scores.tolist():
        try:
            out.append(1.0 / (1.0 + math.exp(-x)))
        except OverflowError:  # exp(-x) is inf: 1 / inf
            out.append(0.0)
    return np.array(out, dtype=np.float64)


class CharScorer:
    """The character model's ``predict_proba`` for one text, without scikit-learn's per-call machinery.

    Why: on every message ``Pipeline.predict_proba`` spent far more time validating its input,
    building a one-row sparse matrix and running ``TfidfTransformer`` than on arithmetic (README,
    "Figures behind choices in the code"). This does the same arithmetic the fitted pipeline does,
    with the fitted vectorizer's own analyzer (``build_analyzer``: decoding, lower-casing, whitespace
    normalisation, the n-grams): counts of the n-grams in ``vocabulary_`` (1 if ``binary``),
    ``1 + log(tf)`` if ``sublinear_tf``, times ``idf_`` if ``use_idf``, ``norm``-normalised, then
    ``w @ coef_.T[idx] + intercept_``, expit and the one-vs-rest normalisation of
    ``SGDClassifier(loss="log_loss").predict_proba``. Anything else (two classes, another
    classifier, float32 features) is scored by the pipeline itself. Equal to ``predict_proba``
    to ~1e-15 (tests/test_nlu_scoring.py). Read-only after ``__init__``, so thread-safe.

    A plain character vectorizer's numbers are also saved alone (:meth:`save`, ``char.npz``) and
    scored by :meth:`load` with the same n-grams computed here: importing scikit-learn (and the
    SciPy modules it pulls in) only to unpickle the pipeline was a large part of every start
    (README, "Memory and start-up").
    """

    def __init__(self, pipeline: Any) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import SGDClassifier

        self.pipeline = pipeline
        vec, clf = pipeline[0], pipeline[-1]
        self.by_hand = (len(pipeline) == 2 and isinstance(vec, TfidfVectorizer) and isinstance(clf, SGDClassifier)
                      and clf.loss == "log_loss" and clf.coef_.shape[0] > 1 and vec.norm in ("l1", "l2", None)
                      and np.dtype(vec.dtype) == np.float64)
        self.classes: list[str] = [str(c) for c in clf.classes_]
        #: ``(lowercase, min_n, max_n)`` when the analyzer is scikit-learn's plain ``char`` one
        #: (then :meth:`save` can write the model without scikit-learn objects), else None.
        self._char_params: tuple[bool, int, int] | None = None
        if not self.by_hand:
            return
        self._analyze = vec.build_analyzer()
        self._vocab: dict[str, int] = vec.vocabulary_
        self._binary: bool = vec.binary
        self._sublinear: bool = vec.sublinear_tf
        self._idf = vec.idf_ if vec.use_idf else None
        self._norm: str | None = vec.norm
        # sklearn multiplies the sparse row by ``coef_.T``, a Fortran-ordered view that scipy copied
        # whole (every n-gram's weights) on every call; rows of a C-ordered transpose made once
        # are gathered instead.
        self._coef_t = np.ascontiguousarray(clf.coef_.T, dtype=np.float64)
        self._intercept = np.asarray(clf.intercept_, dtype=np.float64)
        if (vec.analyzer == "char" and vec.preprocessor is None and not vec.strip_accents
                and vec.input == "content" and sorted(self._vocab.values()) == list(range(len(self._vocab)))):
            self._char_params = (bool(vec.lowercase), int(vec.ngram_range[0]), int(vec.ngram_range[1]))

    @property
    def savable(self) -> bool:
        """Whether :meth:`save` can write this model (a hand-scored plain ``char`` vectorizer)."""
        return self.by_hand and self._char_params is not None

    def save(self, path: Path, synonyms: dict[str, str]) -> None:
        """Write the numbers :meth:`load` needs (atomically: a reader sees all or nothing)."""
        assert self._char_params is not None, "only a plain char vectorizer is saved alone"
        lower, min_n, max_n = self._char_params
        keys = [""] * len(self._vocab)
        for gram, i in self._vocab.items():
            keys[i] = gram
        tmp = path.with_name(f".{path.name}.{time.time_ns()}.npz")
        np.savez(tmp, vocab=np.array(keys, dtype=str), idf=self._idf if self._idf is not None else np.zeros(0),
                 coef_t=self._coef_t, intercept=self._intercept, classes=np.array(self.classes, dtype=str),
                 syn_from=np.array(list(synonyms), dtype=str), syn_to=np.array(list(synonyms.values()), dtype=str),
                 params=np.array([lower, min_n, max_n, self._binary, self._sublinear, self._idf is not None,
                                  _NORMS[self._norm]], dtype=np.int64))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> tuple[CharScorer, dict[str, str]]:
        """A scorer (and the synonyms) from :meth:`save`'s file: no scikit-learn import."""
        with np.load(path, allow_pickle=False) as data:
            lower, min_n, max_n, binary, sublinear, use_idf, norm = (int(x) for x in data["params"])
            self = cls.__new__(cls)
            self.pipeline = None
            self.by_hand = True
            self.classes = data["classes"].tolist()
            self._char_params = (bool(lower), min_n, max_n)
            self._vocab = {gram: i for i, gram in enumerate(data["vocab"].tolist())}
            self._binary, self._sublinear = bool(binary), bool(sublinear)
            self._idf = data["idf"] if use_idf else None
            self._norm = {v: k for k, v in _NORMS.items()}[norm]
            self._coef_t = np.ascontiguousarray(data["coef_t"], dtype=np.float64)
            self._intercept = np.asarray(data["intercept"], dtype=np.float64)
            synonyms = dict(zip(data["syn_from"].tolist(), data["syn_to"].tolist(), strict=True))
        self._analyze = self._char_ngrams
        return self, synonyms

    def _char_ngrams(self, text: str) -> list[str]:
        """scikit-learn's ``char`` analyzer (``_preprocess`` then ``_char_ngrams``), same n-grams in the same order."""
        assert self._char_params is not None
        lower, min_n, max_n = self._char_params
        if lower:
            text = text.lower()
        text = _WHITE_SPACES.sub(" ", text)
        n_chars = len(text)
        grams = list(text) if min_n == 1 else []  # unigrams without slicing, as scikit-learn does
        for n in range(2 if min_n == 1 else min_n, min(max_n + 1, n_chars + 1)):
            grams.extend(text[i:i + n] for i in range(n_chars - n + 1))
        return grams

    def predict_proba(self, text: str) -> np.ndarray:
        """Probabilities in ``classes_`` order, as ``pipeline.predict_proba([text])[0]``."""
        if not self.by_hand:
            return self.pipeline.predict_proba([text])[0]
        counts = Counter(map(self._vocab.get, self._analyze(text)))
        counts.pop(None, None)  # n-grams the vectorizer never saw
        if counts:
            idx = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
            if self._binary:
                w = np.ones(len(idx))
            else:
                w = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
                if self._sublinear:
                    w = np.log(w) + 1.0
            if self._idf is not None:
                w *= self._idf[idx]
            if self._norm == "l2":
                length = math.sqrt(w @ w)
            elif self._norm == "l1":
                length = float(np.abs(w).sum())
            else:
                length = 1.0
            if length:
                w /= length
            scores = w @ self._coef_t[idx] + self._intercept
        else:  # an all-zero row: sklearn's decision function is the intercept
            scores = self._intercept.copy()
        probs = _expit(scores)
        total = probs.sum()
        if total == 0:  # every class underflowed: sklearn answers uniform probabilities
            return np.full(len(probs), 1 / len(probs))
        return probs / total


def _load_spacy(path: Path) -> spacy.Language:
    import spacy

    _tokenizer.register()
    return spacy.load(path)


class NLU:
    """A loaded model. ``parse`` is thread-safe and takes a few hundred microseconds of CPU.

    The spaCy half is scored by :mod:`bot.nlu.lean` from ``spacy.npz`` (spaCy is not imported);
    a model without that file loads spaCy once, writes it, and goes on with it.
    """

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._nlp: spacy.Language | None = None
        try:
            self.lean: _lean.LeanSpacy | None = _lean.LeanSpacy.load(model_dir / _lean.FILE)
        except _UNREADABLE:  # trained before spacy.npz existed (or a torn copy)
            self.lean = _lean.LeanSpacy.from_pipeline(self.nlp)
            if self.lean is not None:  # the next start loads without spaCy
                try:
                    self.lean.save(model_dir / _lean.FILE)
                except OSError:  # a read-only model directory
                    pass
        self._char_model: Any = None
        lean = model_dir / LEAN_CHAR_FILE
        try:
            self.char_scorer, self.synonyms = CharScorer.load(lean)
        except _UNREADABLE:  # a model trained before char.npz existed (or a torn copy)
            self.char_scorer = CharScorer(self.char_model)
            self.synonyms = self._pickled().get("synonyms", {})
            if self.char_scorer.savable:  # the next start loads without scikit-learn
                try:
                    self.char_scorer.save(lean, self.synonyms)
                except OSError:  # a read-only model directory: load the pickle each time
                    pass
        self.labels: list[str] = list(self.char_scorer.classes)
        # spaCy's part, without ``Language.__call__``'s per-pipe bookkeeping and without the
        # textcat writing 30 ``doc.cats`` entries only to be read back: ``TextCategorizer.predict``
        # gives the scores, mapped here once to the character model's label order (a label the
        # textcat lacks reads the appended 0.0, as ``doc.cats.get(label, 0.0)`` did).
        tc_labels = self.lean.labels if self.lean is not None else list(self.nlp.get_pipe("textcat").labels)
        self._textcat_index = np.array([tc_labels.index(lab) if lab in tc_labels else len(tc_labels)
                                        for lab in self.labels], dtype=np.intp)
        self._memo: dict[tuple[str, str | None], Parse] = {}

    @property
    def nlp(self) -> spacy.Language:
        """The spaCy pipeline itself (tests compare with it; a turn needs it only without ``spacy.npz``),
        loaded on first use: it imports spaCy."""
        if self._nlp is None:
            self._nlp = _load_spacy(self.model_dir / "spacy")
        return self._nlp

    def _pickled(self) -> dict[str, Any]:
        with open(self.model_dir / "char.pkl", "rb") as fh:
            return pickle.load(fh)  # noqa: S301 - our own file, written by train()

    @property
    def char_model(self) -> Any:
        """The fitted scikit-learn pipeline (tests compare it with the scorer; a turn never needs
        it), unpickled on first use: it imports scikit-learn."""
        if self._char_model is None:
            self._char_model = self._pickled()["model"]
        return self._char_model

    def _spacy(self, norm: str) -> tuple[np.ndarray, list[tuple[str, str, int, int]]]:
        """textcat probabilities in ``self.labels`` order, and the ruler's entities
        ``(label, text, start_char, end_char)``."""
        if self.lean is not None:
            words, spaces, _tags = _tokenizer.morphemes(norm)
            row = np.asarray(self.lean.textcat(words), dtype=np.float64)
            found = self.lean.entities(words, spaces)
        else:
            doc: Doc = self.nlp.make_doc(norm)
            textcat = self.nlp.get_pipe("textcat")
            row = np.asarray(textcat.predict([doc])[0], dtype=np.float64)  # float32 -> float64 as float() did
            for name, proc in self.nlp.pipeline:
                if name != "textcat":
                    doc = proc(doc)
            found = [(e.label_, e.text, e.start_char, e.end_char) for e in doc.ents]
        return np.append(row, 0.0)[self._textcat_index], found

    def parse(self, text: str, lang_hint: str | None = None) -> Parse:
        """What the model makes of ``text``, remembered for short texts.

        A parse depends on the text alone, and short messages repeat all day ("예", "네 맞아요",
        "상담원 연결해 주세요", the widget's buttons, the common questions), and each costs a whole
        NLU run (Kiwi, textcat, character model; README, "Figures behind choices in the code").
        The caller gets a copy (the engine rewrites the ranking of an emergency)."""
        if len(text) > PARSE_MEMO_MAX_CHARS:
            return self._parse(text, lang_hint)
        key = (text, lang_hint)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._parse(text, lang_hint)
            if len(self._memo) >= PARSE_MEMO_SIZE:
                self._memo.clear()  # cheaper than LRU bookkeeping on every message; refills at once
            self._memo[key] = hit
        return replace(hit, ranking=list(hit.ranking), entities=[dict(e) for e in hit.entities])

    def _parse(self, text: str, lang_hint: str | None = None) -> Parse:
        norm = normalize(text)
        lang = detect(norm, default=lang_hint or "ko")
        if not norm:
            return Parse(text, norm, lang, "conv.out_of_scope", 0.0)
        spacy_probs, found = self._spacy(norm)
        char_probs = self.char_scorer.predict_proba(_char_text(norm))
        # Element-wise the same float64 operations as the former per-label loop, hence the same numbers;
        # a stable argsort of the negated scores keeps ties in label order like ``sorted(reverse=True)``.
        scores = (1 - SPACY_WEIGHT) * char_probs + SPACY_WEIGHT * spacy_probs
        ranking = [(self.labels[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")[:5]]
        label, conf = ranking[0]
        ruler_entities = [{"entity": label, "value": self.synonyms.get(text, text),
                           "start": start, "end": end, "extractor": "entity_ruler"}
                          for label, text, start, end in found]
        entities = ent.merge(ent.extract_patterns(norm), ruler_entities)
        return Parse(text, norm, lang, label, conf, ranking, entities)


def ensure_model(nlu_dir: Path, cache_dir: Path, progress: Callable[[str], None] | None = None) -> Path:
    """Path of a trained model for the current data, training it first if needed."""
    key = nlu_data.fingerprint(nlu_dir, MODEL_VERSION, str(SPACY_WEIGHT), str(EPOCHS), _tokenizer.version())
    target = cache_dir / key
    if not (target / "READY").exists():
        tmp = cache_dir / f".{key}.{time.time_ns()}"
        train(nlu_dir, tmp, progress)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use theirs
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return target
