"""Places and duplicates: the district gazetteer, and "the same pothole" found by both request stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.geo import distance_m, gazetteer
from bot.service_requests import (
    DuplicateRule,
    InMemoryRequestStore,
    RequestDraft,
    RequestStore,
    duplicate_rules,
)
from crm_store import conversations
from crm_store.db import make_session_factory, upgrade
from crm_store.requests import SqlRequestStore
from tests.conftest import _truncate_all

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)


def test_shared_location_reads_back_as_the_nearest_road_address() -> None:
    addr = gazetteer().reverse(37.5665, 126.978)
    assert addr is not None
    assert addr.label("ko").startswith("한빛로 11") and "(한빛동)" in addr.label("ko")
    assert "Hanbit-ro" in addr.label("en")
    assert gazetteer().reverse(37.60, 127.10) is None  # outside the district


def test_typed_addresses_in_either_language_and_landmarks_geocode_to_the_same_place() -> None:
    g = gazetteer()
    ko, en = g.forward("중앙로 12 앞에 포트홀이요"), g.forward("pothole at 12 Jungang-ro")
    assert ko is not None and en is not None and ko.key == en.key == "jungang-ro:12"
    assert distance_m(ko.lat, ko.long, en.lat, en.long) == 0
    station = g.forward("한빛역 3번 출구 앞")
    assert station is not None and station.key == "hanbit-ro:90"
    assert g.forward("새솔로 999") is None  # no such house number
    assert g.address_key("중앙로12 앞") == g.address_key("중앙로 12") == "jungang-ro:12"


def test_rules_come_from_config_per_service_over_the_district_default() -> None:
    cfg = {"duplicates": {"meters": 40, "days": 10},
           "services": {"roads.pothole": {"duplicate": {"meters": 25}}, "water.leak": {}}}
    rules = duplicate_rules(cfg)
    assert rules["roads.pothole"] == DuplicateRule(25, 10)
    assert rules["water.leak"] == rules["*"] == DuplicateRule(40, 10)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def make_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Callable[[], RequestStore]]:
    """Each test runs on the in-memory store and on the SQL store (SQLite and PostgreSQL)."""
    if request.param == "memory":
        yield InMemoryRequestStore
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'pcrm.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_schema_url")
        _truncate_all(url)
    factory = make_session_factory(url)
    yield lambda: SqlRequestStore(factory, clock=lambda: NOW)
    factory.kw["bind"].dispose()


def _open(store: RequestStore, **kw: object) -> str:
    base: dict[str, object] = dict(service_code="roads.pothole", department="roads", description="구멍",
                                   address_string="중앙로 100", channel="webchat", sender_id="a")
    base.update(kw)
    return store.open(RequestDraft(**base)).ticket  # type: ignore[arg-type]


def test_a_report_near_an_open_one_of_the_same_service_is_its_duplicate(
        make_store: Callable[[], RequestStore]) -> None:
    store = make_store()
    first = _open(store, lat=37.566, long=126.979)
    _open(store, service_code="roads.streetlight", department="roads", lat=37.566, long=126.979)
    now = datetime.now(UTC) if isinstance(store, InMemoryRequestStore) else NOW
    rule = DuplicateRule(meters=30, days=7)
    # 20 m east: the same pothole; 60 m: another one; another service: never.
    dup = store.find_duplicate("roads.pothole", None, 37.566, 126.979 + 20 / 88_000, now, rule)
    assert dup is not None and dup.ticket == first
    assert store.find_duplicate("roads.pothole", None, 37.566, 126.979 + 60 / 88_000, now, rule) is None
    assert store.find_duplicate("parks.tree_hazard", None, 37.566, 126.979, now, rule) is None
    # Outside the time window the old report is not offered.
    assert store.find_duplicate("roads.pothole", None, 37.566, 126.979, now + timedelta(days=8), rule) is None


def test_without_coordinates_the_same_address_in_other_words_matches(
        make_store: Callable[[], RequestStore]) -> None:
    store = make_store()
    first = _open(store, address_string="중앙로 12 앞")
    now = datetime.now(UTC) if isinstance(store, InMemoryRequestStore) else NOW
    dup = store.find_duplicate("roads.pothole", "12 Jungang-ro", None, None, now)
    assert dup is not None and dup.ticket == first
    assert store.find_duplicate("roads.pothole", "중앙로 14", None, None, now) is None


def test_a_closed_request_is_not_offered(session_factory: sessionmaker[Session]) -> None:
    store = SqlRequestStore(session_factory, clock=lambda: NOW)
    ticket = _open(store, lat=37.566, long=126.979)
    store.update_status(ticket, "resolved", note="보수 완료")
    assert store.find_duplicate("roads.pothole", "중앙로 100", 37.566, 126.979, NOW) is None


def test_subscribing_counts_each_other_resident_once(make_store: Callable[[], RequestStore]) -> None:
    store = make_store()
    ticket = _open(store, lat=37.566, long=126.979)
    assert store.subscribe(ticket, "kakao:b") == 1
    assert store.subscribe(ticket, "kakao:b") == 1
    assert store.subscribe(ticket, "telegram:c") == 2
    assert store.subscribe("2026-999999", "kakao:b") is None
    assert store.subscribers_of(ticket) == ["kakao:b", "telegram:c"]
    rec = store.get(ticket)
    assert rec is not None and rec.subscribers == 2


def test_the_reporter_subscribing_to_their_own_ticket_is_not_counted(
        session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        conversations.get_or_create(s, "webchat:a", "webchat", None)
    store = SqlRequestStore(session_factory, clock=lambda: NOW)
    ticket = _open(store)
    assert store.subscribe(ticket, "webchat:a") == 0


def test_an_agent_merges_a_duplicate_and_splits_it_again(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        for sender in ("a", "b", "c"):
            conversations.get_or_create(s, f"webchat:{sender}", "webchat", None)
    store = SqlRequestStore(session_factory, clock=lambda: NOW)
    main = _open(store, lat=37.566, long=126.979)
    dup = _open(store, sender_id="b", address_string="중앙로 100 앞", lat=37.56601, long=126.97901)
    store.subscribe(dup, "webchat:c")
    assert [r.ticket for r in store.duplicates_of(main)] == [dup]
    assert store.merge(dup, dup) is None
    merged = store.merge(dup, main, who="agent1")
    assert merged is not None and merged.ticket == main and merged.subscribers == 2
    assert store.subscribers_of(main) == ["webchat:b", "webchat:c"]
    old = store.get(dup)
    assert old is not None and old.status == "closed" and main in (old.status_notes or "")
    assert store.find_duplicate("roads.pothole", None, 37.566, 126.979, NOW) is not None
    assert store.merge(dup, main) is None  # closed already
    again = store.split(dup, who="agent1")
    assert again is not None and again.status == "open"
    assert store.split(dup) is None
