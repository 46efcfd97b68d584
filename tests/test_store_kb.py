"""The knowledge-base store (crm_store/kb.py) on SQLite and PostgreSQL: seed import, versions,
review, publishing, rollback, the revision workers poll, export, audit, and the migration."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic import command
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.kb.articles import load_dir
from crm_store import kb
from crm_store.db import alembic_config, make_engine, upgrade
from crm_store.models import Agent, AuditLog, Conversation, Interaction, KbArticleVersion
from tests.conftest import POSTGRES_URL

PASSPORT: dict[str, Any] = {
    "id": "civil.passport", "faq": "faq.passport", "department": "civil",
    "title": {"ko": "여권 발급 절차와 기간", "en": "Passport application and processing time"},
    "questions": {"ko": ["여권 만들려면 어떻게 해요?", "여권 발급 얼마나 걸려요?"],
                  "en": ["How do I get a passport?", "How long does a passport take?"]},
    "answer": {"ko": "여권은 {dept.civil}({dept.civil.phone})에서 본인이 직접 신청해요. 보통 4~5일 걸려요.",
               "en": "Apply in person at the {dept.civil} ({dept.civil.phone}). It takes 4-5 working days."},
    "source": {"title": "외교부 여권안내", "url": "https://www.passport.go.kr"},
    "valid_from": None, "reviewed": "2026-12-01", "tags": ["여권", "passport"],
}
ID_CARD: dict[str, Any] = {
    "id": "civil.id_card_reissue", "department": "civil",
    "title": {"ko": "주민등록증 재발급", "en": "Reissuing a resident registration card"},
    "questions": {"ko": ["주민등록증 잃어버렸어요"], "en": ["I lost my ID card"]},
    "answer": {"ko": "가까운 주민센터에서 재발급해요. 수수료는 5,000원이에요.",
               "en": "Reissue it at any community center. The fee is 5,000 won."},
    "reviewed": "2026-12-01",
}
BULKY: dict[str, Any] = {
    "id": "waste.bulky_sticker", "department": "waste",
    "title": {"ko": "대형폐기물 스티커", "en": "Bulky waste sticker"},
    "questions": {"ko": ["소파 버리려면요?"], "en": ["How do I throw away a sofa?"]},
    "answer": {"ko": "{city} 홈페이지({city.website})에서 신고하고 스티커를 붙여 내놓아요.",
               "en": "Report it on the {city} website ({city.website}) and attach the sticker."},
    "reviewed": "2026-12-01",
}


def write_seed(directory: Path, files: dict[str, list[dict[str, Any]]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for area, articles in files.items():
        (directory / f"{area}.yml").write_text(
            yaml.safe_dump({"area": area, "articles": articles}, allow_unicode=True, sort_keys=False),
            encoding="utf-8")
    return directory


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> sessionmaker[Session]:
    seed = write_seed(tmp_path / "seed", {"civil": [PASSPORT, ID_CARD], "waste": [BULKY]})
    with session_factory.begin() as s:
        result = kb.import_seed(s, seed)
    assert sorted(result.created) == ["civil.id_card_reissue", "civil.passport", "waste.bulky_sticker"]
    return session_factory


def edit_answer(s: Session, article_id: str, ko: str, who: str) -> int:
    content, base = kb.working_content(s, article_id)
    content["answer"] = {**content["answer"], "ko": ko}
    return kb.save_draft(s, content, who, base_version=base)


def published_answer(sessions: sessionmaker[Session], article_id: str) -> str:
    with sessions() as s:
        _rev, articles = kb.published_articles(s)
    return next(a["answer"]["ko"] for a in articles if a["id"] == article_id)


def test_seed_import_publishes_every_article_and_reimport_changes_nothing(
        seeded: sessionmaker[Session], tmp_path: Path) -> None:
    with seeded() as s:
        rev, articles = kb.published_articles(s)
        assert rev == 1
        assert [a["id"] for a in articles] == ["civil.id_card_reissue", "civil.passport", "waste.bulky_sticker"]
        passport = next(a for a in articles if a["id"] == "civil.passport")
        assert passport["reviewed"] == "2026-12-01" and "valid_from" not in passport  # JSON-safe, nulls dropped
        assert kb.get_article(s, "civil.passport")["area"] == "civil"
    seed = write_seed(tmp_path / "seed", {"civil": [PASSPORT, ID_CARD], "waste": [BULKY]})
    with seeded.begin() as s:
        again = kb.import_seed(s, seed)
    assert (again.created, again.updated, len(again.unchanged), again.revision) == ([], [], 3, 1)
    with seeded() as s:
        assert [h["version"] for h in kb.get_article(s, "civil.passport")["history"]] == [1]

    changed = {**ID_CARD, "answer": {**ID_CARD["answer"], "ko": "주민센터에서 재발급해요. 수수료 5,000원."}}
    seed = write_seed(tmp_path / "seed", {"civil": [PASSPORT, changed], "waste": [BULKY]})
    with seeded.begin() as s:
        third = kb.import_seed(s, seed)
    assert third.updated == ["civil.id_card_reissue"] and third.revision == 2
    assert published_answer(seeded, "civil.id_card_reissue") == "주민센터에서 재발급해요. 수수료 5,000원."


def test_seed_with_a_repeated_id_is_refused_whole(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    seed = write_seed(tmp_path / "bad", {"civil": [PASSPORT], "tax": [{**BULKY, "id": "civil.passport"}]})
    with pytest.raises(kb.Invalid, match="civil.passport"), session_factory.begin() as s:
        kb.import_seed(s, seed)
    with session_factory() as s:
        assert kb.is_empty(s)


def test_edit_review_publish_needs_a_second_editor_and_replaces_the_answer(seeded: sessionmaker[Session]) -> None:
    with seeded.begin() as s:
        v2 = edit_answer(s, "civil.passport", "여권은 민원여권과에서 신청해요. 3일 걸려요.", "kim")
        assert v2 == 2
        kb.submit(s, "civil.passport", v2, "kim")
    with seeded() as s:
        assert kb.revision(s) == 1  # nothing live changed yet
        art = kb.get_article(s, "civil.passport")
        assert (art["latest_status"], art["published_version"]) == ("in_review", 1)
    with pytest.raises(kb.Forbidden), seeded.begin() as s:
        kb.publish(s, "civil.passport", v2, "kim", "editor")
    with seeded.begin() as s:
        rev = kb.publish(s, "civil.passport", v2, "lee", "editor")
    assert rev == 2
    assert published_answer(seeded, "civil.passport") == "여권은 민원여권과에서 신청해요. 3일 걸려요."
    with seeded() as s:
        history = kb.get_article(s, "civil.passport")["history"]
        assert [(h["version"], h["status"], h["author"], h["reviewer"]) for h in history] == [
            (2, "published", "kim", "lee"), (1, "archived", "seed", "seed")]
        actions = s.scalars(select(AuditLog.action).where(AuditLog.target.like("kb:civil.passport%"))
                            .order_by(AuditLog.id)).all()
        assert actions == ["kb.import", "kb.draft", "kb.submit", "kb.publish"]


def test_a_supervisor_may_publish_their_own_version(seeded: sessionmaker[Session]) -> None:
    with seeded.begin() as s:
        v = edit_answer(s, "waste.bulky_sticker", "구청 홈페이지에서 신고해요.", "boss")
        kb.submit(s, "waste.bulky_sticker", v, "boss")
        kb.publish(s, "waste.bulky_sticker", v, "boss", "supervisor")
    assert published_answer(seeded, "waste.bulky_sticker") == "구청 홈페이지에서 신고해요."


def test_a_draft_cannot_be_published_without_review_and_an_incomplete_one_cannot_be_submitted(
        seeded: sessionmaker[Session]) -> None:
    with seeded.begin() as s:
        v = edit_answer(s, "civil.passport", "새 답변", "kim")
    with pytest.raises(kb.Conflict), seeded.begin() as s:
        kb.publish(s, "civil.passport", v, "lee", "editor")
    with seeded.begin() as s:
        content, base = kb.working_content(s, "civil.passport")
        content["answer"] = {"ko": "영어 답변이 없어요"}
        v3 = kb.save_draft(s, content, "kim", base_version=base)
    with pytest.raises(kb.Invalid, match="answer.en"), seeded.begin() as s:
        kb.submit(s, "civil.passport", v3, "kim")


def test_an_edit_of_an_outdated_version_is_refused(seeded: sessionmaker[Session]) -> None:
    with seeded.begin() as s:
        content, base = kb.working_content(s, "civil.passport")
    with seeded.begin() as s:
        edit_answer(s, "civil.passport", "먼저 저장한 답변", "lee")
    with pytest.raises(kb.Conflict, match="changed meanwhile"), seeded.begin() as s:
        kb.save_draft(s, {**content, "answer": {"ko": "늦게 저장", "en": "late"}}, "kim", base_version=base)


def test_a_new_draft_supersedes_the_one_in_review(seeded: sessionmaker[Session]) -> None:
    with seeded.begin() as s:
        v2 = edit_answer(s, "civil.passport", "둘째", "kim")
        kb.submit(s, "civil.passport", v2, "kim")
        v3 = edit_answer(s, "civil.passport", "셋째", "lee")
        statuses = {h["version"]: h["status"] for h in kb.get_article(s, "civil.passport")["history"]}
    assert statuses == {1: "published", 2: "archived", v3: "draft"}


def test_rollback_publishes_a_copy_of_an_old_version_at_once(seeded: sessionmaker[Session]) -> None:
    with seeded.begin() as s:
        v2 = edit_answer(s, "civil.passport", "잘못된 답변", "kim")
        kb.submit(s, "civil.passport", v2, "kim")
        kb.publish(s, "civil.passport", v2, "lee", "editor")
    with seeded.begin() as s:
        v3 = kb.rollback(s, "civil.passport", 1, "lee")
    assert v3 == 3
    assert published_answer(seeded, "civil.passport") == PASSPORT["answer"]["ko"]
    with seeded() as s:
        assert kb.revision(s) == 3
        art = kb.get_article(s, "civil.passport")
        assert art["published_version"] == 3 and art["published"]["note"] == "rollback to v1"
        assert [h["status"] for h in art["history"]] == ["published", "archived", "archived"]
        assert s.scalars(select(AuditLog.target).where(AuditLog.action == "kb.rollback")).all() == [
            "kb:civil.passport@v3<-v1"]
    with pytest.raises(kb.Conflict), seeded.begin() as s:
        kb.rollback(s, "civil.passport", 3, "lee")


def test_archive_takes_an_article_off_the_air_and_rollback_brings_it_back(seeded: sessionmaker[Session]) -> None:
    with seeded.begin() as s:
        kb.archive(s, "waste.bulky_sticker", "lee")
    with seeded() as s:
        rev, articles = kb.published_articles(s)
        assert "waste.bulky_sticker" not in {a["id"] for a in articles} and rev == 2
    with seeded.begin() as s:
        kb.rollback(s, "waste.bulky_sticker", 1, "lee")
    assert published_answer(seeded, "waste.bulky_sticker") == BULKY["answer"]["ko"]


def test_the_database_refuses_two_published_versions_of_one_article(seeded: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), seeded.begin() as s:
        s.add(KbArticleVersion(article_id="civil.passport", version=9, content=PASSPORT, status="published",
                               author="x"))
        s.flush()


def test_search_finds_korean_and_english_words_and_filters_by_status(seeded: sessionmaker[Session]) -> None:
    with seeded.begin() as s:
        edit_answer(s, "civil.id_card_reissue", "주민센터에서 재발급해요.", "kim")
    with seeded() as s:
        assert [a["id"] for a in kb.list_articles(s, "여권")] == ["civil.passport"]
        assert [a["id"] for a in kb.list_articles(s, "SOFA")] == ["waste.bulky_sticker"]
        assert [a["id"] for a in kb.list_articles(s, "재발급 주민센터")] == ["civil.id_card_reissue"]
        assert kb.list_articles(s, "100%") == []
        assert [a["id"] for a in kb.list_articles(s, status="draft")] == ["civil.id_card_reissue"]
        assert [a["id"] for a in kb.list_articles(s, area="waste")] == ["waste.bulky_sticker"]
        assert kb.counts(s) == {"published": 2, "draft": 1}


def test_create_refuses_a_taken_id_and_a_bad_one(seeded: sessionmaker[Session]) -> None:
    with pytest.raises(kb.Conflict), seeded.begin() as s:
        kb.save_draft(s, PASSPORT, "kim", create=True)
    with pytest.raises(kb.Invalid, match="lowercase"), seeded.begin() as s:
        kb.save_draft(s, {**PASSPORT, "id": "Civil Passport"}, "kim", create=True)
    with seeded.begin() as s:
        v = kb.save_draft(s, {"id": "tax.new_topic", "title": {"ko": "새 주제"}}, "kim", create=True)
        assert v == 1 and kb.get_article(s, "tax.new_topic")["published_version"] is None


def test_export_writes_the_seed_format_and_round_trips(seeded: sessionmaker[Session], tmp_path: Path) -> None:
    with seeded.begin() as s:
        v = edit_answer(s, "civil.passport", "여권은 {dept.civil}에서 신청해요.", "kim")
        kb.submit(s, "civil.passport", v, "kim")
        kb.publish(s, "civil.passport", v, "lee", "editor")
        edit_answer(s, "civil.id_card_reissue", "아직 초안", "kim")  # drafts are not exported
    out = tmp_path / "export"
    with seeded() as s:
        files = kb.export_dir(s, out)
    assert sorted(p.name for p in files) == ["civil.yml", "waste.yml"]
    doc = yaml.safe_load((out / "civil.yml").read_text(encoding="utf-8"))
    assert doc["area"] == "civil" and [a["id"] for a in doc["articles"]] == ["civil.id_card_reissue",
                                                                             "civil.passport"]
    assert doc["articles"][1]["answer"]["ko"] == "여권은 {dept.civil}에서 신청해요."
    assert str(doc["articles"][1]["reviewed"]) == "2026-12-01"
    assert doc["articles"][0]["answer"]["ko"] == ID_CARD["answer"]["ko"]
    loaded = load_dir(out)  # the engine's loader accepts what we wrote
    assert {a.id for a in loaded} == {"civil.passport", "civil.id_card_reissue", "waste.bulky_sticker"}
    with seeded.begin() as s:
        again = kb.import_seed(s, out)
    assert (again.created, again.updated, len(again.unchanged)) == ([], [], 3)


def test_revision_survives_a_wiped_state_row(seeded: sessionmaker[Session]) -> None:
    with seeded.begin() as s:
        s.execute(text("DELETE FROM kb_state"))
        assert kb.revision(s) == 0
        kb.archive(s, "civil.passport", "lee")
        assert kb.revision(s) == 1


def _interaction(s: Session, conv_id: int, body: str, label: str | None, confidence: float | None) -> int:
    row = Interaction(conversation_id=conv_id, channel="rest", direction="in", text=body, label=label,
                      confidence=confidence, lang="ko", entities=[])
    s.add(row)
    s.flush()
    return row.id


def test_learning_bookkeeping_and_adding_questions_as_a_draft(seeded: sessionmaker[Session]) -> None:
    from datetime import timedelta

    from crm_store.timeutil import utcnow

    with seeded.begin() as s:
        conv = Conversation(key="rest:learn", channel="rest")
        s.add(conv)
        s.flush()
        a = _interaction(s, conv.id, "여권 사진 규격이 어떻게 돼요", "conv.out_of_scope", 0.9)
        b = _interaction(s, conv.id, "여권사진 사이즈", "faq.passport", 0.2)
        _interaction(s, conv.id, "쓰레기 언제 버려요", "faq.waste_schedule", 0.95)
        _interaction(s, conv.id, "[deleted]", None, None)
    since = utcnow() - timedelta(hours=1)
    with seeded() as s:
        got = kb.unanswered(s, since, ["conv.out_of_scope"], 0.45)
        assert sorted(r["id"] for r in got) == [a, b]
    with seeded.begin() as s:
        new = {"ko": ["여권 사진 규격이 어떻게 돼요", "여권 만들려면 어떻게 해요?"]}  # the second one it has
        v = kb.add_questions(s, "civil.passport", new, "kim")
        assert kb.mark_learned(s, [a, b], "attach", "civil.passport", "kim") == 2
        assert kb.mark_learned(s, [a], "attach", "civil.passport", "lee") == 0
    with seeded() as s:
        draft = kb.get_version(s, "civil.passport", v)
        assert draft["status"] == "draft"
        assert draft["content"]["questions"]["ko"] == [*PASSPORT["questions"]["ko"], "여권 사진 규격이 어떻게 돼요"]
        assert kb.unanswered(s, since, ["conv.out_of_scope"], 0.45) == []


# --- migration ---------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}", None
        return
    request.getfixturevalue("postgres_schema_url")
    # pg_trgm must not be created inside this throwaway schema (migration 0002 creates it where
    # the search path points when it is missing): dropping the schema would drop the extension
    # and with it the trigram index of every other schema in the database.
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    admin.dispose()
    schema = f"pcrm_kbmig_{uuid.uuid4().hex[:10]}"
    try:
        yield POSTGRES_URL, schema
    finally:
        admin = create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def test_migration_0007_up_down_up_keeps_agents_and_allows_editors(fresh_db: tuple[str, str | None]) -> None:
    url, schema = fresh_db
    upgrade(url, schema=schema, revision="0006")
    engine = make_engine(url, schema)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO agents (username, password_hash, role, departments, display_name, active) "
                              "VALUES ('kim', 'x', 'agent', '[]', 'kim', true)"))
        cfg = alembic_config(url, schema)
        command.upgrade(cfg, "0007")
        with Session(engine) as s, s.begin():
            s.add(Agent(username="ed", password_hash="x", role="editor", departments=[], display_name="ed"))
        with engine.connect() as conn:
            assert {"kb_articles", "kb_article_versions", "kb_state", "kb_learned"} <= set(
                inspect(conn).get_table_names())
        command.downgrade(cfg, "0006")
        with engine.connect() as conn:
            assert "kb_articles" not in inspect(conn).get_table_names()
            roles = dict(conn.execute(text("SELECT username, role FROM agents")).all())
        assert roles == {"kim": "agent", "ed": "agent"}
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE agents SET role = 'editor' WHERE username = 'kim'"))
        command.upgrade(cfg, "head")
    finally:
        engine.dispose()


def test_unanswered_includes_questions_the_knowledge_base_abstained_on(session_factory: sessionmaker[Session]) -> None:
    """A confident classifier label is no proof of an answer: the bot's "no answer" reply is."""
    from datetime import timedelta

    from crm_store.timeutil import utcnow

    abstain = "죄송해요, 그 질문에 대한 안내는 아직 제가 갖고 있지 않아요."
    with session_factory.begin() as s:
        conv = Conversation(key="rest:abstain", channel="rest")
        s.add(conv)
        s.flush()
        asked = _interaction(s, conv.id, "여권 사진 배경색 흰색이어야 해요?", "faq.passport", 0.93)
        s.add(Interaction(conversation_id=conv.id, channel="rest", direction="out", text=abstain, entities=[]))
        s.flush()
        _interaction(s, conv.id, "여권 얼마나 걸려요", "faq.passport", 0.95)
        s.add(Interaction(conversation_id=conv.id, channel="rest", direction="out", text="보통 4~8일 걸려요.",
                          entities=[]))
    with session_factory() as s:
        since = utcnow() - timedelta(hours=1)
        assert kb.unanswered(s, since, ["conv.out_of_scope"], 0.45) == []
        got = kb.unanswered(s, since, ["conv.out_of_scope"], 0.45, abstain_texts=[abstain])
        assert [r["id"] for r in got] == [asked]
