"""The conversation-test runner itself (bot/conversation_tests.py): that it catches what differs,
reports format errors clearly, and counts and exits as documented.

A scripted fake engine stands in for the real one, so that a runner bug cannot hide behind the
bot's behaviour; ``tests/test_conversations.py`` runs the real conversations on the real engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot import cli
from bot import conversation_tests as ct
from bot.dialogue.state import InMemoryStateStore
from bot.messages import Event, Reply, Routing, Turn


class FakeEngine:
    """Answers each message from a script: (reply text, routing, label, events, slots after)."""

    def __init__(self, script: list[dict[str, Any]]) -> None:
        self.script = list(script)
        self.states = InMemoryStateStore()
        self.seen: list[Any] = []

    def handle(self, message: Any) -> Turn:
        self.seen.append(message)
        step = self.script.pop(0)
        state = self.states.load(message.conversation_key)
        state.slots = dict(step.get("slots", {}))
        self.states.save(state)
        return Turn(conversation_key=message.conversation_key, lang=step.get("lang", "ko"),
                    label=step.get("label", "x"), confidence=1.0, replies=[Reply(step.get("text", ""))],
                    events=[Event(t, d) for t, d in step.get("events", [])],
                    routing=Routing(step.get("routing", "answer")))


def factory(script: list[dict[str, Any]]):  # noqa: ANN201
    engines: list[FakeEngine] = []

    def make(clock):  # noqa: ANN001, ANN202
        engines.append(FakeEngine(script))
        engines[-1].clock = clock
        return engines[-1]

    make.engines = engines  # type: ignore[attr-defined]
    return make


def write(tmp_path: Path, text: str, name: str = "c.yml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


POTHOLE = """
- name: pothole
  clock: closed
  channel: sms
  sender_phone: "+821012345678"
  turns:
    - user: 도로에 구멍이 났어요
      bot: ["어디|위치"]
      not_bot: ["접수(되었|됐)"]
      routing: collect
      slots: {service_code: roads.pothole, location: null}
    - user: 중앙로 12요
      slots: {location: 중앙로 12}
  expect:
    tickets: [{service_code: roads.pothole, location: 중앙로 12}]
    callbacks: [{phone: 010-1234-5678, department: water}]
    events: [emergency_note]
"""

GOOD = [
    {"text": "위치가 어디인가요?", "routing": "collect", "slots": {"service_code": "roads.pothole"}},
    {"text": "접수번호 2026-000001", "routing": "request", "slots": {"location": "한빛동 중앙로 12 앞"},
     "events": [("request_opened", {"service_code": "roads.pothole", "location": "한빛동 중앙로 12 앞"}),
                ("callback", {"phone": "+821012345678", "department": "water"}),
                ("emergency_note", {"text": "x"})]},
]


def test_a_conversation_that_matches_passes_and_the_channel_carries_the_phone(tmp_path):
    [conv] = ct.load_file(write(tmp_path, POTHOLE))
    make = factory(GOOD)
    result = ct.run_conversation(conv, make)
    assert result.failures == [] and result.status == "PASS"
    msg = make.engines[0].seen[0]
    assert (msg.channel, msg.sender_id) == ("twilio_sms", "+821012345678")
    assert make.engines[0].clock() == ct.CLOCKS["closed"]
    assert result.transcript[1] == ("중앙로 12요", "접수번호 2026-000001")


def test_every_difference_is_a_failure_naming_its_turn(tmp_path):
    [conv] = ct.load_file(write(tmp_path, POTHOLE))
    bad = [
        {"text": "접수되었어요", "routing": "answer", "slots": {"location": "중앙로"}},
        {"text": "", "slots": {"location": "중앙로"}},
    ]
    failures = ct.run_conversation(conv, factory(bad)).failures
    text = "\n".join(failures)
    assert "turn 1" in text and "/어디|위치/" in text                    # a reply regex that did not match
    assert "must not match /접수(되었|됐)/" in text                        # a forbidden reply
    assert "routing 'answer', expected collect" in text
    assert "slot service_code = None, expected 'roads.pothole'" in text
    assert "turn 1 ('도로에 구멍이 났어요'): slot location = '중앙로', expected absent or empty" in text
    assert "turn 2 ('중앙로 12요'): slot location = '중앙로', expected '중앙로 12'" in text
    assert "end: tickets opened []" in text
    assert "no callback event like" in text
    assert "no 'emergency_note' event" in text


def test_none_expected_means_none_happened(tmp_path):
    conv_text = """
- name: nothing
  turns:
    - user: 안녕
      not_events: [handoff]
      not_label: conv.emergency
  expect: {tickets: [], handoffs: [], callbacks: [], not_events: [emergency_note]}
"""
    [conv] = ct.load_file(write(tmp_path, conv_text))
    script = [{"label": "conv.emergency", "events": [("handoff", {"department": "safety"}),
                                                     ("callback", {"phone": "010"}),
                                                     ("request_opened", {"service_code": "x"}),
                                                     ("emergency_note", {})]}]
    text = "\n".join(ct.run_conversation(conv, factory(script)).failures)
    for part in ("unexpected 'handoff' event", "label 'conv.emergency' is one it must not be",
                 "expected no handoff event", "expected no callback event", "tickets opened",
                 "a 'emergency_note' event occurred"):
        assert part in text


def test_an_engine_crash_is_a_failure_not_a_crash_of_the_run(tmp_path):
    [conv] = ct.load_file(write(tmp_path, POTHOLE))

    class Broken(FakeEngine):
        def handle(self, message):  # noqa: ANN001, ANN202
            raise RuntimeError("boom")

    result = ct.run_conversation(conv, lambda clock: Broken([]))
    assert result.status == "FAIL" and "RuntimeError: boom" in result.failures[0]


def test_xfail_counts_apart_and_an_xpass_is_still_a_pass(tmp_path):
    text = """
- {name: a, xfail: known gap, turns: [{user: x, bot: nope}]}
- {name: b, xfail: known gap, turns: [{user: x}]}
- {name: c, turns: [{user: x}]}
- {name: d, turns: [{user: x, bot: nope}]}
"""
    convs = ct.load_file(write(tmp_path, text))
    results = [ct.run_conversation(c, factory([{"text": "yes"}])) for c in convs]
    assert [r.status for r in results] == ["XFAIL", "XPASS", "PASS", "FAIL"]
    assert ct.totals(results) == {"total": 4, "passed": 1, "failed": 1, "xfail": 1, "xpass": 1,
                                  "success_rate": round(2 / 3, 4)}


@pytest.mark.parametrize("text,message", [
    ("- name: x\n  turns: [{bot: hi}]\n", "turn 1: a turn needs 'user'"),
    ("- name: x\n  turns: [{user: hi, reply: hi}]\n", "unknown key(s) reply"),
    ("- name: x\n  turns: [{user: hi, bot: '(unclosed'}]\n", "bad regex '(unclosed'"),
    ("- name: x\n  channel: fax\n  turns: [{user: hi}]\n", "channel must be one of"),
    ("- name: x\n  clock: noon\n  turns: [{user: hi}]\n", "clock must be 'open', 'closed' or an ISO datetime"),
    ("- name: x\n  turns: []\n", "'turns' must be a non-empty list"),
    ("- turns: [{user: hi}]\n", "needs a non-empty 'name'"),
    ("- name: x\n  turns: [{user: hi}]\n  expect: {tickets: {a: 1}}\n", "expect.tickets must be a list"),
    ("- name: x\n  turns: [{user: hi}]\n  expect: {ticket: []}\n", "unknown key(s) ticket"),
    ("name: x\n", "must be a list of conversations"),
    ("- name: x\n  turns: [{user: hi\n", "not valid YAML"),
    ("- name: x\n  sender_phone: [82]\n  turns: [{user: hi}]\n", "sender_phone must be a quoted string"),
])
def test_format_errors_say_where_and_what(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ct.FormatError) as err:
        ct.load_file(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_names_are_unique_across_files(tmp_path):
    write(tmp_path, "- {name: same, turns: [{user: a}]}\n", "a.yml")
    write(tmp_path, "- {name: same, turns: [{user: b}]}\n", "b.yml")
    with pytest.raises(ct.FormatError, match="already used in a.yml"):
        ct.load([tmp_path])


def test_yes_no_and_numbers_are_what_residents_typed_not_booleans_or_octal(tmp_path):
    text = ("- {name: x, turns: [{user: yes}, {user: no}, {user: on}, {user: 5}, {user: 01055556666},"
            " {user: 2026-12-01}]}\n")
    [conv] = ct.load_file(write(tmp_path, text))
    assert [t.user for t in conv.turns] == ["yes", "no", "on", "5", "01055556666", "2026-12-01"]
    [conv] = ct.load_file(write(tmp_path, "- {name: x, turns: [{user: a, slots: {consent: false}}]}\n"))
    assert conv.turns[0].slots == {"consent": False}


def test_a_naive_clock_is_seoul_time(tmp_path):
    [conv] = ct.load_file(write(tmp_path, '- {name: x, clock: "2026-11-27T23:30:00", turns: [{user: a}]}\n'))
    assert conv.clock.utcoffset().total_seconds() == 9 * 3600 and conv.clock.hour == 23


def test_cli_prints_a_line_per_conversation_and_exits_1_on_a_failure(tmp_path, monkeypatch, capsys):
    write(tmp_path, "- {name: good one, turns: [{user: x, bot: ok}]}\n"
                    "- {name: bad one, turns: [{user: x, bot: nope}]}\n"
                    "- {name: gap, xfail: later, turns: [{user: x, bot: nope}]}\n")
    monkeypatch.setattr(ct, "engine_factory", lambda nlu=None: factory([{"text": "ok"}]))
    assert cli.main(["test", "conversations", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "PASS   c.yml: good one" in out and "FAIL   c.yml: bad one" in out and "XFAIL  c.yml: gap" in out
    assert "3 conversations: 1 passed, 1 failed, 1 xfail, 0 xpass; success rate 50.0%" in out
    assert cli.main(["test", "conversations", str(tmp_path), "-k", "GOOD"]) == 0
    assert cli.main(["test", "conversations", str(tmp_path), "-k", "bad"]) == 1


def test_cli_json_has_every_result_and_the_totals(tmp_path, monkeypatch, capsys):
    write(tmp_path, "- {name: good one, turns: [{user: x, bot: ok}]}\n- {name: bad one, turns: [{user: x, bot: no}]}\n")
    monkeypatch.setattr(ct, "engine_factory", lambda nlu=None: factory([{"text": "ok"}]))
    assert cli.main(["test", "conversations", str(tmp_path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["status"]) for r in doc["results"]] == [("good one", "PASS"), ("bad one", "FAIL")]
    assert doc["results"][1]["failures"][0].startswith("turn 1 ('x'): reply does not match /no/")
    assert doc["totals"]["success_rate"] == 0.5


def test_cli_reports_a_format_error_and_exits_2(tmp_path, capsys):
    write(tmp_path, "- {name: x, turns: [{usr: hi}]}\n")
    assert cli.main(["test", "conversations", str(tmp_path)]) == 2
    assert "format error" in capsys.readouterr().err


def test_the_shipped_conversations_load():
    convs = ct.load()
    assert len(convs) >= 150
    assert {c.source for c in convs} >= {"form_slots.yml", "emergencies.yml", "after_hours.yml"}


def test_no_conversation_copies_a_training_example():
    """The conversations specify behaviour on words the model has not been trained on."""
    import re

    import yaml

    def norm(text: str) -> str:
        return re.sub(r"[\s.,!?~]+", "", text).lower()

    root = Path(__file__).resolve().parent.parent / "nlu_data" / "nlu"
    examples: set[str] = set()
    for f in root.glob("*.yml"):
        for block in (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("nlu", []):
            for line in str(block.get("examples", "")).splitlines():
                examples.add(norm(line.strip().removeprefix("- ")))
    copied = [t.user for c in ct.load() for t in c.turns if len(t.user) > 8 and norm(t.user) in examples]
    assert copied == []
