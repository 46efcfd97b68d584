"""The article schema: clear load errors, placeholders filled from config.yml, validity windows."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from bot.kb.articles import Article, ArticleError, Placeholders, format_phone, load_dir
from bot.kb.cli import export_articles
from bot.settings import ROOT, load_config

FIXTURE = ROOT / "tests" / "data" / "kb"
CONFIG = load_config(ROOT / "config.yml")


def _article(**over: object) -> dict:
    base = {
        "id": "civil.test", "department": "civil",
        "title": {"ko": "시험", "en": "Test"},
        "questions": {"ko": ["시험 어떻게 해요?"], "en": ["How do I test?"]},
        "answer": {"ko": "{dept.civil}({dept.civil.phone})에 문의하세요.", "en": "Ask the {dept.civil}."},
    }
    base.update(over)
    return base


def _write(tmp_path: Path, *articles: dict, name: str = "x.yml") -> Path:
    (tmp_path / name).write_text(yaml.safe_dump({"area": "x", "articles": list(articles)}, allow_unicode=True),
                                 encoding="utf-8")
    return tmp_path


def test_the_fixture_knowledge_base_loads_against_the_city_config():
    articles = load_dir(FIXTURE, CONFIG)
    assert len(articles) >= 20
    faq = {a.faq for a in articles if a.faq}
    assert len(faq) == 12  # every catalog FAQ topic has its article


def test_a_missing_language_is_named_with_the_article_and_field(tmp_path):
    bad = _article(answer={"ko": "답이에요"})
    with pytest.raises(ArticleError) as err:
        load_dir(_write(tmp_path, bad), CONFIG)
    assert "x.yml: #1 civil.test: answer: missing language 'en'" in err.value.problems


def test_an_unknown_placeholder_is_a_load_error(tmp_path):
    bad = _article(answer={"ko": "{dept.civil.fax}로 보내세요", "en": "Call {fact.no_such_fact}."})
    with pytest.raises(ArticleError) as err:
        load_dir(_write(tmp_path, bad), CONFIG)
    assert "civil.test: answer.ko: unknown placeholder {dept.civil.fax}" in err.value.problems
    assert "civil.test: answer.en: unknown placeholder {fact.no_such_fact}" in err.value.problems


def test_duplicate_ids_across_files_are_reported_once_each(tmp_path):
    _write(tmp_path, _article(), name="a.yml")
    _write(tmp_path, _article(), name="b.yml")
    with pytest.raises(ArticleError) as err:
        load_dir(tmp_path, CONFIG)
    assert err.value.problems == ["civil.test: duplicate id (2 articles)"]


def test_a_title_with_an_unquoted_comma_is_caught_not_truncated(tmp_path):
    """YAML reads ``{en: Parks (dogs, tents)}`` as two keys; the loader says so instead of
    serving the title "Parks (dogs"."""
    (tmp_path / "x.yml").write_text(
        "area: x\narticles:\n  - id: x.parks\n    title: {ko: 공원, en: Parks (dogs, tents)}\n"
        "    questions: {ko: [공원 어디], en: [park hours]}\n    answer: {ko: 네, en: yes}\n", encoding="utf-8")
    with pytest.raises(ArticleError, match="unknown language 'tents\\)'"):
        load_dir(tmp_path, CONFIG)


def test_lenient_loading_drops_only_the_bad_article(tmp_path):
    problems: list[str] = []
    arts = load_dir(_write(tmp_path, _article(), _article(id="civil.other", answer={"ko": "{nope}", "en": "x"})),
                    CONFIG, strict=False, problems=problems)
    assert [a.id for a in arts] == ["civil.test"]
    assert problems == ["civil.other: answer.ko: unknown placeholder {nope}"]


def test_placeholders_are_filled_from_config_in_each_language():
    ph = Placeholders(CONFIG)
    assert ph.render("{city} {city.phone}", "ko") == "한빛구청 02-2100-1000"
    assert ph.render("{city}, {hours}", "en") == "Hanbit-gu Office, weekdays 09:00–18:00"
    assert ph.render("{hours} ({hours.open}-{hours.close})", "ko") == "평일 09:00~18:00 (09:00-18:00)"
    # Department names from the catalog, numbers from config.yml's E.164, formatted for people.
    assert ph.render("{dept.civil} {dept.civil.phone}", "ko") == "민원여권과 02-210-1400"
    assert ph.render("{dept.welfare}", "en") == "Welfare Policy Department"
    assert ph.render("{fact.night_desk}", "en") == "a late desk on Tuesdays until 20:00"
    assert ph.render("{city.address}", "ko").startswith("서울특별시 한빛구")


def test_a_changed_config_number_changes_the_answer():
    cfg = {**CONFIG, "departments": {**CONFIG["departments"], "civil": {"phone": "+82312345678"}}}
    assert Placeholders(cfg).render("{dept.civil.phone}", "ko") == "031-234-5678"


@pytest.mark.parametrize(("raw", "shown"), [
    ("+8222101400", "02-210-1400"), ("+82222101400", "02-2210-1400"), ("+821012345678", "010-1234-5678"),
    ("+82315551234", "031-555-1234"), ("15990903", "1599-0903"), ("02-2100-1000", "02-2100-1000"),
])
def test_phone_numbers_are_shown_the_way_residents_dial_them(raw, shown):
    assert format_phone(raw) == shown


def test_validity_window_is_inclusive_at_both_ends():
    a = Article.from_dict(_article(valid_from="2026-12-20", valid_until="2027-01-02"))
    assert not a.active_on(date(2026, 12, 19))
    assert a.active_on(date(2026, 12, 20)) and a.active_on(date(2027, 1, 2))
    assert not a.active_on(date(2027, 1, 3))
    with pytest.raises(ArticleError, match="before valid_from"):
        Article.from_dict(_article(valid_from="2027-01-02", valid_until="2026-12-20"))


def test_to_dict_round_trips_and_export_writes_loadable_files(tmp_path):
    articles = load_dir(FIXTURE, CONFIG)
    for a in articles:
        assert Article.from_dict(a.to_dict(), area=a.area) == a
    export_articles(articles, tmp_path)
    again = load_dir(tmp_path, CONFIG)
    assert sorted(a.to_dict()["id"] for a in again) == sorted(a.id for a in articles)
    assert {a.id: a.to_dict() for a in again} == {a.id: a.to_dict() for a in articles}


def test_placeholders_take_the_typed_config_and_quote_only_what_config_yml_gives():
    from bot.municipality import Municipality, parse

    typed = Placeholders(Municipality.of(CONFIG))
    for text, lang in (("{city} {hours} {dept.civil.phone} {fact.night_desk}", "ko"), ("{city.address}", "en")):
        assert typed.render(text, lang) == Placeholders(CONFIG).render(text, lang)
    # The code's default hours (09:00-18:00) run the office, but an answer quotes no hours the
    # city did not write; a name given only in Korean is the English one too.
    ph = Placeholders(parse({"municipality": {"name": {"ko": "한빛구청"}}}))
    assert ph.unknown("{hours} {hours.open} {city.phone} {fact.x}", "ko") == [
        "{hours}", "{hours.open}", "{city.phone}", "{fact.x}"]
    assert ph.render("{city}", "en") == "한빛구청"
    ph = Placeholders({"business_hours": {"weekdays": ["tue", "mon"], "open": "08:30", "close": "17:00"}})
    assert ph.render("{hours}", "ko") == "화월요일 08:30~17:00"
