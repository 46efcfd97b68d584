"""The typed ``config.yml`` (:mod:`bot.municipality`): the shipped file validates, a bad one is
refused at start with each bad key named, and a missing key means what the code always assumed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import cli
from bot.municipality import LOW_CONFIDENCE, ConfigError, Municipality, Text, load, parse
from bot.routing import BusinessHours
from bot.settings import ROOT, Settings

SHIPPED = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))


def _problems(raw: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(raw)
    return err.value.problems


def _write(tmp_path: Path, raw: Any) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_the_shipped_config_validates_and_the_typed_values_are_the_files() -> None:
    m = load(ROOT / "config.yml")
    assert m.municipality.name.get("ko") == SHIPPED["municipality"]["name"]["ko"]
    assert m.sla.handoff_claim_minutes.emergency == SHIPPED["sla"]["handoff_claim_minutes"]["emergency"]
    assert m.nlu.clarify_below == SHIPPED["nlu"]["clarify_below"]
    assert m.enabled_channels == list(SHIPPED["channels"])
    assert m.duplicate_windows["traffic.illegal_parking"].days == 0.25
    assert m.duplicate_windows["*"].meters == SHIPPED["duplicates"]["meters"]
    assert set(m.facts) == set(SHIPPED["facts"])


def test_settings_keep_the_dict_and_add_the_typed_accessor() -> None:
    s = Settings(pcrm_config=ROOT / "config.yml")
    assert s.config() == SHIPPED
    assert s.municipality() is s.municipality()  # parsed once per process, like config()
    assert s.municipality().business_hours.open == SHIPPED["business_hours"]["open"]


def test_a_bad_time_is_named_by_its_key_and_value() -> None:
    raw = {**SHIPPED, "business_hours": {**SHIPPED["business_hours"], "open": "25:00"}}
    assert _problems(raw) == ['business_hours.open: not a time "25:00" (HH:MM, 00:00-23:59)']


def test_an_unquoted_time_yaml_read_as_a_number_says_to_quote_it() -> None:
    problems = _problems(yaml.safe_load("business_hours: {open: '09:00', close: 18:00}"))
    assert problems == ['business_hours.close: not a time 1080 (write it quoted, "HH:MM")']


def test_a_misspelt_key_is_an_error_with_the_likely_meaning() -> None:
    raw = {**SHIPPED, "sla": {**SHIPPED["sla"], "handoff_claim_minute": {"emergency": 2}}, "bussiness_hours": {}}
    assert _problems(raw) == ["sla.handoff_claim_minute: unknown key (did you mean handoff_claim_minutes?)",
                              "bussiness_hours: unknown key (did you mean business_hours?)"]


def test_every_problem_is_listed_at_once_in_the_files_own_words() -> None:
    problems = _problems({"municipality": {"timezone": "Asia/Seul"}, "engine": "spacy",
                          "channels": {"telegarm": {"enabled": True}}, "deadlines": {"faq.vehicle_tax": ["13-01"]},
                          "facts": {"fee": {"ko": "1원", "fr": "1 won"}, "odd": [1]},
                          "services": {"roads.pothole": {"expected_hours": 0}},
                          "business_hours": {"open": "18:00", "close": "09:00"}})
    assert problems == [
        'municipality.timezone: not a time zone "Asia/Seul" (an IANA name such as Asia/Seoul)',
        "engine: 'spacy' is not one of 'builtin' or 'rasa'",
        'business_hours: open "18:00" is not before close "09:00"',
        "channels.telegarm: 'telegarm' is not one of 'rest', 'webchat', 'twilio_sms', 'twilio_voice', "
        "'telegram' or 'kakao'",
        "services.roads.pothole.expected_hours: Input should be greater than 0 (got 0)",
        'deadlines.faq.vehicle_tax.0: not a date "13-01" (MM-DD)',
        "facts.fee.fr: unknown key",
        "facts.odd: not a dictionary, string, integer or number (got [1])",
    ]


def test_missing_keys_mean_what_the_code_always_assumed() -> None:
    m = Municipality.of({})
    assert (m.sla.handoff_claim_minutes.emergency, m.sla.handoff_claim_minutes.default) == (2, 15)
    assert (m.sla.abandon_after_minutes, m.sla.callback_due_minutes, m.sla.callback_offer_after_minutes) == (30, 60, 10)
    assert m.sla.claim_seconds() == {"emergency": 120, "default": 900}
    assert m.nlu.clarify_below == LOW_CONFIDENCE == 0.45
    assert (m.nlu.emergency_min_confidence, m.nlu.emergency_classifier_min) == (0.3, 0.6)
    assert m.municipality.timezone == "Asia/Seoul" and m.engine == "builtin"
    assert (m.console.max_active_per_agent, m.equity.flag_ratio, m.equity.min_group) == (5, 1.25, 5)
    assert (m.remind_days_before, m.deadlines) == (7, {})
    assert (m.duplicates.meters, m.duplicates.days) == (50, 14)
    assert m.voices == {"ko": "Polly.Seoyeon", "en": "Polly.Joanna"}
    assert m.municipality.phone is None and m.municipality.name.get("en") == ""
    hours = BusinessHours({})
    assert (hours.open, hours.close, hours.days) == ("09:00", "18:00", {"mon", "tue", "wed", "thu", "fri"})
    assert hours.is_open(datetime(2026, 11, 26, 2, 0, tzinfo=UTC))  # Thursday 11:00 in Seoul


def test_the_app_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    from bot.app import create_app

    raw = {**SHIPPED, "console": {"max_active_per_agnet": 3}}
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'pcrm.db'}", redis_url=None,
                        pcrm_config=_write(tmp_path, raw))
    with pytest.raises(ConfigError, match=r"console\.max_active_per_agnet: unknown key"):
        create_app(settings)
    assert not (tmp_path / "pcrm.db").exists()  # refused before anything was touched


def test_pcrm_config_check_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {**SHIPPED, "remind_days_before": -1})
    assert cli.main(["config", "check", str(path)]) == 2
    assert f"{path}: remind_days_before: Input should be greater than or equal to 0 (got -1)" in capsys.readouterr().err
    assert cli.main(["config", "check", str(ROOT / "config.yml")]) == 0


def test_doctor_lists_a_bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PCRM_CONFIG", str(_write(tmp_path, {**SHIPPED, "engine": "spacy"})))
    monkeypatch.setenv("OPEN311_KEYS_FILE", str(tmp_path / "none.json"))
    cli.main(["doctor", "--json"])
    findings = json.loads(capsys.readouterr().out)
    assert {"item": str(tmp_path / "config.yml"), "advice": "engine: 'spacy' is not one of 'builtin' or 'rasa'"} \
        in findings


def test_the_voice_line_and_the_rate_limiter_read_the_typed_config() -> None:
    from bot.ratelimit import InProcessRateLimiter, make_rate_limiter

    m = Municipality.of({"channels": {"twilio_voice": {"voice_en": "Polly.Matthew"}},
                         "rate_limits": {"per_sender_per_minute": 7}})
    assert m.voices == {"ko": "Polly.Seoyeon", "en": "Polly.Matthew"}
    for config in (m, {"rate_limits": {"per_sender_per_minute": 7}}):  # app.py still hands the dict
        limiter = make_rate_limiter(None, config)
        assert isinstance(limiter, InProcessRateLimiter)
        assert (limiter.per_sender_per_minute, limiter.per_channel_per_second) == (7, 0)


def test_a_key_given_twice_is_refused_naming_its_path_and_both_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Plain YAML keeps the second silently: a fact defined twice answered with the later address.
    path = tmp_path / "config.yml"
    path.write_text("facts:\n  family_center: A\n  kiosk_hours: B\n  family_center: C\n"
                    "services:\n  - {code: x, code: y}\n", encoding="utf-8")
    expected = "facts.family_center: given twice (lines 2 and 4)"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load(path)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        Settings(pcrm_config=path).municipality()  # the app's start-up path (and config())
    assert cli.main(["config", "check", str(path)]) == 2
    assert f"{path}: {expected}" in capsys.readouterr().err
    path.write_text("services:\n  - {code: x, code: y}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("services[0].code: given twice (lines 2 and 2)")):
        load(path)


def test_a_yaml_merge_key_may_override_what_it_merges(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("facts:\n  base: &b {ko: 가, en: a}\n  other:\n    <<: *b\n    en: b\n", encoding="utf-8")
    assert load(path).facts["other"] == Text(ko="가", en="b")


def test_environment_variables_read_elsewhere_are_settings_fields(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    from bot.open311 import keys_path
    from bot.secret_key import secret_path

    monkeypatch.setenv("PCRM_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("OPEN311_KEYS_FILE", str(tmp_path / "keys.json"))
    monkeypatch.setenv("OPEN311_API_KEYS", "k1,k2")
    monkeypatch.setenv("PCRM_INBOX_THREADS", "8")
    monkeypatch.setenv("PCRM_BACKUP_CONFIRMED", "1")
    s = Settings()
    assert (s.pcrm_secret_file, s.open311_keys_file) == (tmp_path / "secret", tmp_path / "keys.json")
    assert (s.open311_api_keys, s.pcrm_inbox_threads, s.pcrm_backup_confirmed) == ("k1,k2", 8, True)
    assert secret_path(s) == tmp_path / "secret" and keys_path(s) == tmp_path / "keys.json"
    monkeypatch.delenv("PCRM_SECRET_FILE")
    monkeypatch.delenv("OPEN311_KEYS_FILE")
    s = Settings(pcrm_model_dir=tmp_path / "model")
    assert secret_path(s) == tmp_path / "secret_key" and keys_path(s) == tmp_path / "open311_keys.json"


def test_an_empty_path_variable_means_unset_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCRM_SECRET_FILE", "")
    monkeypatch.setenv("OPEN311_KEYS_FILE", "")
    monkeypatch.setenv("PCRM_BACKUP_CONFIRMED", "")
    s = Settings()
    assert (s.pcrm_secret_file, s.open311_keys_file, s.pcrm_backup_confirmed) == (None, None, None)
