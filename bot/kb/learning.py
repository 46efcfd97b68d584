"""The learning loop: what residents asked that the bot could not answer, grouped for staff.

Supervisors and editors see the not-understood questions of the last days *clustered* (the
same need asked twenty ways is one line with a count, not twenty lines), and from a cluster
they add the questions to an existing article, draft a new article prefilled with them, or
label them with a classifier intent (``nlu_data/nlu/learned.yml``, which ``pcrm train`` reads
with the rest of ``nlu_data/nlu/``).

"Not understood" is what :func:`bot.analytics.unrecognised` counts — ``conv.out_of_scope``, no
label, or confidence below :data:`bot.analytics.LOW_CONFIDENCE` — plus the knowledge base's
abstentions (:data:`ABSTAIN_LABELS`).

Clustering: TF-IDF over character 2–3-grams (a Korean word is two or three syllables, so this is
robust to particles and typos without a tokenizer) of the text as typed and of the text with
the spaces between Korean syllables removed (robust to spacing), cosine similarity,
average-linkage agglomerative clustering cut at :data:`SIMILARITY` (scikit-learn).  A few hundred messages
take milliseconds; the input is capped at :data:`MAX_MESSAGES`.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bot.masking import mask_pii

#: Labels meaning "the knowledge base had no answer good enough" (the retrieval engine's abstain).
ABSTAIN_LABELS = ("kb.abstain", "kb.no_answer")
OUT_OF_SCOPE = "conv.out_of_scope"
SIMILARITY = 0.12
MAX_MESSAGES = 1000
_WS = re.compile(r"\s+")
_file_lock = threading.Lock()


def clean(text: str) -> str:
    """The text staff see and training data keep: personal numbers masked, spaces collapsed."""
    return _WS.sub(" ", mask_pii(text or "")).strip()


@dataclass
class Message:
    id: int
    text: str
    lang: str | None = None
    label: str | None = None
    confidence: float | None = None
    created_at: str | None = None


@dataclass
class Cluster:
    """Messages asking (roughly) the same thing; ``label`` is the most typical one."""

    label: str
    messages: list[Message]
    suggestion: dict[str, Any] | None = None
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.messages)

    @property
    def key(self) -> str:
        """A stable name for forms: the smallest message id."""
        return str(min(m.id for m in self.messages))

    def texts(self) -> list[str]:
        """Distinct texts, most frequent first."""
        counts: dict[str, int] = {}
        for m in self.messages:
            counts[m.text] = counts.get(m.text, 0) + 1
        return sorted(counts, key=lambda t: (-counts[t], t))

    def langs(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        seen: set[str] = set()
        for m in sorted(self.messages, key=lambda m: m.id):
            if m.text not in seen:
                seen.add(m.text)
                out.setdefault("en" if m.lang == "en" else "ko", []).append(m.text)
        return out


_HANGUL_GAP = re.compile(r"(?<=[가-힣])\s+(?=[가-힣])")


def _joined(text: str) -> str:
    """Korean with the spaces between syllables removed ("여권 사진" = "여권사진": chat spacing is erratic)."""
    return _HANGUL_GAP.sub("", text.lower())


def _vectorizer() -> Any:
    """Character 2–3-grams of the text as typed and of its space-less Korean, one TF-IDF each."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    def tfidf(pre: Any = None) -> Any:
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3), lowercase=True, sublinear_tf=True,
                               preprocessor=pre)

    return FeatureUnion([("typed", tfidf()), ("joined", tfidf(_joined))])


def _unit(x: Any) -> Any:
    from sklearn.preprocessing import normalize

    return normalize(x)


def cluster(rows: Iterable[dict[str, Any]], similarity: float = SIMILARITY,
            articles: Sequence[Any] = ()) -> list[Cluster]:
    """Group ``rows`` (``id``, ``text``, ``lang``, ``label``, ``confidence``) by similarity, biggest
    cluster first; each with the published article its questions resemble most (if any)."""
    messages = [Message(int(r["id"]), clean(r.get("text") or ""), r.get("lang"), r.get("label"),
                        r.get("confidence"), r.get("created_at")) for r in rows]
    messages = [m for m in messages if m.text][:MAX_MESSAGES]
    if not messages:
        return []
    distinct = sorted({m.text.lower() for m in messages})
    index = {t: i for i, t in enumerate(distinct)}
    if len(distinct) == 1:
        groups = [[0]]
        sim = np.ones((1, 1))
    else:
        from sklearn.cluster import AgglomerativeClustering

        x = _unit(_vectorizer().fit_transform(distinct))
        sim = (x @ x.T).toarray()
        dist = np.clip(1.0 - sim, 0.0, 2.0)
        model = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                        distance_threshold=1.0 - similarity)
        assignment = model.fit_predict(dist)
        by: dict[int, list[int]] = {}
        for i, c in enumerate(assignment):
            by.setdefault(int(c), []).append(i)
        groups = list(by.values())
    clusters: list[Cluster] = []
    for members in groups:
        member_set = set(members)
        msgs = [m for m in messages if index[m.text.lower()] in member_set]
        central = max(members, key=lambda i: (sim[i, members].mean(), -i))
        label = next(m.text for m in msgs if m.text.lower() == distinct[central])
        labels: dict[str, int] = {}
        for m in msgs:
            labels[m.label or OUT_OF_SCOPE] = labels.get(m.label or OUT_OF_SCOPE, 0) + 1
        clusters.append(Cluster(label=label, messages=sorted(msgs, key=lambda m: -m.id), labels=labels))
    clusters.sort(key=lambda c: (-c.count, c.label))
    if articles:
        suggest(clusters, articles)
    return clusters


def _article_texts(article: Any) -> str:
    parts: list[str] = []
    for v in (getattr(article, "title", {}) or {}).values():
        parts.append(str(v))
    for qs in (getattr(article, "questions", {}) or {}).values():
        parts.extend(str(q) for q in qs)
    parts.extend(str(t) for t in getattr(article, "tags", []) or [])
    return " \n".join(parts)


def suggest(clusters: list[Cluster], articles: Sequence[Any], at_least: float = 0.08) -> None:
    """Attach to each cluster the article whose title, questions and tags resemble it most (a hint
    prefilled in the "add to article" field for staff to check, so the bar is low)."""
    if not clusters or not articles:
        return
    docs = [_article_texts(a) for a in articles]
    queries = [" \n".join(c.texts()[:20]) for c in clusters]
    vec = _vectorizer().fit(docs + queries)
    sims = (_unit(vec.transform(queries)) @ _unit(vec.transform(docs)).T).toarray()
    for c, row in zip(clusters, sims, strict=True):
        best = int(row.argmax())
        if row[best] >= at_least:
            a = articles[best]
            c.suggestion = {"id": a.id, "title": (a.title or {}).get("ko") or a.id, "score": round(float(row[best]), 2)}


# --- intent labels: nlu_data/nlu/learned.yml ---------------------------------------------------------

HEADER = ("# Examples staff labelled in the console's learning loop (bot/kb/learning.py).\n"
          "# Read by `pcrm train` with every other file of nlu_data/nlu/; personal numbers are masked.\n")


def _literal(dumper: yaml.SafeDumper, data: str) -> Any:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _literal)


def read_learned(path: Path) -> dict[str, list[str]]:
    """``{intent: [examples]}`` of a learned-examples file (empty when absent)."""
    if not path.exists():
        return {}
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, list[str]] = {}
    for item in doc.get("nlu") or []:
        if isinstance(item, dict) and "intent" in item:
            examples = [line.strip()[2:].strip() for line in str(item.get("examples") or "").splitlines()
                        if line.strip().startswith("- ")]
            out.setdefault(str(item["intent"]), []).extend(examples)
    return out


def add_examples(path: Path, intent: str, texts: Iterable[str]) -> int:
    """Append ``texts`` (cleaned; repeats skipped) to ``intent`` in ``path`` (Rasa 3.x NLU YAML);
    returns how many were new.  The file is rewritten whole and atomically, under a lock that
    holds across workers, so two supervisors labelling at once lose nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock, open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_learned(path)
        have = data.setdefault(intent, [])
        known = {t.lower() for t in have}
        added = 0
        for t in texts:
            t = clean(t).replace("\n", " ")
            if t and t.lower() not in known:
                have.append(t)
                known.add(t.lower())
                added += 1
        if added:
            items = [{"intent": name, "examples": "".join(f"- {e}\n" for e in data[name])}
                     for name in sorted(data) if data[name]]
            body = HEADER + yaml.dump({"version": "3.1", "nlu": items}, Dumper=_Dumper, allow_unicode=True,
                                      sort_keys=False, width=100_000)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".learned-", suffix=".yml")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
            os.replace(tmp, path)
        return added
