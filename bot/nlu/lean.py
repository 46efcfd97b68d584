"""The spaCy half of the NLU scored without importing spaCy (≈ 1 CPU s of every start).

At serve time the NLU's spaCy pipeline does two small things: the ``textcat`` (spaCy's
``TextCatBOW.v3``: hashed unigrams and bigrams of the tokens' ``ORTH`` into a sparse linear
layer, then a softmax) and the ``entity_ruler`` (90-odd phrase patterns matched on ``ORTH``).
Importing spaCy (thinc, confection, pydantic v1 schemas, its CLI) and loading the pipeline
cost ≈ 1 CPU s of every start, before the first message could be answered, for arithmetic a
few lines of numpy do. So the trained numbers are saved alone (``spacy.npz`` beside the
pipeline) and scored here, bit for bit as spaCy and thinc score them:

* a token's key is spaCy's ``ORTH``: the id of a reserved symbol (``spacy.symbols.IDS``, saved
  in the file) or MurmurHash64A of its UTF-8 bytes with seed 1 (``StringStore``);
* an n-gram's key is MurmurHash64A (seed 0) of its tokens' keys as little-endian uint64s
  (``NumpyOps.ngrams``); keys are counted and sorted as ``numpy.unique`` does;
* each key adds ``W[c, h] * count`` for the two buckets ``h`` of MurmurHash3_x86_32 of the key
  (seeds 0 and 1) modulo the table's length, in float32 and in the same order as thinc's
  ``set_scoresC`` (``numpy.add.accumulate`` is a sequential sum), then thinc's softmax;
* the ruler keeps spaCy's ``EntityRuler`` choice: longest match first, then the earliest, a
  match dropped when its first or last token is taken.

:meth:`LeanSpacy.from_pipeline` refuses (returns None) any pipeline it would not score the same
way (another architecture, token patterns, a phrase with two labels), which then stays on spaCy.
``tests/test_nlu_scoring.py`` compares both on every held-out and training message.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

FILE = "spacy.npz"
FORMAT = 1
#: Token texts and bigrams whose keys and buckets are remembered (≈ 150 bytes each).
MEMO_SIZE = 50_000
_M64 = 0xC6A4A7935BD1E995
_MASK64 = (1 << 64) - 1
_MASK32 = 0xFFFFFFFF


def murmur64a(data: bytes, seed: int) -> int:
    """MurmurHash64A (murmurhash's ``hash64``, which spaCy and thinc use)."""
    n = len(data)
    h = (seed ^ (n * _M64)) & _MASK64
    full = n - n % 8
    for i in range(0, full, 8):
        k = (int.from_bytes(data[i:i + 8], "little") * _M64) & _MASK64
        k ^= k >> 47
        k = (k * _M64) & _MASK64
        h = ((h ^ k) * _M64) & _MASK64
    if n % 8:
        h = ((h ^ int.from_bytes(data[full:], "little")) * _M64) & _MASK64
    h ^= h >> 47
    h = (h * _M64) & _MASK64
    return h ^ (h >> 47)


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK32


def murmur3_u64(key: int, seed: int) -> int:
    """thinc's ``MurmurHash3_x86_32_uint64`` (sparselinear.pyx): the bucket hash of a key."""
    h = seed
    for k in (key & _MASK32, key >> 32):
        k = _rotl32((k * 0xCC9E2D51) & _MASK32, 15)
        h ^= (k * 0x1B873593) & _MASK32
        h = (_rotl32(h, 13) * 5 + 0xE6546B64) & _MASK32
    h ^= 8
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


class LeanSpacy:
    """The textcat's weights and the ruler's phrases of one trained pipeline. Read-only after
    construction, so thread-safe (the key memo is a dict written with whole values)."""

    labels: list[str]
    ngram_size: int
    length: int
    W: np.ndarray  # (classes, length) float32
    b: np.ndarray  # (classes,) float32
    symbols: dict[str, int]
    phrases: dict[tuple[str, ...], str]  # tokens -> entity label
    longest: int

    def __init__(self) -> None:
        self._orth: dict[str, tuple[int, int, int]] = {}
        self._pairs: dict[tuple[int, int], tuple[int, int, int]] = {}

    # --- building from spaCy (training time, or the first load of an older model) --------------
    @classmethod
    def from_pipeline(cls, nlp: Any) -> LeanSpacy | None:
        """The numbers of ``nlp`` (a loaded spaCy pipeline), or None if it is not scored here."""
        from spacy.attrs import ORTH
        from spacy.symbols import IDS

        if [name for name, _ in nlp.pipeline] != ["textcat", "entity_ruler"]:
            return None
        textcat, ruler = nlp.get_pipe("textcat"), nlp.get_pipe("entity_ruler")
        model = textcat.model
        nodes = {node.name: node for node in model.walk()}
        extract, linear = nodes.get("extract_ngrams"), nodes.get("sparse_linear")
        if (extract is None or linear is None or extract.attrs.get("attr") != ORTH
                or linear.attrs.get("v1_indexing", True) or model.attrs.get("multi_label", True)
                or "softmax_activation" not in nodes or set(nodes) - _BOW_NODES):
            return None
        if ruler.token_patterns or ruler.overwrite or ruler.ent_ids:
            return None
        self = cls()
        self.labels = list(textcat.labels)
        self.ngram_size = int(extract.attrs["ngram_size"])
        self.length = int(linear.get_dim("length"))
        nclasses = int(linear.get_dim("nO"))
        if nclasses != len(self.labels):
            return None
        weights = np.asarray(linear.get_param("W"), dtype=np.float32)
        self.W = np.ascontiguousarray(weights.reshape(nclasses, self.length))
        self.b = np.asarray(linear.get_param("b"), dtype=np.float32).copy()
        self.symbols = {str(k): int(v) for k, v in IDS.items()}
        self.phrases = {}
        for label, docs in ruler.phrase_patterns.items():
            for doc in docs:
                words = tuple(t.text for t in doc)
                if not words:
                    continue
                if self.phrases.setdefault(words, label) != label:
                    return None  # two labels for one phrase: spaCy's order between them is its set's
        self.longest = max((len(p) for p in self.phrases), default=0)
        return self

    def save(self, path: Path) -> None:
        """Write the numbers (atomically: a reader sees all or nothing)."""
        meta = {"format": FORMAT, "labels": self.labels, "ngram_size": self.ngram_size, "length": self.length,
                "symbols": self.symbols, "phrases": [[list(p), label] for p, label in self.phrases.items()]}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.npz")
        np.savez(tmp, W=self.W, b=self.b, meta=np.array(json.dumps(meta, ensure_ascii=False)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LeanSpacy:
        """What :meth:`save` wrote. Raises ``OSError``/``KeyError``/``ValueError`` on a missing,
        torn or other-format file (the caller then loads spaCy)."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: format {meta.get('format')}")
            self = cls()
            self.W = np.ascontiguousarray(data["W"], dtype=np.float32)
            self.b = np.asarray(data["b"], dtype=np.float32)
        self.labels = list(meta["labels"])
        self.ngram_size, self.length = int(meta["ngram_size"]), int(meta["length"])
        self.symbols = {str(k): int(v) for k, v in meta["symbols"].items()}
        self.phrases = {tuple(words): str(label) for words, label in meta["phrases"]}
        self.longest = max((len(p) for p in self.phrases), default=0)
        if self.W.shape != (len(self.labels), self.length) or self.b.shape != (len(self.labels),):
            raise ValueError(f"{path}: weights of shape {self.W.shape}")
        return self

    # --- scoring ------------------------------------------------------------------------------
    def orth(self, word: str) -> int:
        """spaCy's ``ORTH`` of a token text (``StringStore``'s id)."""
        return self._key_of(word)[0]

    def _buckets(self, key: int) -> tuple[int, int]:
        return murmur3_u64(key, 0) % self.length, murmur3_u64(key, 1) % self.length

    def _key_of(self, word: str) -> tuple[int, int, int]:
        """``(ORTH, bucket 0, bucket 1)`` of a token text, remembered (messages repeat their words)."""
        hit = self._orth.get(word)
        if hit is None:
            key = self.symbols.get(word)
            if key is None:
                key = murmur64a(word.encode("utf-8"), 1)
            hit = (key, *self._buckets(key))
            if len(self._orth) < MEMO_SIZE:
                self._orth[word] = hit
        return hit

    def _pair_of(self, first: int, second: int) -> tuple[int, int, int]:
        """``(key, bucket 0, bucket 1)`` of the bigram of two ORTHs, remembered."""
        hit = self._pairs.get((first, second))
        if hit is None:
            key = murmur64a(first.to_bytes(8, "little") + second.to_bytes(8, "little"), 0)
            hit = (key, *self._buckets(key))
            if len(self._pairs) < MEMO_SIZE:
                self._pairs[(first, second)] = hit
        return hit

    def textcat(self, words: list[str]) -> np.ndarray:
        """``TextCategorizer.predict`` of a Doc of ``words``: float32 probabilities in ``labels`` order."""
        if not words:  # spaCy answers zeros for a Doc without tokens
            return np.zeros(len(self.labels), dtype=np.float32)
        units = [self._key_of(w) for w in words]
        grams = list(units)
        if self.ngram_size >= 2:
            grams += [self._pair_of(a[0], b[0]) for a, b in zip(units, units[1:], strict=False)]
        if self.ngram_size >= 3:
            packed = np.array([u[0] for u in units], dtype="<u8").tobytes()
            for n in range(3, self.ngram_size + 1):
                for i in range(len(units) - n + 1):
                    key = murmur64a(packed[8 * i:8 * (i + n)], 0)
                    grams.append((key, *self._buckets(key)))
        counts = Counter(grams)
        idx: list[int] = []
        vals: list[int] = []
        for gram in sorted(counts):  # numpy.unique's order (by key; a key has one pair of buckets)
            idx += gram[1:]
            vals += (counts[gram], counts[gram])
        terms = self.W[:, idx] * np.array(vals, dtype=np.float32)
        start = np.zeros((len(self.labels), 1), dtype=np.float32)
        start[:, 0] += self.b
        scores = np.add.accumulate(np.concatenate([start, terms], axis=1), axis=1)[:, -1].reshape(1, -1)
        # thinc's Ops.softmax
        shifted = scores - np.max(scores, axis=-1, keepdims=True)
        out = np.exp(shifted)
        out /= out.sum(axis=-1, keepdims=True)
        return out[0]

    def entities(self, words: list[str], spaces: list[bool]) -> list[tuple[str, str, int, int]]:
        """The ruler's entities of a Doc of ``words``: ``(label, text, start_char, end_char)`` in
        token order, offsets in the Doc's text (the words joined by their spaces)."""
        if not self.phrases:
            return []
        found = []
        for start in range(len(words)):
            for n in range(1, min(self.longest, len(words) - start) + 1):
                label = self.phrases.get(tuple(words[start:start + n]))
                if label is not None:
                    found.append((label, start, start + n))
        found.sort(key=lambda m: (m[2] - m[1], -m[1]), reverse=True)
        seen: set[int] = set()
        kept = []
        for label, start, end in found:
            if start not in seen and end - 1 not in seen:
                kept.append((label, start, end))
                seen.update(range(start, end))
        kept.sort(key=lambda m: m[1])
        offsets = [0]
        for word, space in zip(words, spaces, strict=True):
            offsets.append(offsets[-1] + len(word) + int(space))
        out = []
        for label, start, end in kept:
            begin, finish = offsets[start], offsets[end - 1] + len(words[end - 1])
            text = "".join(w + (" " if s else "") for w, s in zip(words[start:end], spaces[start:end], strict=True))
            out.append((label, text[:finish - begin], begin, finish))
        return out


#: The layers of spaCy's ``TextCatBOW.v3`` with its softmax output (anything else is refused).
_BOW_NODES = frozenset({"extract_ngrams", "sparse_linear", "resizable(sparse_linear)", "softmax_activation",
                        "with_cpu(extract_ngrams>>resizable(sparse_linear))", "with_cpu(softmax_activation)",
                        "with_cpu(extract_ngrams>>resizable(sparse_linear))>>with_cpu(softmax_activation)",
                        "extract_ngrams>>resizable(sparse_linear)"})
