"""Conversation tests: whole dialogues written as YAML, run through the real engine.

Why a file format and not more pytest functions: the conversations *are* the
specification of how the bot should talk (issue 16), written by people who read
transcripts, not code. One YAML file per theme under ``tests/conversations/``
holds a list of conversations; each is run on a fresh :class:`bot.engine.Engine`
(shared NLU model and knowledge, which are read-only; a fixed clock; an
in-memory request store), and every turn's replies, routing, label and slots,
and the whole conversation's tickets, hand-offs, call-backs and events are
compared with what the file expects.

Format (see ``tests/conversations/README.md`` for the long version)::

    - name: unique name (the pytest id)
      clock: open | closed | ISO datetime (naive = Asia/Seoul)
      channel: rest | webchat | sms | voice | telegram | kakao
      sender_phone: "+821012345678"     # sms/voice: the number the channel carries
      xfail: "why this is out of scope"  # optional
      turns:
        - user: text
          bot: [regex, ...]              # each must match the joined replies (re.S | re.I)
          not_bot: [regex, ...]          # none may match
          routing: collect               # Turn.routing.action (or a list of allowed ones)
          label: roads.pothole           # Turn.label (or a list)
          not_label: conv.emergency      # labels the turn must not have
          lang: ko                       # Turn.lang
          slots: {location: 중앙로 12}    # subset of state.slots: strings are substrings, null = absent
          not_slots: {description: 틀렸}  # regexes the slot's value must not match
          events: [request_opened]       # event types this turn must emit
          not_events: [handoff]          # event types this turn must not emit
      expect:
        tickets: [{service_code: roads.pothole, location: 중앙로 12}]   # exactly these, in order
        handoffs: [{department: water}]  # these, in order, among the hand-offs; [] = none
        callbacks: [{phone: 010-1234-5678, department: water}]   # "callback" events; [] = none
        events: [emergency_note]         # event types that must have occurred
        not_events: [callback]           # event types that must not have occurred

``pcrm test conversations`` (this module's :func:`main`) prints one line per
conversation and the success rate; ``tests/test_conversations.py`` runs the same
conversations as pytest cases.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

KST = timezone(timedelta(hours=9))
#: The two named clocks: Thursday 2026-11-26, 11:00 and 23:00 in Seoul (a weekday, no holiday).
CLOCKS = {"open": datetime(2026, 11, 26, 2, 0, tzinfo=UTC), "closed": datetime(2026, 11, 26, 14, 0, tzinfo=UTC)}
#: The file's channel words → the channel names the adapters give the engine.
CHANNELS = {"rest": "rest", "webchat": "webchat", "sms": "twilio_sms", "voice": "twilio_voice",
            "telegram": "telegram", "kakao": "kakao"}
PHONE_CHANNELS = frozenset(("sms", "voice"))
DEFAULT_DIR = Path("tests") / "conversations"

_CONV_KEYS = {"name", "clock", "channel", "sender_phone", "xfail", "turns", "expect"}
_TURN_KEYS = {"user", "bot", "not_bot", "routing", "label", "not_label", "lang", "slots", "not_slots",
              "events", "not_events"}
_EXPECT_KEYS = {"tickets", "handoffs", "callbacks", "events", "not_events"}
_FLAGS = re.S | re.I


class FormatError(ValueError):
    """A conversation file that does not follow the format; the message says where and why."""


@dataclass
class TurnSpec:
    """One resident message and what must (not) come back."""

    user: str
    bot: list[str] = field(default_factory=list)
    not_bot: list[str] = field(default_factory=list)
    routing: list[str] | None = None
    label: list[str] | None = None
    not_label: list[str] = field(default_factory=list)
    lang: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    not_slots: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    not_events: list[str] = field(default_factory=list)


@dataclass
class Conversation:
    """One conversation of a file, validated."""

    name: str
    turns: list[TurnSpec]
    clock: datetime
    channel: str = "rest"
    sender_phone: str | None = None
    xfail: str | None = None
    expect: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def sender_id(self) -> str:
        """The channel's identity of the resident: the phone on sms/voice, else a made-up id."""
        if self.channel in PHONE_CHANNELS:
            return self.sender_phone or _made_up_phone(self.name)
        return "conv-" + hashlib.sha1(self.name.encode()).hexdigest()[:12]


@dataclass
class Result:
    """What running one conversation gave."""

    conversation: Conversation
    failures: list[str]
    transcript: list[tuple[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def status(self) -> str:
        if self.conversation.xfail:
            return "XPASS" if self.passed else "XFAIL"
        return "PASS" if self.passed else "FAIL"


def _made_up_phone(name: str) -> str:
    digits = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10**8
    return f"+8210{digits:08d}"


# --- loading ---------------------------------------------------------------------------------

def _strings(value: Any, where: str, what: str, regex: bool = False) -> list[str]:
    """A string or a list of strings (regexes compiled to catch typos at load time)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise FormatError(f"{where}: {what} must be a string or a list of strings, got {value!r}")
    if regex:
        for s in items:
            try:
                re.compile(s, _FLAGS)
            except re.error as exc:
                raise FormatError(f"{where}: {what} has a bad regex {s!r}: {exc}") from None
    return list(items)


def _clock(value: Any, where: str) -> datetime:
    if value is None:
        return CLOCKS["open"]
    if isinstance(value, str) and value in CLOCKS:
        return CLOCKS[value]
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, 12, 0)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise FormatError(f"{where}: clock must be 'open', 'closed' or an ISO datetime, got {value!r}") from None
    if not isinstance(value, datetime):
        raise FormatError(f"{where}: clock must be 'open', 'closed' or an ISO datetime, got {value!r}")
    return value.replace(tzinfo=KST) if value.tzinfo is None else value


def _unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise FormatError(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})")


def _turn(data: Any, where: str) -> TurnSpec:
    if not isinstance(data, dict):
        raise FormatError(f"{where}: a turn must be a mapping with at least 'user', got {data!r}")
    _unknown(data, _TURN_KEYS, where)
    if "user" not in data:
        raise FormatError(f"{where}: a turn needs 'user' (what the resident says)")
    user = data["user"]
    if not isinstance(user, str):
        raise FormatError(f"{where}: user must be text, got {user!r}")
    spec = TurnSpec(user=user)
    if "bot" in data:
        spec.bot = _strings(data["bot"], where, "bot", regex=True)
    if "not_bot" in data:
        spec.not_bot = _strings(data["not_bot"], where, "not_bot", regex=True)
    if "routing" in data:
        spec.routing = _strings(data["routing"], where, "routing")
    if "label" in data:
        spec.label = _strings(data["label"], where, "label")
    if "not_label" in data:
        spec.not_label = _strings(data["not_label"], where, "not_label")
    if "lang" in data:
        if data["lang"] not in ("ko", "en"):
            raise FormatError(f"{where}: lang must be ko or en, got {data['lang']!r}")
        spec.lang = data["lang"]
    for key in ("slots", "not_slots"):
        if key in data:
            if not isinstance(data[key], dict):
                raise FormatError(f"{where}: {key} must be a mapping of slot name to value, got {data[key]!r}")
            setattr(spec, key, dict(data[key]))
    for slot, pattern in spec.not_slots.items():
        _strings(pattern, f"{where}: not_slots.{slot}", "value", regex=True)
    for key in ("events", "not_events"):
        if key in data:
            setattr(spec, key, _strings(data[key], where, key))
    return spec


def _records(value: Any, where: str, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise FormatError(f"{where}: expect.{what} must be a list of mappings ([] = none), got {value!r}")
    return value


def _conversation(data: Any, where: str) -> Conversation:
    if not isinstance(data, dict):
        raise FormatError(f"{where}: a conversation must be a mapping with name and turns, got {type(data).__name__}")
    _unknown(data, _CONV_KEYS, where)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise FormatError(f"{where}: every conversation needs a non-empty 'name'")
    where = f"{where} ({name})"
    channel = data.get("channel", "rest")
    if channel not in CHANNELS:
        raise FormatError(f"{where}: channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    phone = data.get("sender_phone")
    if phone is not None and not isinstance(phone, str):
        raise FormatError(f"{where}: sender_phone must be a quoted string like \"+821012345678\", got {phone!r}")
    xfail = data.get("xfail")
    if xfail is not None and (not isinstance(xfail, str) or not xfail.strip()):
        raise FormatError(f"{where}: xfail must be the reason, as text")
    turns = data.get("turns")
    if not isinstance(turns, list) or not turns:
        raise FormatError(f"{where}: 'turns' must be a non-empty list")
    specs = [_turn(t, f"{where}: turn {i}") for i, t in enumerate(turns, 1)]
    expect = data.get("expect") or {}
    if not isinstance(expect, dict):
        raise FormatError(f"{where}: expect must be a mapping")
    _unknown(expect, _EXPECT_KEYS, f"{where}: expect")
    for key in ("tickets", "handoffs", "callbacks"):
        if key in expect:
            _records(expect[key], where, key)
    for key in ("events", "not_events"):
        if key in expect:
            expect[key] = _strings(expect[key], f"{where}: expect", key)
    return Conversation(name=name.strip(), turns=specs, clock=_clock(data.get("clock"), where), channel=channel,
                        sender_phone=phone, xfail=xfail, expect=expect)


def _yaml_loader() -> type:
    """A safe loader for which only true/false and null are special; everything else is text.

    Residents say "yes", "no", "on" and type numbers all the time: with YAML 1.1's rules
    ``user: yes`` would load as ``True``, ``user: 01055556666`` as the octal 146202038 and
    a date as a ``date``. Expected values compare as text too (see :func:`_value_matches`).
    """
    import yaml  # here, not at the top: `pcrm --help` imports this module for its arguments

    class Loader(yaml.SafeLoader):
        pass

    bool_tag = "tag:yaml.org,2002:bool"
    as_text = {bool_tag, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"}
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in as_text]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return Loader


def load_file(path: Path) -> list[Conversation]:
    """The conversations of one YAML file, validated (:class:`FormatError` says what is wrong)."""
    import yaml

    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise FormatError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise FormatError(f"{path}: the file must be a list of conversations, got {type(data).__name__}")
    convs = [_conversation(c, f"{path}: conversation {i}") for i, c in enumerate(data, 1)]
    for c in convs:
        c.source = path.name
    return convs


def discover(paths: Iterable[Path | str] = ()) -> list[Path]:
    """YAML files named (directories searched, sorted); the default directory when none are."""
    paths = [Path(p) for p in paths] or [default_dir()]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yml"), *p.glob("*.yaml")]))
        elif p.exists():
            files.append(p)
        else:
            raise FormatError(f"{p}: no such file or directory")
    return files


def default_dir() -> Path:
    """``tests/conversations`` of the current directory, else of this checkout."""
    if DEFAULT_DIR.is_dir():
        return DEFAULT_DIR
    return Path(__file__).resolve().parent.parent / DEFAULT_DIR


def load(paths: Iterable[Path | str] = ()) -> list[Conversation]:
    """Every conversation of the files named; names must be unique (they are the test ids)."""
    convs: list[Conversation] = []
    seen: dict[str, str] = {}
    for f in discover(paths):
        for c in load_file(f):
            if c.name in seen:
                raise FormatError(f"{f}: conversation name {c.name!r} is already used in {seen[c.name]}")
            seen[c.name] = f.name
            convs.append(c)
    return convs


# --- running ---------------------------------------------------------------------------------

class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _short(text: str, n: int = 160) -> str:
    text = text.replace("\n", " / ")
    return text if len(text) <= n else text[: n - 1] + "…"


def _digits(value: Any) -> str:
    """A phone number as comparable digits: +82 10… and 010… are the same number."""
    d = re.sub(r"\D", "", str(value))
    return "0" + d[2:] if d.startswith("82") else d


def _value_matches(expected: Any, actual: Any, key: str) -> bool:
    """Strings are substrings (the bot may keep more words around a value); phones compare as digits."""
    if expected is None:
        return actual in (None, "", [], {})
    if key == "phone":
        return actual is not None and _digits(expected) == _digits(actual)
    if isinstance(expected, str) and not isinstance(actual, bool):
        return actual is not None and expected in str(actual)
    return bool(expected == actual)


def _record_matches(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    return all(_value_matches(v, actual.get(k), k) for k, v in expected.items())


def _match_in_order(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> int | None:
    """Index of the first expected record not found after the previous match, or None if all are."""
    pos = 0
    for i, exp in enumerate(expected):
        while pos < len(actual) and not _record_matches(exp, actual[pos]):
            pos += 1
        if pos == len(actual):
            return i
        pos += 1
    return None


def run_conversation(conv: Conversation, make_engine: Callable[[Callable[[], datetime]], Any]) -> Result:
    """Play ``conv`` on a fresh engine from ``make_engine(clock)``; every difference is one failure line."""
    from bot.messages import Message

    engine = make_engine(_Clock(conv.clock))
    channel = CHANNELS[conv.channel]
    sender = conv.sender_id
    metadata = {"input": "speech"} if conv.channel == "voice" else {}
    failures: list[str] = []
    transcript: list[tuple[str, str]] = []
    events: list[Any] = []
    for n, spec in enumerate(conv.turns, 1):
        where = f"turn {n} ({_short(spec.user, 40)!r})"
        try:
            turn = engine.handle(Message(channel, sender, spec.user, metadata=dict(metadata)))
        except Exception as exc:  # noqa: BLE001 - a crash is a failure of this conversation, not of the run
            failures.append(f"{where}: the engine raised {type(exc).__name__}: {exc}")
            return Result(conv, failures, transcript)
        text = turn.text
        transcript.append((spec.user, text))
        events.extend(turn.events)
        said = f"bot said: {_short(text)!r}"
        for pattern in spec.bot:
            if not re.search(pattern, text, _FLAGS):
                failures.append(f"{where}: reply does not match /{pattern}/; {said}")
        for pattern in spec.not_bot:
            m = re.search(pattern, text, _FLAGS)
            if m:
                failures.append(f"{where}: reply must not match /{pattern}/ but has {m.group(0)!r}; {said}")
        if spec.routing and turn.routing.action not in spec.routing:
            failures.append(f"{where}: routing {turn.routing.action!r}, expected {' or '.join(spec.routing)}; {said}")
        if spec.label and turn.label not in spec.label:
            failures.append(f"{where}: label {turn.label!r}, expected {' or '.join(spec.label)}")
        if turn.label in spec.not_label:
            failures.append(f"{where}: label {turn.label!r} is one it must not be; {said}")
        if spec.lang and turn.lang != spec.lang:
            failures.append(f"{where}: answered in {turn.lang!r}, expected {spec.lang!r}; {said}")
        if spec.slots or spec.not_slots:
            slots = engine.states.load(turn.conversation_key).slots
            for key, want in spec.slots.items():
                if not _value_matches(want, slots.get(key), key):
                    wanted = "absent or empty" if want is None else repr(want)
                    failures.append(f"{where}: slot {key} = {slots.get(key)!r}, expected {wanted}")
            for key, pattern in spec.not_slots.items():
                for p in _strings(pattern, where, "not_slots"):
                    if slots.get(key) is not None and re.search(p, str(slots[key]), _FLAGS):
                        failures.append(f"{where}: slot {key} = {slots[key]!r} must not match /{p}/")
        types = [e.type for e in turn.events]
        for t in spec.events:
            if t not in types:
                failures.append(f"{where}: no {t!r} event (events: {', '.join(types)})")
        for t in spec.not_events:
            if t in types:
                failures.append(f"{where}: unexpected {t!r} event {next(e.data for e in turn.events if e.type == t)}")
    failures.extend(_check_expect(conv.expect, events))
    return Result(conv, failures, transcript)


def _check_expect(expect: dict[str, Any], events: list[Any]) -> list[str]:
    failures: list[str] = []
    of = {kind: [e.data for e in events if e.type == kind] for kind in ("request_opened", "handoff", "callback")}
    if "tickets" in expect:
        want, got = expect["tickets"], of["request_opened"]
        shown = [{k: d.get(k) for k in ("ticket", "service_code", "location")} for d in got]
        if len(want) != len(got) or _match_in_order(want, got) is not None:
            failures.append(f"end: tickets opened {shown}, expected {want}")
    for key, kind in (("handoffs", "handoff"), ("callbacks", "callback")):
        if key not in expect:
            continue
        want, got = expect[key], of[kind]
        shown = [{k: v for k, v in d.items() if k != "summary"} for d in got]
        if not want and got:
            failures.append(f"end: expected no {kind} event, got {shown}")
        elif want:
            missing = _match_in_order(want, got)
            if missing is not None:
                failures.append(f"end: no {kind} event like {want[missing]} (in order); got {shown}")
    types = {e.type for e in events}
    for t in expect.get("events", []):
        if t not in types:
            failures.append(f"end: no {t!r} event in the conversation")
    for t in expect.get("not_events", []):
        if t in types:
            failures.append(f"end: a {t!r} event occurred, expected none")
    return failures


def engine_factory(nlu: Any = None) -> Callable[[Callable[[], datetime]], Any]:
    """``clock -> Engine`` sharing one NLU model and one knowledge base (both read-only), fresh stores."""
    from bot.engine import Engine
    from bot.service_requests import InMemoryRequestStore

    first = Engine(nlu=nlu)
    shared_nlu, knowledge = first.nlu, first.knowledge

    def make(clock: Callable[[], datetime]) -> Engine:
        return Engine(nlu=shared_nlu, knowledge=knowledge, clock=clock, requests=InMemoryRequestStore())

    return make


def run_all(convs: Sequence[Conversation], make_engine: Callable[[Callable[[], datetime]], Any] | None = None,
            ) -> list[Result]:
    make_engine = make_engine or engine_factory()
    return [run_conversation(c, make_engine) for c in convs]


def totals(results: Sequence[Result]) -> dict[str, Any]:
    """Counts and the success rate: passed (XPASS included) / (all − XFAIL)."""
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "XFAIL", "XPASS")}
    judged = len(results) - counts["XFAIL"]
    ok = counts["PASS"] + counts["XPASS"]
    return {"total": len(results), "passed": counts["PASS"], "failed": counts["FAIL"], "xfail": counts["XFAIL"],
            "xpass": counts["XPASS"], "success_rate": round(ok / judged, 4) if judged else 1.0}


# --- command line (`pcrm test conversations`) ---------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="YAML files or directories (default: tests/conversations)")
    p.add_argument("--json", action="store_true", help="one JSON document with every result and the totals")
    p.add_argument("-k", dest="keyword", help="only conversations whose name (or file name) contains this")
    p.add_argument("-v", "--verbose", action="store_true", help="print the transcript of failing conversations")


def main(args: argparse.Namespace) -> int:
    try:
        convs = load(args.paths)
    except FormatError as exc:
        print(f"format error: {exc}", file=sys.stderr)
        return 2
    if args.keyword:
        k = args.keyword.lower()
        convs = [c for c in convs if k in c.name.lower() or k in c.source.lower()]
    results = run_all(convs)
    summary = totals(results)
    if args.json:
        print(json.dumps({"results": [{"name": r.conversation.name, "file": r.conversation.source,
                                        "status": r.status, "xfail": r.conversation.xfail,
                                        "failures": r.failures,
                                        "transcript": [{"user": u, "bot": b} for u, b in r.transcript]}
                                       for r in results], "totals": summary}, ensure_ascii=False, indent=1))
    else:
        for r in results:
            print(f"{r.status:5s}  {r.conversation.source}: {r.conversation.name}")
            if r.status in ("FAIL", "XFAIL"):
                for f in r.failures:
                    print(f"         - {f}")
                if args.verbose:
                    for u, b in r.transcript:
                        print(f"         > {_short(u, 200)}\n         < {_short(b, 300)}")
        print(f"{summary['total']} conversations: {summary['passed']} passed, {summary['failed']} failed, "
              f"{summary['xfail']} xfail, {summary['xpass']} xpass; success rate "
              f"{summary['success_rate']:.1%} (passed / (all - xfail))")
    return 1 if summary["failed"] else 0
