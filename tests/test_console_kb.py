"""The knowledge-base editor in the console and the learning loop, against the real app.

One app per module (FastAPI TestClient, lifespan run: the seed is imported and loaded at
start), a temporary SQLite database and a copy of ``nlu_data`` whose ``knowledge`` folder is
a small test seed (and whose ``nlu/learned.yml`` the learning loop may write).  What the
engine is handed on every reload is recorded by wrapping ``app.state.kb_sync.apply``.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bot.console.auth import create_agent
from bot.nlu import data as nlu_data
from bot.settings import ROOT, Settings
from crm_store import kb as store
from crm_store.models import AuditLog, Conversation, Interaction
from tests.test_console_api import PASSWORD, always_open_config, api_post, login, logout
from tests.test_store_kb import BULKY, ID_CARD, PASSPORT, write_seed


@pytest.fixture(scope="module")
def nlu_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of nlu_data (same training files: the cached model is reused) with a test seed."""
    tmp = tmp_path_factory.mktemp("kb-nlu") / "nlu_data"
    shutil.copytree(ROOT / "nlu_data", tmp, ignore=shutil.ignore_patterns("knowledge"))
    write_seed(tmp / "knowledge", {"civil": [PASSPORT, ID_CARD], "waste": [BULKY]})
    return tmp


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, nlu_dir: Path) -> Any:
    from bot.app import create_app

    tmp = tmp_path_factory.mktemp("kb-console")
    settings = Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None,
                        pcrm_config=always_open_config(tmp), pcrm_model_dir=ROOT / "var" / "model",
                        pcrm_secret_key="test-secret-key", pcrm_nlu_dir=nlu_dir, pcrm_kb_dir=nlu_dir / "knowledge")
    app = create_app(settings)
    sessions = app.state.sessions
    create_agent(sessions, "ed1", PASSWORD, "editor", [], "김편집")
    create_agent(sessions, "ed2", PASSWORD, "editor", [], "이검토")
    create_agent(sessions, "boss", PASSWORD, "supervisor", [], "박팀장")
    create_agent(sessions, "waste1", PASSWORD, "agent", ["waste"], "김청소")
    sync = app.state.kb_sync
    app.state.applied = applied = []  # (revision, {id: answer.ko}) of every reload
    original = sync.apply

    def recording(articles: list[Any], revision: int) -> None:
        applied.append((revision, {a.id: a.answer.get("ko") for a in articles}))
        original(articles, revision)

    sync.apply = recording
    return app


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def form_post(client: TestClient, path: str, data: dict[str, Any]) -> Any:
    return client.post(path, data={"csrf_token": client.cookies.get("pcrm_csrf", ""), **data}, follow_redirects=False)


def working(app: Any, article_id: str) -> tuple[dict[str, Any], int]:
    with app.state.sessions() as s:
        return store.working_content(s, article_id)


def edit_form(content: dict[str, Any], base: int, **changes: str) -> dict[str, str]:
    from bot.console.kb_routes import form_from_article

    return {**form_from_article(content), "base_version": str(base), **changes}


def wait_served(client: TestClient, app: Any) -> int:
    """Wait until this worker serves the published revision (the reload runs in the background
    poller, woken by the publish); returns it."""
    import time

    deadline = time.monotonic() + 120
    while True:
        status = client.get("/console/api/kb/status").json()
        if status["served_revision"] == status["published_revision"]:
            return int(status["published_revision"])
        assert time.monotonic() < deadline, f"never reloaded: {status}"
        time.sleep(0.05)


def published(app: Any, article_id: str) -> dict[str, Any]:
    with app.state.sessions() as s:
        _rev, docs = store.published_articles(s)
    return next(d for d in docs if d["id"] == article_id)


# --- access ------------------------------------------------------------------------------------

def test_pages_need_a_login_and_an_editor_role(client: TestClient) -> None:
    logout(client)
    r = client.get("/console/kb", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=/console/kb")
    assert client.get("/console/api/kb/articles").status_code == 401
    login(client, "waste1")
    assert client.get("/console/kb").status_code == 403
    assert client.get("/console/kb/learn").status_code == 403
    assert client.get("/console/api/kb/articles").status_code == 403
    token = client.cookies["pcrm_csrf"]
    assert api_post(client, "/console/api/kb/articles/civil.passport/publish", token, {"version": 1}).status_code == 403
    login(client, "ed1")
    page = client.get("/console/kb")
    assert page.status_code == 200 and "civil.passport" in page.text
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    assert "<script>" not in page.text and "style=" not in page.text


def test_posts_without_the_csrf_token_are_refused(client: TestClient, app: Any) -> None:
    login(client, "ed1")
    content, base = working(app, "civil.passport")
    r = client.post("/console/kb/articles/civil.passport/edit", data=edit_form(content, base), follow_redirects=False)
    assert r.status_code == 403
    assert api_post(client, "/console/api/kb/articles", None, {"article": content}).status_code == 403
    assert working(app, "civil.passport")[1] == base


def test_the_seed_was_imported_and_loaded_at_start(client: TestClient, app: Any) -> None:
    login(client, "ed1")
    body = client.get("/console/api/kb/articles").json()
    assert {i["id"] for i in body["items"]} >= {"civil.passport", "civil.id_card_reissue", "waste.bulky_sticker"}
    first_revision, answers = app.state.applied[0]
    assert first_revision >= 1 and answers["civil.passport"] == PASSPORT["answer"]["ko"]
    assert app.state.kb_sync.revision == body["revision"]


# --- edit, review, publish ------------------------------------------------------------------------

def test_an_edit_goes_live_only_after_another_editor_publishes_it(client: TestClient, app: Any) -> None:
    marker = f"여권은 민원여권과에서 신청해요. 보통 3일 걸려요. [{uuid.uuid4().hex[:6]}]"
    login(client, "ed1")
    content, base = working(app, "civil.passport")
    r = form_post(client, "/console/kb/articles/civil.passport/edit",
                  edit_form(content, base, answer_ko=marker, then="submit", note="기간 변경"))
    assert r.status_code == 303 and r.headers["location"].endswith("?done=submitted")
    version = base + 1
    page = client.get("/console/kb/articles/civil.passport")
    assert "검토 중" in page.text and marker in page.text
    assert published(app, "civil.passport")["answer"]["ko"] != marker  # not live yet

    r = form_post(client, "/console/kb/articles/civil.passport/publish", {"version": version})
    assert r.status_code == 403 and "another editor" in r.text  # the author cannot publish it
    assert published(app, "civil.passport")["answer"]["ko"] != marker

    login(client, "ed2")
    before = len(app.state.applied)
    r = form_post(client, "/console/kb/articles/civil.passport/publish", {"version": version})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=published")
    assert published(app, "civil.passport")["answer"]["ko"] == marker
    # The publish woke this worker's poller: it reloads and the engine gets the new text.
    served = wait_served(client, app)
    revision, answers = app.state.applied[-1]
    assert len(app.state.applied) > before and answers["civil.passport"] == marker and revision == served
    with app.state.sessions() as s:
        actions = s.scalars(select(AuditLog.action).where(AuditLog.target == f"kb:civil.passport@v{version}")
                            .order_by(AuditLog.id)).all()
        assert actions == ["kb.draft", "kb.submit", "kb.publish"]
        who = s.scalars(select(AuditLog.who).where(AuditLog.action == "kb.publish",
                                                   AuditLog.target == f"kb:civil.passport@v{version}")).one()
        assert who == "ed2"

    history = client.get(f"/console/kb/articles/civil.passport/versions/{version}")
    assert history.status_code == 200
    assert "<ins>" in history.text and "<del>" in history.text and "3일" in history.text


def test_a_supervisor_publishes_their_own_edit(client: TestClient, app: Any) -> None:
    login(client, "boss")
    token = client.cookies["pcrm_csrf"]
    content, base = working(app, "waste.bulky_sticker")
    content["answer"]["ko"] = "대형폐기물은 {city} 홈페이지에서 신고해요."
    saved = api_post(client, "/console/api/kb/articles", token, {"article": content, "base_version": base})
    assert saved.status_code == 200, saved.text
    v = saved.json()["version"]
    assert api_post(client, "/console/api/kb/articles/waste.bulky_sticker/submit", token,
                    {"version": v}).status_code == 200
    r = api_post(client, "/console/api/kb/articles/waste.bulky_sticker/publish", token, {"version": v})
    assert r.status_code == 200 and r.json()["published_version"] == v
    wait_served(client, app)
    assert app.state.applied[-1][1]["waste.bulky_sticker"] == "대형폐기물은 {city} 홈페이지에서 신고해요."


def test_rollback_republishes_the_old_answer(client: TestClient, app: Any) -> None:
    login(client, "ed2")
    r = form_post(client, "/console/kb/articles/waste.bulky_sticker/rollback", {"version": 1})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=rolled_back")
    assert published(app, "waste.bulky_sticker")["answer"]["ko"] == BULKY["answer"]["ko"]
    wait_served(client, app)
    assert app.state.applied[-1][1]["waste.bulky_sticker"] == BULKY["answer"]["ko"]
    page = client.get("/console/kb/articles/waste.bulky_sticker")
    assert "rollback to v1" in page.text


def test_save_refuses_a_too_long_answer_and_submit_an_unknown_placeholder(client: TestClient, app: Any) -> None:
    login(client, "ed1")
    content, base = working(app, "civil.id_card_reissue")
    r = form_post(client, "/console/kb/articles/civil.id_card_reissue/edit", edit_form(content, base,
                                                                                     answer_ko="가" * 351))
    assert r.status_code == 422 and "at most 350" in r.text
    assert working(app, "civil.id_card_reissue")[1] == base
    r = form_post(client, "/console/kb/articles/civil.id_card_reissue/edit",
                  edit_form(content, base, answer_ko="{dept.nowhere.phone}로 전화하세요.", then="submit"))
    assert r.status_code == 422 and "{dept.nowhere.phone}" in r.text


def test_an_edit_of_a_stale_version_is_refused(client: TestClient, app: Any) -> None:
    login(client, "ed1")
    content, base = working(app, "civil.id_card_reissue")
    assert form_post(client, "/console/kb/articles/civil.id_card_reissue/edit",
                     edit_form(content, base, answer_ko="첫 편집")).status_code == 303
    r = form_post(client, "/console/kb/articles/civil.id_card_reissue/edit",
                  edit_form(content, base, answer_ko="같은 버전에서 시작한 둘째 편집"))
    assert r.status_code == 409 and "changed meanwhile" in r.text


def test_preview_fills_the_citys_placeholders(client: TestClient) -> None:
    login(client, "ed1")
    token = client.cookies["pcrm_csrf"]
    r = api_post(client, "/console/api/kb/preview", token,
                 {"answer": {"ko": "{dept.civil}({dept.civil.phone}) {hours} {fact.nope}", "en": "{city}"}})
    assert r.status_code == 200
    body = r.json()
    assert body["langs"]["ko"]["answer"]["text"].startswith("민원여권과(02-210-1400) 평일 09:00~18:00")
    assert body["langs"]["en"]["answer"]["text"] == "Hanbit-gu Office"
    assert body["unknown"] == ["{fact.nope}"]


def test_create_a_new_article_from_the_form(client: TestClient, app: Any) -> None:
    login(client, "ed1")
    r = form_post(client, "/console/kb/new", {
        "id": "civil.seal_certificate", "area": "civil", "department": "civil",
        "title_ko": "인감증명서 발급", "title_en": "Seal certificate",
        "questions_ko": "인감증명서 어디서 떼요?\n인감 발급 수수료",
        "questions_en": "Where do I get a seal certificate?",
        "answer_ko": "가까운 주민센터에서 본인이 신분증을 가지고 발급받아요. {dept.civil} {dept.civil.phone}",
        "answer_en": "At any community center, in person with your ID. {dept.civil} {dept.civil.phone}",
        "reviewed": "2026-12-06", "tags": "인감, seal"})
    assert r.status_code == 303, r.text
    with app.state.sessions() as s:
        art = store.get_article(s, "civil.seal_certificate")
    assert art["latest_status"] == "draft" and art["latest"]["author"] == "ed1"
    assert art["latest"]["content"]["questions"]["ko"] == ["인감증명서 어디서 떼요?", "인감 발급 수수료"]
    assert art["latest"]["content"]["tags"] == ["인감", "seal"]
    found = client.get("/console/kb", params={"q": "인감"})
    assert "civil.seal_certificate" in found.text and "civil.passport" not in found.text


# --- every worker reloads ---------------------------------------------------------------------------

def test_a_publish_by_another_worker_is_picked_up_by_the_poll(client: TestClient, app: Any) -> None:
    sync = app.state.kb_sync
    with app.state.sessions.begin() as s:  # another worker (or pcrm kb import) publishes
        content, base = store.working_content(s, "civil.id_card_reissue")
        content["answer"] = {**content["answer"], "ko": "다른 워커에서 게시한 답변"}
        v = store.save_draft(s, content, "other", base_version=base)
        store.submit(s, "civil.id_card_reissue", v, "other")
        store.publish(s, "civil.id_card_reissue", v, "reviewer", "editor")
    assert sync.refresh() is True
    assert app.state.applied[-1][1]["civil.id_card_reissue"] == "다른 워커에서 게시한 답변"
    assert sync.refresh() is False  # nothing new: no rebuild


@pytest.mark.parametrize("transport", ["in-process", "redis"])
def test_a_kb_live_event_wakes_the_poller(app: Any, transport: str) -> None:
    """With Redis, one worker's announcement reaches another worker's poller at once."""
    from bot.kb.sync import TOPIC, KbSync
    from bot.live import InProcessLiveEvents, RedisLiveEvents
    from tests.pcrm_servers import REDIS_URL, need, redis_reachable

    if transport == "redis":
        problem = redis_reachable()
        need(problem is None, problem or "")
        prefix = f"pcrm-test-{uuid.uuid4().hex[:8]}:live:"
        listener_side, publisher_side = RedisLiveEvents(REDIS_URL, prefix), RedisLiveEvents(REDIS_URL, prefix)
    else:
        listener_side = publisher_side = InProcessLiveEvents()
    done = threading.Event()
    seen: list[int] = []

    def apply(_articles: list[Any], revision: int) -> None:
        seen.append(revision)
        done.set()

    sync = KbSync(app.state.sessions, apply, live=listener_side, interval_s=3600)  # the poll alone: an hour
    sync.revision = -1  # pretend to be behind

    async def scenario() -> None:
        task = asyncio.create_task(sync.run())
        await asyncio.sleep(0.5)  # let it subscribe
        await publisher_side.publish(TOPIC, {"revision": 99})
        ok = await asyncio.to_thread(done.wait, 30)
        task.cancel()
        assert ok

    asyncio.run(scenario())
    with app.state.sessions() as s:
        assert seen == [store.revision(s)]


# --- learning loop ------------------------------------------------------------------------------

def _not_understood(app: Any, texts: list[tuple[str, str | None, float | None]]) -> list[int]:
    with app.state.sessions.begin() as s:
        conv = Conversation(key=f"rest:learn-{uuid.uuid4().hex[:8]}", channel="rest")
        s.add(conv)
        s.flush()
        rows = [Interaction(conversation_id=conv.id, channel="rest", direction="in", text=t, label=label,
                            confidence=conf, lang="ko", entities=[]) for t, label, conf in texts]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def test_learning_loop_clusters_and_attaches_questions_to_an_article(client: TestClient, app: Any) -> None:
    ids = _not_understood(app, [("여권 사진 규격이 어떻게 돼요", "conv.out_of_scope", 0.8),
                                ("여권사진 사이즈 알려줘", "faq.passport", 0.2),
                                ("여권 사진 크기 010-1234-5678", None, None),
                                ("반려견 등록 어디서 해요", "conv.out_of_scope", 0.9),
                                ("반려견등록 하려면", "conv.out_of_scope", 0.9)])
    login(client, "ed1")
    clusters = client.get("/console/api/kb/learn").json()["clusters"]
    photo = next(c for c in clusters if set(ids[:3]) <= set(c["ids"]))
    dog = next(c for c in clusters if set(ids[3:]) <= set(c["ids"]))
    assert photo is not dog and photo["count"] == 3
    assert "여권 사진 크기 010-****-5678" in photo["texts"]  # personal numbers masked
    assert photo["suggestion"]["id"] == "civil.passport"
    page = client.get("/console/kb/learn")
    assert page.status_code == 200 and "여권사진 사이즈 알려줘" in page.text

    r = form_post(client, "/console/kb/learn", {"action": "attach", "article_id": "civil.passport",
                                                  "ids": [str(i) for i in ids[:3]]})
    assert r.status_code == 303 and r.headers["location"] == "/console/kb/articles/civil.passport?done=attached"
    content, _v = working(app, "civil.passport")
    assert {"여권 사진 규격이 어떻게 돼요", "여권사진 사이즈 알려줘", "여권 사진 크기 010-****-5678"} <= set(
        content["questions"]["ko"])
    left = client.get("/console/api/kb/learn").json()["clusters"]
    assert not any(set(ids[:3]) & set(c["ids"]) for c in left)

    r = form_post(client, "/console/kb/learn", {"action": "draft", "new_id": "environment.pet_registration",
                                                  "new_title": "반려견 등록", "ids": [str(i) for i in ids[3:]]})
    assert r.status_code == 303 and r.headers["location"] == "/console/kb/articles/environment.pet_registration/edit"
    draft, _ = working(app, "environment.pet_registration")
    assert draft["title"] == {"ko": "반려견 등록"}
    assert draft["questions"]["ko"] == ["반려견 등록 어디서 해요", "반려견등록 하려면"]
    assert client.get("/console/kb/articles/environment.pet_registration/edit").status_code == 200


def test_learning_loop_labels_questions_into_the_training_data(client: TestClient, app: Any, nlu_dir: Path) -> None:
    ids = _not_understood(app, [("쓰레기 몇시에 내놔요 우리동네", "conv.out_of_scope", 0.7),
                                ("음식물 쓰레기 버리는 날", None, None)])
    login(client, "boss")
    r = form_post(client, "/console/kb/learn", {"action": "intent", "intent": "faq.waste_schedule",
                                                  "ids": [str(i) for i in ids]})
    assert r.status_code == 303 and r.headers["location"] == "/console/kb/learn?done=labelled"
    learned = nlu_dir / "nlu" / "learned.yml"
    examples = nlu_data.load(nlu_dir / "nlu").examples
    assert ("쓰레기 몇시에 내놔요 우리동네", "faq.waste_schedule") in examples
    assert ("음식물 쓰레기 버리는 날", "faq.waste_schedule") in examples
    assert learned.read_text(encoding="utf-8").startswith("# Examples staff labelled")
    r = form_post(client, "/console/kb/learn", {"action": "intent", "intent": "no.such_intent",
                                                  "ids": [str(i) for i in ids]})
    assert r.status_code == 422


# --- command line -------------------------------------------------------------------------------

def test_pcrm_kb_import_and_export_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    seed = write_seed(tmp_path / "seed", {"civil": [PASSPORT, ID_CARD], "waste": [BULKY]})
    assert main(["kb", "import", str(seed)]) == 0
    assert "3 created, 0 updated, 0 unchanged (revision 1)" in capsys.readouterr().out
    assert main(["kb", "import", str(seed)]) == 0
    assert "0 created, 0 updated, 3 unchanged (revision 1)" in capsys.readouterr().out
    assert main(["kb", "export", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["civil.yml", "waste.yml"]
    assert main(["kb", "import", str(tmp_path / "out")]) == 0
    assert "0 created, 0 updated, 3 unchanged" in capsys.readouterr().out
    bad = write_seed(tmp_path / "bad", {"civil": [{**PASSPORT, "answer": {"ko": "{fact.nope}", "en": "x"}}]})
    assert main(["kb", "import", str(bad)]) == 2
    assert "{fact.nope}" in capsys.readouterr().out


def test_an_unchanged_article_set_does_not_rebuild_the_engines_index() -> None:
    """At start the store usually holds exactly the seed the engine indexed: no second build."""
    from bot.kb.articles import Article
    from bot.kb.sync import engine_target

    class FakeKb:
        def __init__(self, articles: list[Article]) -> None:
            self.articles, self.builds = articles, 0

        def replace(self, articles: list[Article]) -> None:
            self.articles, self.builds = list(articles), self.builds + 1

    class FakeEngine:
        kb = FakeKb([Article.from_dict(dict(PASSPORT)), Article.from_dict(dict(BULKY))])

    apply = engine_target(FakeEngine())
    apply([Article.from_dict(dict(BULKY)), Article.from_dict(dict(PASSPORT))], 1)
    assert FakeEngine.kb.builds == 0
    apply([Article.from_dict(dict(BULKY))], 2)
    assert FakeEngine.kb.builds == 1 and [a.id for a in FakeEngine.kb.articles] == ["waste.bulky_sticker"]
