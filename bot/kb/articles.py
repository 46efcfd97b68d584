"""Knowledge-base articles: the schema of ``nlu_data/knowledge/*.yml``, checked and rendered.

One :class:`Article` is one schema dict (see ``nlu_data/knowledge/README.md``), kept *raw*
(placeholders unfilled) so the editor console and ``pcrm kb export`` round-trip exactly what
staff wrote. City facts are filled in by :class:`Placeholders` from ``config.yml`` and the
catalog, at index time: a number changed in config.yml changes every answer quoting it.

Errors are collected, not raised one at a time: a content author fixing a 300-article seed
wants every problem of a file in one run, each prefixed ``file: article id: field:``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from bot.municipality import DAYS, Municipality, Text
from bot.settings import safe_load_yaml

LANGS = ("ko", "en")
ID_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")
#: A placeholder: ``{city}``, ``{dept.civil.phone}``, ``{fact.night_desk}`` …
PLACEHOLDER_RE = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z0-9_-]+)*)\}")
_FIELDS = {"id", "faq", "department", "title", "questions", "answer", "spoken", "source",
           "valid_from", "valid_until", "reviewed", "tags", "area"}
_DAY_NAMES = {"ko": dict(zip(DAYS, "월화수목금토일", strict=True)),
              "en": dict(zip(DAYS, ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"), strict=True))}

ROOT = Path(__file__).resolve().parent.parent.parent


class ArticleError(ValueError):
    """One or more schema problems; ``problems`` lists them, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _date(value: Any, where: str, problems: list[str]) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        problems.append(f"{where}: not an ISO date: {value!r}")
        return None


def _per_lang(value: Any, where: str, problems: list[str], *, required: bool = True,
              as_list: bool = False) -> dict[str, Any]:
    """``{ko: …, en: …}`` checked: both languages present (when required), text non-empty."""
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping {{ko: …, en: …}}, got {type(value).__name__}")
        return {}
    out: dict[str, Any] = {}
    for lang in value:
        if lang not in LANGS:
            problems.append(f"{where}: unknown language {lang!r} (use ko, en)")
    for lang in LANGS:
        v = value.get(lang)
        if as_list:
            items = [str(q).strip() for q in (v or []) if str(q).strip()] if isinstance(v, list) else []
            if v is not None and not isinstance(v, list):
                problems.append(f"{where}.{lang}: expected a list of questions")
            elif not items and (required or v is not None):
                problems.append(f"{where}: missing language {lang!r}")
            if items:
                out[lang] = items
        else:
            text = "" if v is None else str(v).strip()
            if not text:
                if required:
                    problems.append(f"{where}: missing language {lang!r}")
                continue
            out[lang] = text
    return out


@dataclass
class Article:
    """One knowledge-base article, as written (placeholders unfilled)."""

    id: str
    title: dict[str, str]
    questions: dict[str, list[str]]
    answer: dict[str, str]
    faq: str | None = None
    department: str | None = None
    spoken: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    reviewed: date | None = None
    tags: list[str] = field(default_factory=list)
    #: The ``area:`` of the file it came from (kept for export; not part of the article).
    area: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, area: str | None = None) -> Article:
        """Build and check one article; raises :class:`ArticleError` listing every problem."""
        problems: list[str] = []
        if not isinstance(d, dict):
            raise ArticleError([f"article: expected a mapping, got {type(d).__name__}"])
        aid = str(d.get("id") or "").strip()
        where = aid or "<no id>"
        if not aid:
            problems.append(f"{where}: missing id")
        elif not ID_RE.match(aid):
            problems.append(f"{where}: id must be lowercase and dotted, <area>.<slug>")
        for key in d:
            if key not in _FIELDS:
                problems.append(f"{where}: unknown field {key!r}")
        title = _per_lang(d.get("title"), f"{where}: title", problems)
        questions = _per_lang(d.get("questions"), f"{where}: questions", problems, as_list=True)
        answer = _per_lang(d.get("answer"), f"{where}: answer", problems)
        spoken = _per_lang(d.get("spoken"), f"{where}: spoken", problems, required=False)
        source = d.get("source")
        if source is not None:
            if not isinstance(source, dict) or not (source.get("title") or source.get("url")):
                problems.append(f"{where}: source: expected {{title: …, url: …}}")
                source = None
            else:
                source = {k: str(v) for k, v in source.items() if v not in (None, "")}
        faq = d.get("faq") or None
        if faq is not None and not str(faq).startswith("faq."):
            problems.append(f"{where}: faq: {faq!r} is not a catalog FAQ code (faq.<topic>)")
        tags = d.get("tags") or []
        if not isinstance(tags, list):
            problems.append(f"{where}: tags: expected a list")
            tags = []
        valid_from = _date(d.get("valid_from"), f"{where}: valid_from", problems)
        valid_until = _date(d.get("valid_until"), f"{where}: valid_until", problems)
        if valid_from and valid_until and valid_until < valid_from:
            problems.append(f"{where}: valid_until {valid_until} is before valid_from {valid_from}")
        reviewed = _date(d.get("reviewed"), f"{where}: reviewed", problems)
        if problems:
            raise ArticleError(problems)
        return cls(id=aid, title=title, questions=questions, answer=answer,
                   faq=str(faq) if faq else None,
                   department=str(d["department"]) if d.get("department") else None,
                   spoken=spoken, source=source, valid_from=valid_from, valid_until=valid_until,
                   reviewed=reviewed, tags=[str(t) for t in tags], area=area or d.get("area"))

    def to_dict(self) -> dict[str, Any]:
        """The schema dict (dates as ISO strings, so it is JSON- and YAML-safe); no ``area``."""
        out: dict[str, Any] = {"id": self.id}
        if self.faq:
            out["faq"] = self.faq
        if self.department:
            out["department"] = self.department
        out["title"] = dict(self.title)
        out["questions"] = {k: list(v) for k, v in self.questions.items()}
        out["answer"] = dict(self.answer)
        if self.spoken:
            out["spoken"] = dict(self.spoken)
        if self.source:
            out["source"] = dict(self.source)
        for name in ("valid_from", "valid_until", "reviewed"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v.isoformat()
        if self.tags:
            out["tags"] = list(self.tags)
        return out

    def active_on(self, day: date) -> bool:
        """Inside its validity window (both ends inclusive): only then is it served."""
        if self.valid_from and day < self.valid_from:
            return False
        return not (self.valid_until and day > self.valid_until)

    def texts(self) -> list[tuple[str, str]]:
        """Every text that may hold placeholders, as (field path, text)."""
        out = [(f"answer.{k}", v) for k, v in self.answer.items()]
        out += [(f"spoken.{k}", v) for k, v in self.spoken.items()]
        out += [(f"title.{k}", v) for k, v in self.title.items()]
        return out


# --- placeholders ----------------------------------------------------------------------------

def format_phone(e164: str) -> str:
    """``+8222101400`` → ``02-210-1400``: how Korean residents read and dial a number (the same
    digits the hand-off dials; a 9-digit Seoul number is 02-XXX-XXXX).

    Seoul's area code is 02; other areas and mobiles have three digits (031, 010); 8-digit
    national numbers (1588-xxxx) have no area code. Anything else is returned unchanged.
    """
    s = str(e164).strip()
    digits = re.sub(r"\D", "", s)
    if s.startswith("+82") or (s.startswith("82") and len(digits) >= 10):
        digits = "0" + digits[2:]
    elif not digits.startswith("0"):
        if len(digits) == 8:
            return f"{digits[:4]}-{digits[4:]}"
        return s
    if digits.startswith("02"):
        rest = digits[2:]
        if len(rest) in (7, 8):
            return f"02-{rest[:-4]}-{rest[-4:]}"
        return s
    if len(digits) in (10, 11):
        return f"{digits[:3]}-{digits[3:-4]}-{digits[-4:]}"
    return s


def _lang_value(value: Any, lang: str) -> str | None:
    if isinstance(value, dict):
        if not value:
            return None
        v = value.get(lang, value.get("ko"))
        return None if v is None else str(v)
    return None if value is None else str(value)


def _given(text: Text) -> dict[str, str]:
    """The languages config.yml gave a text in (a language it left out falls back to Korean)."""
    return text.model_dump(exclude_unset=True)


class Placeholders:
    """Fills ``{city}``, ``{dept.civil.phone}``, ``{fact.x}`` … from config.yml and the catalog.

    ``config`` is the typed :class:`bot.municipality.Municipality` (a parsed ``config.yml`` dict,
    as tests and the knowledge base hold it, is validated into one). A value config.yml does not
    give leaves its placeholder unresolved, even where the code has a default (``{hours}``):
    an answer quotes the city's facts, not the code's."""

    def __init__(self, config: Municipality | Mapping[str, Any] | None,
                 departments: dict[str, dict[str, Any]] | None = None) -> None:
        self.municipality = m = Municipality.of(config)
        if departments is None:
            departments = load_catalog_departments()
        self.departments = departments
        self.dept_phones = {code: d.phone for code, d in m.departments.items()}
        self.facts: dict[str, Any] = {k: _given(v) if isinstance(v, Text) else v for k, v in m.facts.items()}
        bh = m.business_hours
        given = bh.model_fields_set if "business_hours" in m.model_fields_set else set()
        self._hours = {k: getattr(bh, k) for k in ("open", "close") if k in given}

    def value(self, name: str, lang: str) -> str | None:
        """The text of placeholder ``name`` in ``lang``; None when it does not resolve."""
        muni = self.municipality.municipality
        parts = name.split(".")
        head = parts[0]
        if name == "city":
            return _lang_value(_given(muni.name), lang)
        if name == "city.phone":
            return format_phone(muni.phone) if muni.phone else None
        if name == "city.address":
            return _lang_value(_given(muni.address), lang)
        if name == "city.website":
            return _lang_value(muni.website, lang)
        if name == "hours":
            return self.hours_phrase(lang) if len(self._hours) == 2 else None
        if name in ("hours.open", "hours.close"):
            return _lang_value(self._hours.get(parts[1]), lang)
        if head == "dept" and len(parts) in (2, 3):
            code = parts[1]
            if len(parts) == 2:
                return _lang_value({k: v for k, v in self.departments.get(code, {}).items()
                                    if k in LANGS}, lang) if code in self.departments else None
            if parts[2] == "phone":
                phone = self.dept_phones.get(code)
                return format_phone(phone) if phone else None
            return None
        if head == "fact" and len(parts) >= 2:
            value: Any = self.facts
            for p in parts[1:]:
                if not isinstance(value, dict) or p not in value:
                    return None
                value = value[p]
            if isinstance(value, dict) and not set(value) <= set(LANGS):
                return None
            return _lang_value(value, lang)
        return None

    def hours_phrase(self, lang: str) -> str:
        """평일 09:00~18:00 / weekdays 09:00–18:00 (other day sets are spelled out)."""
        hours = self.municipality.business_hours
        days = list(hours.weekdays) or list(DAYS[:5])
        o, c = hours.open, hours.close
        if days == list(DAYS[:5]):
            return f"weekdays {o}–{c}" if lang == "en" else f"평일 {o}~{c}"
        names = _DAY_NAMES["en" if lang == "en" else "ko"]
        if lang == "en":
            return f"{', '.join(names[d] for d in days)} {o}–{c}"
        return f"{''.join(names[d] for d in days)}요일 {o}~{c}"

    def unknown(self, text: str, lang: str) -> list[str]:
        """Placeholders in ``text`` that do not resolve."""
        return [m.group(0) for m in PLACEHOLDER_RE.finditer(text) if self.value(m.group(1), lang) is None]

    def render(self, text: str, lang: str) -> str:
        """``text`` with every placeholder filled (unknown ones raise: check articles first)."""
        def sub(m: re.Match[str]) -> str:
            v = self.value(m.group(1), lang)
            if v is None:
                raise ArticleError([f"unknown placeholder {m.group(0)}"])
            return v
        return PLACEHOLDER_RE.sub(sub, text)

    def check(self, article: Article) -> list[str]:
        """Problems of one article against this city: placeholders, department, FAQ link."""
        problems: list[str] = []
        for where, text in article.texts():
            lang = where.rsplit(".", 1)[-1]
            for ph in self.unknown(text, lang):
                problems.append(f"{article.id}: {where}: unknown placeholder {ph}")
        if article.department and self.departments and article.department not in self.departments:
            problems.append(f"{article.id}: department: unknown department {article.department!r}")
        return problems


def load_catalog_departments(nlu_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Department names (ko, en) by code, from ``nlu_data/catalog.yml``."""
    path = (nlu_dir or ROOT / "nlu_data") / "catalog.yml"
    doc = safe_load_yaml(path.read_text(encoding="utf-8")) or {}
    return {d["code"]: d for d in doc.get("departments") or []}


def load_catalog_faq(nlu_dir: Path | None = None) -> set[str]:
    path = (nlu_dir or ROOT / "nlu_data") / "catalog.yml"
    doc = safe_load_yaml(path.read_text(encoding="utf-8")) or {}
    return {f["code"] for f in doc.get("faq_topics") or []}


# --- loading ----------------------------------------------------------------------------------

def parse_file(path: Path) -> tuple[list[Article], list[str]]:
    """Articles of one YAML file, and the problems found (each prefixed with the file name)."""
    problems: list[str] = []
    try:
        doc = safe_load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return [], [f"{path.name}: not valid YAML: {exc}"]
    if not isinstance(doc, dict) or not isinstance(doc.get("articles"), list):
        return [], [f"{path.name}: expected a mapping with 'area' and an 'articles' list"]
    area = doc.get("area")
    out: list[Article] = []
    for i, item in enumerate(doc["articles"]):
        try:
            out.append(Article.from_dict(item, area=area))
        except ArticleError as exc:
            problems += [f"{path.name}: #{i + 1} {p}" for p in exc.problems]
    return out, problems


def validate(articles: list[Article], config: Municipality | Mapping[str, Any] | None = None,
             departments: dict[str, dict[str, Any]] | None = None,
             faq_codes: set[str] | None = None) -> list[str]:
    """Cross-article problems (duplicate ids, one article per FAQ topic) and, with a config,
    unresolved placeholders and unknown departments / FAQ codes."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for a in articles:
        seen[a.id] = seen.get(a.id, 0) + 1
    problems += [f"{aid}: duplicate id ({n} articles)" for aid, n in seen.items() if n > 1]
    if config is not None:
        ph = Placeholders(config, departments)
        faq_codes = load_catalog_faq() if faq_codes is None else faq_codes
        for a in articles:
            problems += ph.check(a)
            if a.faq and faq_codes and a.faq not in faq_codes:
                problems.append(f"{a.id}: faq: {a.faq!r} is not in the catalog")
    return problems


def load_dir(path: Path | str, config: Municipality | Mapping[str, Any] | None = None, *,
             departments: dict[str, dict[str, Any]] | None = None,
             strict: bool = True, problems: list[str] | None = None) -> list[Article]:
    """Every article of ``path/*.yml`` (sorted by file name); raises :class:`ArticleError` with
    all problems of all files. With ``config``, placeholders are checked against it too.

    ``strict=False`` (the running bot: one bad article must not silence the others) drops the
    articles with problems instead and appends the problems to ``problems``.
    """
    root = Path(path)
    articles: list[Article] = []
    found: list[str] = []
    for file in sorted(root.glob("*.yml")) + sorted(root.glob("*.yaml")):
        got, bad = parse_file(file)
        articles += got
        found += bad
    cross = validate(articles, config, departments)
    if strict:
        if found or cross:
            raise ArticleError(found + cross)
        return articles
    bad_ids = {p.split(":", 1)[0] for p in cross}
    if problems is not None:
        problems += found + cross
    return [a for a in articles if a.id not in bad_ids]
