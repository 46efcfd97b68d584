"""The municipality's configuration (``config.yml``), typed and checked once at start.

``config.yml`` is the one file another city edits, so a mistake in it must be found when the
server starts, named by its key ("``business_hours.open: not a time "25:00"``"), not show up as
a wrong answer to a resident weeks later. A misspelt key is an error too (``extra="forbid"``):
silently ignoring ``busines_hours`` would leave the office on the code's default hours.

The defaults here are the ones the code used when a key was missing, defined once; the code
reads them from :func:`bot.settings.Settings.municipality` or :meth:`Municipality.of`.
"""

from __future__ import annotations

import difflib
import functools
import re
import types
from collections.abc import Mapping
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Below this NLU confidence a message is "not understood": the bot asks one clarifying question
#: (``nlu.clarify_below``), and analytics, the supervisor's log and the learning loop count it.
LOW_CONFIDENCE = 0.45
#: Minutes a queued hand-off may wait for an agent before it breaches its SLA.
EMERGENCY_CLAIM_MINUTES = 2.0
DEFAULT_CLAIM_MINUTES = 15.0
DEFAULT_TIMEZONE = "Asia/Seoul"
#: A service's form and handling time when ``services.<code>`` does not say.
DEFAULT_SLOTS = ("location", "description", "consent")
DEFAULT_EXPECTED_HOURS = 72.0
#: Twilio text-to-speech voices when ``channels.twilio_voice`` names none.
DEFAULT_VOICES = {"ko": "Polly.Seoyeon", "en": "Polly.Joanna"}

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ChannelName = Literal["rest", "webchat", "twilio_sms", "twilio_voice", "telegram", "kakao"]

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_MMDD = re.compile(r"^(\d{2})-(\d{2})$")


class ConfigError(ValueError):
    """A ``config.yml`` the code cannot run with; ``problems`` are ``key: problem`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class _Section(BaseModel):
    """Frozen (one parsed config is shared by every thread) and strict about unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _hhmm(value: Any) -> str:
    # YAML 1.1 reads an unquoted 18:00 as the base-60 integer 1080: say how to write it.
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f'not a time {value!r} (write it quoted, "HH:MM")')
    if not isinstance(value, str) or not _HHMM.match(value.strip()):
        raise ValueError(f'not a time "{value}" (HH:MM, 00:00-23:59)')
    return value.strip()


class Text(_Section):
    """Words residents read, in Korean and English."""

    ko: str = ""
    en: str = ""

    def get(self, lang: str, default: str = "") -> str:
        """The text in ``lang`` (English, else Korean; ``default`` when that is empty)."""
        return (self.en if lang == "en" else self.ko) or default


class MunicipalityInfo(_Section):
    code: str = "pcrm"
    name: Text = Text()
    address: Text = Text()
    phone: str | None = None
    website: str | None = None
    timezone: str = DEFAULT_TIMEZONE

    @field_validator("name", "address", mode="before")
    @classmethod
    def _one_text_for_both(cls, value: Any) -> Any:
        return {"ko": value, "en": value} if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'not a time zone "{value}" (an IANA name such as Asia/Seoul)') from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Nlu(_Section):
    clarify_below: float = Field(LOW_CONFIDENCE, ge=0, le=1)
    emergency_override: bool = True
    emergency_min_confidence: float = Field(0.3, ge=0, le=1)
    emergency_classifier_min: float = Field(0.6, ge=0, le=1)


class BusinessHoursConfig(_Section):
    weekdays: list[Day] = Field(default_factory=lambda: list(DAYS[:5]))
    open: str = "09:00"
    close: str = "18:00"
    holidays: list[date] = Field(default_factory=list)
    #: Tests and 24-hour call centres: a hand-off is always queued for an agent.
    always_open: bool = False

    @field_validator("open", "close", mode="before")
    @classmethod
    def _times(cls, value: Any) -> str:
        return _hhmm(value)

    @model_validator(mode="after")
    def _opens_before_closing(self) -> BusinessHoursConfig:
        if self.open >= self.close:
            raise ValueError(f'open "{self.open}" is not before close "{self.close}"')
        return self


class Channel(_Section):
    enabled: bool = True
    #: Twilio voice only: the text-to-speech voices.
    voice_ko: str | None = None
    voice_en: str | None = None


class Department(_Section):
    phone: str | None = None
    queue: bool = True
    #: Names of a department the catalog does not list.
    ko: str | None = None
    en: str | None = None


class DuplicateWindow(_Section):
    meters: float = Field(50.0, ge=0)
    days: float = Field(14.0, ge=0)


class ServiceDuplicate(_Section):
    """A service's window; a missing value is the district's (``duplicates``)."""

    meters: float | None = Field(None, ge=0)
    days: float | None = Field(None, ge=0)


class ServiceConfig(_Section):
    slots: list[str] = Field(default_factory=lambda: list(DEFAULT_SLOTS))
    expected_hours: float = Field(DEFAULT_EXPECTED_HOURS, gt=0)
    #: slot -> the response that asks for it instead of the usual question.
    ask: dict[str, str] = Field(default_factory=dict)
    duplicate: ServiceDuplicate = ServiceDuplicate()


class ClaimMinutes(_Section):
    emergency: float = Field(EMERGENCY_CLAIM_MINUTES, gt=0)
    default: float = Field(DEFAULT_CLAIM_MINUTES, gt=0)


class Sla(_Section):
    handoff_claim_minutes: ClaimMinutes = ClaimMinutes()
    abandon_after_minutes: float = Field(30.0, gt=0)
    callback_due_minutes: float = Field(60.0, ge=0)
    callback_offer_after_minutes: float = Field(10.0, ge=0)

    def claim_seconds(self) -> dict[str, int]:
        """Claim targets in whole seconds, as the console shows them."""
        mins = self.handoff_claim_minutes
        return {"emergency": int(mins.emergency) * 60, "default": int(mins.default) * 60}


class Console(_Section):
    max_active_per_agent: int = Field(5, ge=1)


class Equity(_Section):
    flag_ratio: float = Field(1.25, gt=0)
    min_group: int = Field(5, ge=0)


class RateLimits(_Section):
    """0 or missing: no limit."""

    per_sender_per_minute: int | None = Field(None, ge=0)
    per_channel_per_second: int | None = Field(None, ge=0)


def _month_day(value: Any) -> str:
    m = _MMDD.match(str(value))
    try:
        if m is None:
            raise ValueError
        date(2024, int(m[1]), int(m[2]))  # a leap year: 02-29 is a due date some years
    except ValueError:
        raise ValueError(f'not a date "{value}" (MM-DD)') from None
    return str(value)


MonthDay = Annotated[str, BeforeValidator(_month_day)]


class Municipality(_Section):
    """The whole ``config.yml``: every section the code reads, with the code's defaults."""

    municipality: MunicipalityInfo = MunicipalityInfo()
    engine: Literal["builtin", "rasa"] = "builtin"
    nlu: Nlu = Nlu()
    business_hours: BusinessHoursConfig = BusinessHoursConfig()
    channels: dict[ChannelName, Channel] = Field(default_factory=dict)
    departments: dict[str, Department] = Field(default_factory=dict)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    duplicates: DuplicateWindow = DuplicateWindow()
    sla: Sla = Sla()
    console: Console = Console()
    equity: Equity = Equity()
    #: topic -> due dates ``MM-DD`` in municipality time (``pcrm reminders run``).
    deadlines: dict[str, list[MonthDay]] = Field(default_factory=dict)
    remind_days_before: int = Field(7, ge=0)
    rate_limits: RateLimits = RateLimits()
    #: ``{fact.<key>}`` in knowledge-base answers: one text, or one per language.
    facts: dict[str, Text | str | int | float] = Field(default_factory=dict)

    @field_validator("engine", mode="before")
    @classmethod
    def _engine_lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _voices_on_voice_only(self) -> Municipality:
        for name, ch in self.channels.items():
            if name != "twilio_voice" and (ch.voice_ko or ch.voice_en):
                raise ValueError(f"channels.{name}: voice_ko/voice_en belong to twilio_voice")
        return self

    @cached_property
    def duplicate_windows(self) -> dict[str, DuplicateWindow]:
        """Per service, over the district default; ``"*"`` holds that default."""
        base = self.duplicates
        rules = {"*": base}
        for code, svc in self.services.items():
            d = svc.duplicate
            rules[code] = DuplicateWindow(meters=base.meters if d.meters is None else d.meters,
                                          days=base.days if d.days is None else d.days)
        return rules

    @property
    def enabled_channels(self) -> list[str]:
        return [name for name, ch in self.channels.items() if ch.enabled]

    @property
    def voices(self) -> dict[str, str]:
        """The phone line's text-to-speech voice per language (``channels.twilio_voice``)."""
        ch = self.channels.get("twilio_voice") or Channel()
        return {"ko": ch.voice_ko or DEFAULT_VOICES["ko"], "en": ch.voice_en or DEFAULT_VOICES["en"]}

    @classmethod
    def of(cls, config: Municipality | Mapping[str, Any] | None, source: str = "config.yml") -> Municipality:
        """The typed config from either form (callers and tests still hold the parsed dict)."""
        if isinstance(config, Municipality):
            return config
        return parse(config or {}, source)


def parse(raw: Any, source: str = "config.yml") -> Municipality:
    """Validate a parsed ``config.yml``; :class:`ConfigError` lists every problem by key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(source, [f"not a mapping of sections (got {type(raw).__name__})"])
    try:
        return Municipality.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc.errors())) from None


def load(path: Path) -> Municipality:
    """Read and validate one file (``pcrm config check`` and tests; the app goes through Settings)."""
    return parse(read_yaml(path), str(path))


def read_yaml(path: Path) -> Any:
    """``path`` parsed as YAML, refusing a key given twice in one mapping (:class:`ConfigError`).

    Plain ``yaml.safe_load`` keeps the last of two equal keys without a word: a fact written
    twice with different addresses quietly answered residents with whichever came second.
    """
    import yaml

    text = path.read_text(encoding="utf-8")
    try:
        return yaml.load(text, Loader=_unique_key_loader()) or {}
    except _DuplicateKey as exc:
        raise ConfigError(str(path), [str(exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not YAML: {exc}"]) from None


class _DuplicateKey(ValueError):
    pass


@functools.cache
def _unique_key_loader() -> type:
    """A ``yaml.SafeLoader`` that raises :class:`_DuplicateKey` naming the key's dotted path and
    both lines. Built on first use: ``yaml`` is imported only by what reads a file."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self._paths: dict[int, tuple[str, ...]] = {}  # id(value node) -> its dotted path

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                path = self._paths.get(id(node), ())
                seen: dict[Any, int] = {}
                for key_node, value_node in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides by design
                        continue
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        first = seen.get(key)
                    except TypeError:  # an unhashable key: SafeLoader's own error says so
                        continue
                    if first is not None:
                        raise _DuplicateKey(f"{'.'.join((*path, str(key)))}: given twice (lines {first} and {line}); "
                                            "YAML would silently keep only the last: keep one")
                    seen[key] = line
                    self._paths[id(value_node)] = (*path, str(key))
            return super().construct_mapping(node, deep=deep)

        def construct_sequence(self, node: Any, deep: bool = False) -> Any:
            path = self._paths.get(id(node), ())
            for i, item in enumerate(node.value):
                self._paths[id(item)] = (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",)
            return super().construct_sequence(node, deep=deep)

    return UniqueKeyLoader


_UNION_MEMBERS = {"Text", "str", "int", "float", "function-after[_known_zone(), str]", "[key]"}
_TYPE_ERRORS = {"string_type", "int_type", "float_type", "model_type"}


def _loc(err: Any) -> tuple[str, ...]:
    # Pydantic names the member of a union it tried (`facts.x.Text.ko`); the file has no such key.
    return tuple(str(p) for p in err["loc"] if str(p) not in _UNION_MEMBERS)


def _problems(errors: list[Any]) -> list[str]:
    """Every problem once; for a value no member of a union accepts, the closest member's complaint
    (``facts.x.fr: unknown key`` rather than also "not a string", "not a number")."""
    locs = [_loc(e) for e in errors]
    out: list[str] = []
    for err, loc in zip(errors, locs, strict=True):
        deeper = any(len(other) > len(loc) and other[:len(loc)] == loc for other in locs)
        if err["type"] in _TYPE_ERRORS and deeper:
            continue
        kinds = [e for e, other in zip(errors, locs, strict=True) if other == loc and e["type"] in _TYPE_ERRORS]
        if err["type"] in _TYPE_ERRORS and len(kinds) > 1:
            wanted = [str(e["msg"]).removeprefix("Input should be a valid ").split(" or instance")[0] for e in kinds]
            line = f"{'.'.join(loc)}: not a {', '.join(wanted[:-1])} or {wanted[-1]} (got {err['input']!r})"
        else:
            line = _describe(err)
        if line not in out:
            out.append(line)
    return out


def _describe(err: Any) -> str:
    """One error as ``dotted.key: problem``, in words an editor of the file understands."""
    loc = _loc(err)
    key = ".".join(loc) or "(top level)"
    kind, msg = err["type"], str(err["msg"])
    if kind == "extra_forbidden":
        known = _known_keys(err["loc"][:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})" if known else ""
        return f"{key}: unknown key{hint}"
    if kind == "literal_error":
        return f"{key}: {err['input']!r} is not one of {msg.removeprefix('Input should be ')}"
    if msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    elif "input" in err and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    return f"{key}: {msg}"


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names at ``loc`` (for "did you mean"): walk the model the way the data nests."""
    node: Any = Municipality
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return []
            node = field.annotation
        elif get_origin(node) in (dict, list):
            node = get_args(node)[-1]
        else:
            return []
    node = _unwrap(node)
    if get_origin(node) is dict:
        node = _unwrap(get_args(node)[-1])
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        models = [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else tp
    return tp
