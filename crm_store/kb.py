"""The knowledge base as staff edit it: articles with versions, review, publishing, rollback.

The YAML files in ``nlu_data/knowledge/`` are the *seed*; once imported, the database is the
source of truth and the console edits it.  The design (the why):

* **Every edit is a new version row** holding the whole article as JSON, so history, diff and
  rollback need no reconstruction, and what the bot said on a given day can be shown exactly.
  A version's content never changes after it is written; only its status moves
  (``draft`` → ``in_review`` → ``published`` → ``archived``).
* **At most one published version per article**, enforced by a partial unique index as well as
  here.  Publishing needs a second person (an editor other than the version's author) unless
  the publisher's role is in :data:`SELF_PUBLISH_ROLES`: answers reach every resident at once.
* **Rollback** writes a new version copying an old one's content and publishes it at once: the
  old content was reviewed when it was first published, and a wrong answer must go fast.
* **``kb_state.revision``** is bumped in the same transaction as every change of the published
  set (publish, rollback, archive, import), so a worker polling it (one primary-key read) and
  then reading :func:`published_articles` never misses a change.
* **Audit rows** (``kb.*`` actions, target ``kb:<id>@v<n>``) record who did what; the content
  itself is in the versions.
* Functions take an open :class:`~sqlalchemy.orm.Session` inside the caller's transaction
  (``with sessions.begin() as s``), like the other query modules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from crm_store._session import insert_or_find
from crm_store.models import (
    DELETED_TEXT,
    Interaction,
    KbArticle,
    KbArticleVersion,
    KbLearned,
    KbState,
    audit,
)
from crm_store.timeutil import as_utc, utcnow

LANGS = ("ko", "en")
#: Roles that may publish their own versions (no second person needed).
SELF_PUBLISH_ROLES = ("supervisor", "admin")
#: Answers go out by SMS and voice too (nlu_data/knowledge/README.md).
MAX_ANSWER = 350
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")
#: The order of keys in the seed files (README); other keys follow, sorted.
KEY_ORDER = ("id", "faq", "department", "title", "questions", "answer", "spoken", "source",
             "valid_from", "valid_until", "reviewed", "tags")
DATE_KEYS = ("valid_from", "valid_until", "reviewed")
LEARNED_ACTIONS = ("attach", "draft", "intent", "dismiss")
_STATE_ID = 1


class KbError(Exception):
    """Base of the errors below; the message is meant for the editor."""


class NotFound(KbError, LookupError):
    """No such article or version."""


class Conflict(KbError):
    """The article moved on (a stale edit), or the version is not in the status the step needs."""


class Forbidden(KbError, PermissionError):
    """The four-eyes rule: an editor may not publish their own version."""


class Invalid(KbError, ValueError):
    """The article does not follow the schema; ``problems`` lists why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --- the article as data ---------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def normalize(article: Mapping[str, Any]) -> dict[str, Any]:
    """``article`` as stored: JSON-safe (dates as ISO strings), ``None`` values dropped, keys in
    the seed files' order.  Two spellings of the same article normalise equal, which is what
    makes a seed import idempotent and an export round-trip."""
    plain = _plain(article)
    ordered = {k: plain[k] for k in KEY_ORDER if k in plain}
    ordered.update({k: plain[k] for k in sorted(plain) if k not in ordered})
    return ordered


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return json.dumps(normalize(a), sort_keys=True) == json.dumps(normalize(b), sort_keys=True)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def check_article(article: Mapping[str, Any], strict: bool = False) -> list[str]:
    """Problems with ``article`` (empty when fine).

    A draft needs an id and a title (the learning loop drafts articles from residents'
    questions, with no answer yet); ``strict`` (submitting, publishing) needs what the bot
    must say in both languages: title, at least one question and an answer of at most
    :data:`MAX_ANSWER` characters each.  Department codes and placeholders are checked by the
    console, which knows the catalog and ``config.yml``.
    """
    problems: list[str] = []
    aid = article.get("id")
    if not isinstance(aid, str) or len(aid) > 120 or not ID_RE.match(aid):
        problems.append("id must be lowercase and dotted, like civil.passport (at most 120 characters)")
    for key in ("title", "questions", "answer", "spoken", "source"):
        if key in article and not isinstance(article[key], Mapping):
            problems.append(f"{key} must be a mapping")
    title = article.get("title") if isinstance(article.get("title"), Mapping) else {}
    if not any(isinstance(title.get(lang), str) and title[lang].strip() for lang in LANGS):
        problems.append("a title is needed")
    questions = article.get("questions") if isinstance(article.get("questions"), Mapping) else {}
    for lang, items in questions.items():
        if not isinstance(items, list) or not all(isinstance(q, str) and q.strip() for q in items):
            problems.append(f"questions.{lang} must be a list of non-empty texts")
    answer = article.get("answer") if isinstance(article.get("answer"), Mapping) else {}
    for lang, text in answer.items():
        if not isinstance(text, str):
            problems.append(f"answer.{lang} must be text")
        elif len(text) > MAX_ANSWER:
            problems.append(f"answer.{lang} is {len(text)} characters; at most {MAX_ANSWER}")
    if "department" in article and not isinstance(article["department"], str):
        problems.append("department must be a department code")
    for key in DATE_KEYS:
        if key in article:
            try:
                date.fromisoformat(str(_plain(article[key])))
            except ValueError:
                problems.append(f"{key} must be a date (YYYY-MM-DD)")
    if strict:
        for lang in LANGS:
            if not (isinstance(title.get(lang), str) and title[lang].strip()):
                problems.append(f"title.{lang} is missing")
            qs = questions.get(lang)
            if not (isinstance(qs, list) and any(isinstance(q, str) and q.strip() for q in qs)):
                problems.append(f"questions.{lang}: at least one question is needed")
            if not (isinstance(answer.get(lang), str) and answer[lang].strip()):
                problems.append(f"answer.{lang} is missing")
    return problems


def _area_of(article_id: str) -> str:
    return article_id.split(".", 1)[0]


def _summarise(row: KbArticle, content: Mapping[str, Any]) -> None:
    title = content.get("title") or {}
    row.title_ko = str(title.get("ko") or "")[:255]
    row.title_en = str(title.get("en") or "")[:255]
    row.department = content.get("department") if isinstance(content.get("department"), str) else None
    parts = [content.get("id", ""), content.get("faq", "")]
    for key in ("title", "questions", "answer", "spoken", "tags"):
        parts += _texts(content.get(key))
    row.search_text = " ".join(str(p) for p in parts if p).lower()


def _target(article_id: str, version: int | None = None) -> str:
    return (f"kb:{article_id}" + (f"@v{version}" if version is not None else ""))[:255]


# --- revision ------------------------------------------------------------------------------------

def revision(s: Session) -> int:
    """The published set's revision (0 before anything was published): the cheap poll."""
    return int(s.scalar(select(KbState.revision).where(KbState.id == _STATE_ID)) or 0)


def _bump(s: Session) -> int:
    stmt = update(KbState).where(KbState.id == _STATE_ID).values(revision=KbState.revision + 1, changed_at=utcnow())
    if s.execute(stmt).rowcount == 0:  # type: ignore[attr-defined]  # first publish (or a wiped table)
        insert_or_find(s, lambda: KbState(id=_STATE_ID, revision=0, changed_at=utcnow()),
                       lambda: s.get(KbState, _STATE_ID))
        s.flush()
        s.execute(stmt)
    return revision(s)


# --- reading -------------------------------------------------------------------------------------

def is_empty(s: Session) -> bool:
    """Whether no article was ever stored (then the app imports the seed at start)."""
    return s.scalar(select(KbArticle.id).limit(1)) is None


def published_articles(s: Session) -> tuple[int, list[dict[str, Any]]]:
    """``(revision, contents)`` of every published version, by article id.

    The revision is read first: the articles are then at least that new, and if they are
    newer the next poll sees a higher revision and loads again (never a stale set kept).
    """
    rev = revision(s)
    rows = s.scalars(select(KbArticleVersion.content).where(KbArticleVersion.status == "published")
                     .order_by(KbArticleVersion.article_id)).all()
    return rev, [dict(c) for c in rows]


def _article(s: Session, article_id: str, lock: bool = False) -> KbArticle:
    stmt = select(KbArticle).where(KbArticle.id == article_id)
    if lock:  # PostgreSQL: edits of one article queue; SQLite transactions are IMMEDIATE anyway
        stmt = stmt.with_for_update()
    row = s.scalars(stmt).first()
    if row is None:
        raise NotFound(f"no article {article_id}")
    return row


def _version(s: Session, article_id: str, version: int) -> KbArticleVersion:
    row = s.scalars(select(KbArticleVersion).where(KbArticleVersion.article_id == article_id,
                                                   KbArticleVersion.version == version)).first()
    if row is None:
        raise NotFound(f"no version {version} of {article_id}")
    return row


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat(timespec="seconds") if value is not None else None


def version_dict(v: KbArticleVersion) -> dict[str, Any]:
    return {"article_id": v.article_id, "version": v.version, "status": v.status, "content": dict(v.content),
            "author": v.author, "reviewer": v.reviewer, "note": v.note, "created_at": _iso(v.created_at),
            "submitted_at": _iso(v.submitted_at), "published_at": _iso(v.published_at),
            "archived_at": _iso(v.archived_at)}


def _summary(a: KbArticle) -> dict[str, Any]:
    return {"id": a.id, "area": a.area, "department": a.department, "title_ko": a.title_ko,
            "title_en": a.title_en, "latest_version": a.latest_version, "latest_status": a.latest_status,
            "published_version": a.published_version, "updated_at": _iso(a.updated_at)}


def list_articles(s: Session, query: str | None = None, area: str | None = None, status: str | None = None,
                  department: str | None = None, limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
    """Articles whose id, titles, questions, answers or tags contain every word of ``query``
    (case-insensitive), optionally of one area, department or newest-version status
    (``unpublished``: never published or archived)."""
    stmt = select(KbArticle)
    for word in (query or "").lower().split()[:8]:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(KbArticle.search_text.like(f"%{escaped}%", escape="\\"))
    if area:
        stmt = stmt.where(KbArticle.area == area)
    if department:
        stmt = stmt.where(KbArticle.department == department)
    if status == "unpublished":
        stmt = stmt.where(KbArticle.published_version.is_(None))
    elif status:
        stmt = stmt.where(KbArticle.latest_status == status)
    stmt = stmt.order_by(KbArticle.area, KbArticle.id).limit(limit).offset(offset)
    return [_summary(a) for a in s.scalars(stmt)]


def areas(s: Session) -> list[str]:
    return list(s.scalars(select(KbArticle.area).distinct().order_by(KbArticle.area)))


def counts(s: Session) -> dict[str, int]:
    """How many articles have their newest version in each status (the editors' to-do list)."""
    rows = s.execute(select(KbArticle.latest_status, func.count()).group_by(KbArticle.latest_status)).all()
    return {status: int(n) for status, n in rows}


def get_article(s: Session, article_id: str) -> dict[str, Any]:
    """The article's summary, its newest and published versions and its whole history (newest first)."""
    a = _article(s, article_id)
    versions = s.scalars(select(KbArticleVersion).where(KbArticleVersion.article_id == article_id)
                         .order_by(KbArticleVersion.version.desc())).all()
    history = [version_dict(v) for v in versions]
    published = next((h for h in history if h["status"] == "published"), None)
    return {**_summary(a), "latest": history[0] if history else None, "published": published,
            "history": history}


def get_version(s: Session, article_id: str, version: int) -> dict[str, Any]:
    return version_dict(_version(s, article_id, version))


# --- writing -------------------------------------------------------------------------------------

def _supersede(s: Session, article_id: str, statuses: Iterable[str]) -> None:
    """Archive the article's versions in ``statuses`` (older drafts a newer edit replaces)."""
    s.execute(update(KbArticleVersion)
              .where(KbArticleVersion.article_id == article_id, KbArticleVersion.status.in_(list(statuses)))
              .values(status="archived", archived_at=utcnow()).execution_options(synchronize_session="fetch"))


def _new_version(s: Session, a: KbArticle, content: dict[str, Any], who: str, status: str,
                 note: str | None, reviewer: str | None = None) -> KbArticleVersion:
    now = utcnow()
    number = int(s.scalar(select(func.max(KbArticleVersion.version))
                          .where(KbArticleVersion.article_id == a.id)) or 0) + 1
    if status == "published":
        _supersede(s, a.id, ("draft", "in_review", "published"))
    else:
        _supersede(s, a.id, ("draft", "in_review"))
    v = KbArticleVersion(article_id=a.id, version=number, content=content, status=status, author=who[:64],
                         reviewer=reviewer, note=(note or None) and note[:255], created_at=now,
                         submitted_at=now if status in ("in_review", "published") else None,
                         published_at=now if status == "published" else None)
    s.add(v)
    a.latest_version, a.latest_status, a.updated_at = number, status, now
    if status == "published":
        a.published_version = number
    _summarise(a, content)
    s.flush()
    return v


def save_draft(s: Session, content: Mapping[str, Any], who: str, base_version: int | None = None,
               create: bool = False, area: str | None = None, note: str | None = None) -> int:
    """Store ``content`` as a new draft version of its article; returns the version number.

    ``create``: a new article (``Conflict`` if the id is taken).  Otherwise ``base_version`` is
    the version the editor started from: if someone saved a newer one meanwhile the edit is
    refused (``Conflict``) rather than silently overwriting theirs.  Older drafts and versions
    in review are archived: the newest draft is the one that goes forward.
    """
    doc = normalize(content)
    problems = check_article(doc)
    if problems:
        raise Invalid(problems)
    aid = doc["id"]
    existing = s.scalars(select(KbArticle).where(KbArticle.id == aid).with_for_update()).first()
    if create:
        if existing is not None:
            raise Conflict(f"an article {aid} exists already")
        existing = KbArticle(id=aid, area=(area or _area_of(aid))[:64], created_at=utcnow())
        s.add(existing)
        s.flush()
        action = "kb.create"
    else:
        if existing is None:
            raise NotFound(f"no article {aid}")
        if base_version is not None and base_version != existing.latest_version:
            raise Conflict(f"{aid} changed meanwhile (version {existing.latest_version} by now; "
                           f"you edited version {base_version})")
        if area:
            existing.area = area[:64]
        action = "kb.draft"
    v = _new_version(s, existing, doc, who, "draft", note)
    s.add(audit(who, action, _target(aid, v.version)))
    return v.version


def submit(s: Session, article_id: str, version: int, who: str) -> None:
    """Ask for review: the newest version, a draft, goes ``in_review`` (complete in both languages)."""
    a = _article(s, article_id, lock=True)
    v = _version(s, article_id, version)
    if v.version != a.latest_version or v.status != "draft":
        raise Conflict(f"only the newest draft can be submitted (v{version} is {v.status})")
    problems = check_article(v.content, strict=True)
    if problems:
        raise Invalid(problems)
    v.status, v.submitted_at = "in_review", utcnow()
    a.latest_status, a.updated_at = "in_review", utcnow()
    s.add(audit(who, "kb.submit", _target(article_id, version)))


def reject(s: Session, article_id: str, version: int, who: str, note: str | None = None) -> None:
    """Send a version in review back to draft (the reviewer's "not yet"), with a note why."""
    a = _article(s, article_id, lock=True)
    v = _version(s, article_id, version)
    if v.status != "in_review":
        raise Conflict(f"v{version} is {v.status}, not in review")
    v.status, v.reviewer = "draft", who[:64]
    if note:
        v.note = note[:255]
    a.latest_status, a.updated_at = "draft", utcnow()
    s.add(audit(who, "kb.reject", _target(article_id, version)))


def publish(s: Session, article_id: str, version: int, who: str, role: str) -> int:
    """Publish a version in review: it replaces the published one everywhere; returns the new revision.

    ``Forbidden`` when ``who`` wrote the version and ``role`` is not in :data:`SELF_PUBLISH_ROLES`.
    """
    a = _article(s, article_id, lock=True)
    v = _version(s, article_id, version)
    if v.status != "in_review" or v.version != a.latest_version:
        raise Conflict(f"only the newest version, once in review, can be published (v{version} is {v.status})")
    if v.author == who and role not in SELF_PUBLISH_ROLES:
        raise Forbidden("another editor must review and publish your version")
    problems = check_article(v.content, strict=True)
    if problems:
        raise Invalid(problems)
    _supersede(s, article_id, ("published",))
    now = utcnow()
    v.status, v.reviewer, v.published_at = "published", who[:64], now
    a.published_version, a.latest_status, a.updated_at = version, "published", now
    s.flush()
    s.add(audit(who, "kb.publish", _target(article_id, version)))
    return _bump(s)


def rollback(s: Session, article_id: str, to_version: int, who: str) -> int:
    """Publish a copy of an earlier version as a new version, at once; returns the new version number."""
    a = _article(s, article_id, lock=True)
    old = _version(s, article_id, to_version)
    if a.published_version == to_version:
        raise Conflict(f"v{to_version} is the published version already")
    if old.published_at is None:  # a draft never reviewed must go through review, not around it
        raise Conflict(f"v{to_version} was never published; edit it and ask for review instead")
    v = _new_version(s, a, dict(old.content), who, "published", f"rollback to v{to_version}", reviewer=who)
    s.add(audit(who, "kb.rollback", _target(article_id, v.version) + f"<-v{to_version}"))
    _bump(s)
    return v.version


def archive(s: Session, article_id: str, who: str) -> int:
    """Take the article off the air (the bot stops answering with it); returns the new revision.

    Its versions stay; a rollback to one of them publishes it again."""
    a = _article(s, article_id, lock=True)
    if a.published_version is None:
        raise Conflict(f"{article_id} is not published")
    _supersede(s, article_id, ("published",))
    a.published_version, a.updated_at = None, utcnow()
    if a.latest_status == "published":
        a.latest_status = "archived"
    s.add(audit(who, "kb.archive", _target(article_id)))
    return _bump(s)


def working_content(s: Session, article_id: str) -> tuple[dict[str, Any], int]:
    """``(content, version)`` an edit starts from: the newest version, whatever its status."""
    a = _article(s, article_id)
    return dict(_version(s, article_id, a.latest_version).content), a.latest_version


# --- seed import / export ----------------------------------------------------------------------

@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    revision: int = 0

    def __str__(self) -> str:
        return (f"{len(self.created)} created, {len(self.updated)} updated, {len(self.unchanged)} unchanged "
                f"(revision {self.revision})")


def read_seed(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(area, article)`` of every ``*.yml`` file of ``directory`` (file order, then article order).

    A malformed file or a repeated id is an error naming the file: a seed is fixed in git, not
    half-imported.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, Path] = {}
    for path in sorted(Path(directory).glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(doc, Mapping) or not isinstance(doc.get("articles", []), list):
            raise Invalid([f"{path.name}: expected 'area' and a list 'articles'"])
        area = str(doc.get("area") or path.stem)
        for item in doc.get("articles") or []:
            if not isinstance(item, Mapping):
                raise Invalid([f"{path.name}: every article must be a mapping"])
            article = normalize(item)
            problems = check_article(article)
            if problems:
                raise Invalid([f"{path.name}: {article.get('id', '?')}: {p}" for p in problems])
            if article["id"] in seen:
                raise Invalid([f"{path.name}: {article['id']} is also in {seen[article['id']].name}"])
            seen[article["id"]] = path
            out.append((area, article))
    return out


def import_articles(s: Session, items: Iterable[tuple[str, Mapping[str, Any]]], who: str = "seed") -> ImportResult:
    """Publish each article whose content differs from its published version (new ones too).

    Unchanged articles get no new version, so importing the same seed twice changes nothing
    (and does not bump the revision)."""
    result = ImportResult()
    for area, item in items:
        doc = normalize(item)
        aid = doc["id"]
        a = s.scalars(select(KbArticle).where(KbArticle.id == aid).with_for_update()).first()
        if a is None:
            a = KbArticle(id=aid, area=area[:64], created_at=utcnow())
            s.add(a)
            s.flush()
            result.created.append(aid)
        else:
            current = (_version(s, aid, a.published_version).content if a.published_version is not None else None)
            if current is not None and _same(current, doc):
                if a.area != area:
                    a.area = area[:64]
                result.unchanged.append(aid)
                continue
            a.area = area[:64]
            result.updated.append(aid)
        v = _new_version(s, a, doc, who, "published", "import", reviewer=who)
        s.add(audit(who, "kb.import", _target(aid, v.version)))
    result.revision = _bump(s) if result.created or result.updated else revision(s)
    return result


def import_seed(s: Session, directory: Path, who: str = "seed") -> ImportResult:
    """:func:`read_seed` then :func:`import_articles`."""
    return import_articles(s, read_seed(directory), who)


class _Dumper(yaml.SafeDumper):
    """Block style, but short ``{ko: …, en: …}`` pairs inline as the seed files write them."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> Any:
    flow = bool(data) and set(data) <= {"ko", "en", "title", "url"} and all(
        isinstance(v, str) and len(v) <= 60 for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


_Dumper.add_representer(dict, _represent_dict)


def _for_yaml(article: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(normalize(article))
    for key in DATE_KEYS:
        if isinstance(out.get(key), str):
            try:
                out[key] = date.fromisoformat(out[key])
            except ValueError:
                pass
    return out


def export_docs(s: Session) -> dict[str, dict[str, Any]]:
    """``{area: {"area": …, "articles": [...]}}`` of the published articles, ids sorted."""
    rows = s.execute(select(KbArticle.area, KbArticleVersion.content)
                     .join(KbArticleVersion, KbArticleVersion.article_id == KbArticle.id)
                     .where(KbArticleVersion.status == "published")
                     .order_by(KbArticle.area, KbArticle.id)).all()
    docs: dict[str, dict[str, Any]] = {}
    for area, content in rows:
        docs.setdefault(area, {"area": area, "articles": []})["articles"].append(_for_yaml(content))
    return docs


def dump_doc(doc: Mapping[str, Any]) -> str:
    return yaml.dump(dict(doc), Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=100_000)


def export_dir(s: Session, directory: Path) -> list[Path]:
    """Write the published articles as one ``<area>.yml`` per area (the seed format); returns the files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for area, doc in export_docs(s).items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", area) or area.startswith("."):
            raise Invalid([f"area {area!r} is not a safe file name"])
        path = directory / f"{area}.yml"
        path.write_text(dump_doc(doc), encoding="utf-8")
        written.append(path)
    return written


# --- the learning loop's bookkeeping ---------------------------------------------------------

def unanswered(s: Session, since: datetime, labels: Iterable[str], below: float,
               limit: int = 2000, abstain_texts: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Inbound messages since ``since`` the bot did not understand: a label in ``labels``, no
    label, confidence below ``below``, or answered with one of ``abstain_texts`` (the knowledge
    base's "I have no answer to that", whatever the classifier thought); not yet dealt with in
    the learning loop; newest first.  Texts are raw (the caller masks them)."""
    I = Interaction  # noqa: N806, E741
    handled = select(KbLearned.interaction_id)
    conditions = [I.label.in_(list(labels)), I.label.is_(None), I.confidence < below]
    abstain_texts = [t for t in abstain_texts if t]
    if abstain_texts:
        out = aliased(Interaction)
        prior = (select(func.max(I.id)).where(I.conversation_id == out.conversation_id, I.direction == "in",
                                              I.id < out.id).correlate(out).scalar_subquery())
        abstained = select(prior).where(out.direction == "out", out.created_at >= since,
                                        out.text.in_(abstain_texts))
        conditions.append(I.id.in_(abstained))
    rows = s.execute(
        select(I.id, I.text, I.lang, I.label, I.confidence, I.channel, I.created_at)
        .where(I.direction == "in", I.created_at >= since, I.text != DELETED_TEXT, I.text != "",
               or_(*conditions), I.id.not_in(handled))
        .order_by(I.id.desc()).limit(limit)).all()
    return [{"id": r.id, "text": r.text or "", "lang": r.lang, "label": r.label, "confidence": r.confidence,
             "channel": r.channel, "created_at": _iso(r.created_at)} for r in rows]


def mark_learned(s: Session, interaction_ids: Iterable[int], action: str, target: str | None, who: str) -> int:
    """Record that these messages were dealt with (``action`` in :data:`LEARNED_ACTIONS`); returns
    how many were new (one already handled by someone else is skipped, not an error)."""
    if action not in LEARNED_ACTIONS:
        raise ValueError(f"action must be one of {LEARNED_ACTIONS}")
    ids = sorted({int(i) for i in interaction_ids})
    if not ids:
        return 0
    done = set(s.scalars(select(KbLearned.interaction_id).where(KbLearned.interaction_id.in_(ids))))
    existing = set(s.scalars(select(Interaction.id).where(Interaction.id.in_(ids))))
    new = [i for i in ids if i not in done and i in existing]
    for i in new:
        s.add(KbLearned(interaction_id=i, action=action, target=(target or None) and target[:120], who=who[:64]))
    s.add(audit(who, f"kb.learn.{action}", f"{target or '-'}|{len(new)} message(s)"[:255]))
    s.flush()
    return len(new)


def add_questions(s: Session, article_id: str, questions: Mapping[str, Iterable[str]], who: str,
                  note: str | None = None) -> int:
    """A new draft of ``article_id`` with ``questions`` (``{lang: [...]}``) added to its own
    (the newest version's content; repeats skipped); returns the draft's version number."""
    content, base = working_content(s, article_id)
    qs = {lang: list(v) for lang, v in (content.get("questions") or {}).items()}
    added = 0
    for lang, items in questions.items():
        have = qs.setdefault(lang, [])
        seen = {q.strip().lower() for q in have}
        for q in items:
            q = " ".join(str(q).split())
            if q and q.lower() not in seen:
                have.append(q)
                seen.add(q.lower())
                added += 1
    content["questions"] = qs
    return save_draft(s, content, who, base_version=base,
                      note=note or f"learning loop: {added} question(s) added")
