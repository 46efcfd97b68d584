"""The knowledge-base editor and the learning loop in the console (``/console/kb``).

Who: roles in :data:`bot.console.auth.KB_ROLES` (``editor``, ``supervisor``, ``admin``).  Agents
get 403: answers reach every resident, so changing them is a separate duty.

Pages are server-rendered forms that post back and redirect (post/redirect/get): they work
without JavaScript, keep the browser's history sane and need no inline script or style (the
console's CSP has no ``'unsafe-inline'``).  ``kb.js`` only adds conveniences: a live preview
and character counts.  Every POST carries the CSRF token (``csrf_token`` form field, or the
``X-CSRF-Token`` header on the JSON API), checked as the rest of the console does.

The workflow (:mod:`crm_store.kb`): save → new draft version; submit → in review; publish (by
another editor, or a supervisor/admin) → live in every worker within seconds (this worker at
once, the others on the next ``kb_state.revision`` poll or live event); rollback → a new
published copy of an old version; archive → off the air.  The preview fills the city's
placeholders from ``config.yml`` exactly as residents will see the answer.
"""

from __future__ import annotations

import difflib
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bot import security_headers
from bot.console import auth
from bot.console.auth import KB_ROLES, ConsoleUser, kb_editor_with_csrf, require_kb_editor
from bot.kb import learning
from bot.kb.articles import LANGS, PLACEHOLDER_RE, Article, ArticleError, Placeholders
from bot.web import pages
from crm_store import kb as store
from crm_store.timeutil import utcnow

log = logging.getLogger("pcrm.console.kb")

HERE = Path(__file__).resolve().parent
STATIC_FILES = {"kb.js": "text/javascript; charset=utf-8", "kb.css": "text/css; charset=utf-8"}
#: The app's one policy (bot/security_headers.py), without WebSockets: the editor opens none.
CSP = security_headers.CSP.replace("connect-src 'self' ws: wss:", "connect-src 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}
STATUS_NAMES = {"draft": "초안", "in_review": "검토 중", "published": "게시됨", "archived": "보관됨"}
ROLE_NAMES = {"agent": "상담원", "supervisor": "관리자", "admin": "시스템 관리자", "editor": "콘텐츠 편집자"}
#: Messages after a redirect (``?done=``): fixed texts, never reflected input.
DONE = {"saved": "초안을 저장했습니다.", "submitted": "검토를 요청했습니다.",
        "published": "게시했습니다. 몇 초 안에 모든 채널에 반영됩니다.",
        "rejected": "초안으로 돌려보냈습니다.", "rolled_back": "이전 버전을 다시 게시했습니다.",
        "archived": "게시를 내렸습니다.", "created": "새 문서 초안을 만들었습니다.",
        "attached": "질문을 문서 초안에 추가했습니다.",
        "labelled": "학습 데이터에 추가했습니다. 다음 모델 학습(pcrm train)에 반영됩니다.",
        "dismissed": "목록에서 제외했습니다."}
LEARN_DAYS = 30

router = APIRouter(prefix="/console", tags=["knowledge base"])
_templates = pages.templates  # the app's one environment (autoescape, the shared layout)


# --- helpers -----------------------------------------------------------------------------------

def _render(request: Request, name: str, user: ConsoleUser | None, status_code: int = 200,
            **ctx: Any) -> HTMLResponse:
    token, fresh = auth.csrf_token_for(request, user)
    html = _templates.get_template(name).render(user=user, csrf_token=token, status_names=STATUS_NAMES,
                                                role_names=ROLE_NAMES, **ctx)
    resp = HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)
    if fresh:
        auth.set_cookie(resp, request, auth.CSRF_COOKIE, token)
    return resp


async def _page_user(request: Request) -> tuple[ConsoleUser | None, Response | None]:
    """The editor of a page request, or the response to send instead (login, 403 page)."""
    user = await run_in_threadpool(auth.current_user, request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return None, RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)
    if user.role not in KB_ROLES:
        return None, _render(request, "error.html", user, status_code=403, title="접근할 수 없음",
                             message="지식베이스는 콘텐츠 편집자와 관리자만 볼 수 있습니다.")
    return user, None


async def _post_user(request: Request) -> tuple[ConsoleUser | None, dict[str, Any], Response | None]:
    """Like :func:`_page_user` for a form POST, with the CSRF field checked (403)."""
    user, deny = await _page_user(request)
    form = dict(await request.form()) if deny is None else {}
    if user is not None:
        auth.check_csrf(request, user, str(form.get("csrf_token") or ""))
    return user, form, deny


def _see_other(path: str, done: str | None = None) -> RedirectResponse:
    return RedirectResponse(path + (f"?done={done}" if done else ""), status_code=303)


def _sessions(request: Request) -> Any:
    return request.app.state.sessions


def _knowledge(request: Request) -> Any:
    return request.app.state.engine.knowledge


def _placeholders(request: Request) -> Placeholders:
    k = _knowledge(request)
    return Placeholders(request.app.state.settings.municipality(), dict(k.departments))


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def _lines(text: Any) -> list[str]:
    return [" ".join(line.split()) for line in str(text or "").splitlines() if line.strip()]


def article_from_form(form: dict[str, Any], article_id: str) -> dict[str, Any]:
    """The article the edit form describes (empty fields left out, as the seed files do)."""
    d: dict[str, Any] = {"id": article_id}
    for key in ("faq", "department"):
        value = str(form.get(key) or "").strip()
        if value:
            d[key] = value
    for key in ("title", "answer", "spoken"):
        per = {lang: str(form.get(f"{key}_{lang}") or "").strip() for lang in LANGS}
        per = {lang: v.replace("\r\n", "\n") for lang, v in per.items() if v}
        if per:
            d[key] = per
    questions = {lang: _lines(form.get(f"questions_{lang}")) for lang in LANGS}
    questions = {lang: qs for lang, qs in questions.items() if qs}
    if questions:
        d["questions"] = questions
    source = {k: str(form.get(f"source_{k}") or "").strip() for k in ("title", "url")}
    source = {k: v for k, v in source.items() if v}
    if source:
        d["source"] = source
    for key in store.DATE_KEYS:
        value = str(form.get(key) or "").strip()
        if value:
            d[key] = value
    tags = [t.strip() for t in str(form.get("tags") or "").replace("\n", ",").split(",") if t.strip()]
    if tags:
        d["tags"] = tags
    return d


def form_from_article(d: dict[str, Any]) -> dict[str, str]:
    """The edit form's field values for article ``d``."""
    out: dict[str, str] = {"id": d.get("id", ""), "faq": d.get("faq", ""), "department": d.get("department", "")}
    for key in ("title", "answer", "spoken"):
        for lang in LANGS:
            out[f"{key}_{lang}"] = str((d.get(key) or {}).get(lang, ""))
    for lang in LANGS:
        out[f"questions_{lang}"] = "\n".join((d.get("questions") or {}).get(lang, []))
    for k in ("title", "url"):
        out[f"source_{k}"] = str((d.get("source") or {}).get(k, ""))
    for key in store.DATE_KEYS:
        out[key] = str(d.get(key) or "")
    out["tags"] = ", ".join(d.get("tags") or [])
    return out


def strict_problems(request: Request, d: dict[str, Any]) -> list[str]:
    """What keeps ``d`` from going live: the engine's schema, this city's placeholders, the catalog."""
    problems = store.check_article(d, strict=True)
    try:
        article = Article.from_dict(dict(d))
    except ArticleError as exc:
        return list(dict.fromkeys(problems + exc.problems))
    problems += _placeholders(request).check(article)
    k = _knowledge(request)
    if article.faq and article.faq not in k.faq:
        problems.append(f"faq: {article.faq} is not a catalog FAQ topic")
    return list(dict.fromkeys(problems))


def preview(request: Request, d: dict[str, Any]) -> dict[str, Any]:
    """The answer (and spoken version) as residents get it, per language, and unresolved placeholders."""
    ph = _placeholders(request)
    out: dict[str, Any] = {"langs": {}, "unknown": []}
    for lang in LANGS:
        texts = {}
        for key in ("answer", "spoken"):
            raw = str((d.get(key) or {}).get(lang) or "")
            if not raw:
                continue

            def fill(m: Any, lang: str = lang) -> str:
                value = ph.value(m.group(1), lang)
                if value is None:
                    out["unknown"].append(m.group(0))
                    return m.group(0)
                return value

            rendered = PLACEHOLDER_RE.sub(fill, raw)
            texts[key] = {"text": rendered, "chars": len(rendered)}
        out["langs"][lang] = texts
    out["unknown"] = sorted(set(out["unknown"]))
    out["max"] = store.MAX_ANSWER
    return out


def _segments(old: str, new: str) -> list[tuple[str, str]]:
    """Character-level diff as ``(op, text)`` with op ``eq``, ``del`` or ``ins`` (Korean has few
    spaces, so words would be whole phrases)."""
    out: list[tuple[str, str]] = []
    sm = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            out.append(("eq", old[i1:i2]))
        else:
            if i2 > i1:
                out.append(("del", old[i1:i2]))
            if j2 > j1:
                out.append(("ins", new[j1:j2]))
    return out


FIELD_NAMES = {"title": "제목", "questions": "질문", "answer": "답변", "spoken": "음성용 답변", "source": "출처",
               "department": "담당 부서", "faq": "FAQ 주제", "valid_from": "게시 시작일", "valid_until": "게시 종료일",
               "reviewed": "검토일", "tags": "검색어"}


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """Field by field, what changed from ``old`` to ``new`` (the history's "diff-ish" view)."""
    old = old or {}
    rows: list[dict[str, Any]] = []
    for key in [k for k in store.KEY_ORDER if k != "id"] + sorted(set(new) | set(old) - set(store.KEY_ORDER)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        name = FIELD_NAMES.get(key, key)
        if key == "questions":
            for lang in LANGS:
                qa, qb = list((a or {}).get(lang, [])), list((b or {}).get(lang, []))
                if qa != qb:
                    rows.append({"field": f"{name} ({lang})", "added": [q for q in qb if q not in qa],
                                 "removed": [q for q in qa if q not in qb]})
        elif isinstance(a, dict) or isinstance(b, dict):
            for sub in sorted(set(a or {}) | set(b or {})):
                va, vb = str((a or {}).get(sub, "")), str((b or {}).get(sub, ""))
                if va != vb:
                    rows.append({"field": f"{name} ({sub})", "segments": _segments(va, vb)})
        else:
            va = ", ".join(a) if isinstance(a, list) else str(a or "")
            vb = ", ".join(b) if isinstance(b, list) else str(b or "")
            rows.append({"field": name, "segments": _segments(va, vb)})
    return rows


def _choices(request: Request) -> dict[str, Any]:
    k = _knowledge(request)
    return {"departments": [{"code": c, "name": k.department_name(c, "ko")} for c in k.departments],
            "faq_topics": [{"code": c, "name": k.label_name(c, "ko")} for c in k.faq]}


async def _announce(request: Request, revision: int) -> None:
    kb_sync = getattr(request.app.state, "kb_sync", None)
    if kb_sync is not None:
        try:
            await kb_sync.announce(revision)
        except Exception:  # noqa: BLE001 - the poll picks it up within its interval anyway
            log.warning("knowledge base announce failed", exc_info=True)


def _not_found(request: Request, user: ConsoleUser | None) -> Response:
    return _render(request, "error.html", user, status_code=404, title="찾을 수 없음",
                   message="문서나 버전을 찾을 수 없습니다.")


def _error_status(exc: store.KbError) -> int:
    if isinstance(exc, store.NotFound):
        return 404
    if isinstance(exc, store.Forbidden):
        return 403
    if isinstance(exc, store.Invalid):
        return 422
    return 409


# --- pages: list, article, edit ------------------------------------------------------------------

@router.get("/kb/static/{name}", include_in_schema=False)
async def kb_static(name: str) -> FileResponse:
    if name not in STATIC_FILES:
        raise HTTPException(status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


@router.get("/kb", response_class=HTMLResponse, include_in_schema=False)
async def kb_list_page(request: Request, q: str = "", area: str = "", status: str = "", done: str = "") -> Response:
    user, deny = await _page_user(request)
    if deny is not None:
        return deny
    q, area, status = q[:100], area[:64], status if status in (*STATUS_NAMES, "unpublished") else ""

    def load() -> tuple[list[dict[str, Any]], list[str], dict[str, int], int]:
        with _sessions(request)() as s:
            return (store.list_articles(s, q, area or None, status or None), store.areas(s), store.counts(s),
                    store.revision(s))

    items, areas, counts, revision = await run_in_threadpool(load)
    return _render(request, "kb_list.html", user, title="지식베이스", items=items, areas=areas, counts=counts,
                   q=q, area=area, status=status, revision=revision, served=_served(request), done=DONE.get(done))


def _served(request: Request) -> int | None:
    """The revision this worker's engine answers with (``None`` before the first load)."""
    kb_sync = getattr(request.app.state, "kb_sync", None)
    return kb_sync.revision if kb_sync is not None else None


def _article_view(request: Request, article_id: str) -> dict[str, Any]:
    with _sessions(request)() as s:
        art = store.get_article(s, article_id)
    latest = art["latest"]
    art["preview"] = preview(request, latest["content"]) if latest else None
    art["problems"] = strict_problems(request, latest["content"]) if latest and latest["status"] in (
        "draft", "in_review") else []
    history = art["history"]
    for i, h in enumerate(history):
        h["previous"] = history[i + 1]["version"] if i + 1 < len(history) else None
    return art


@router.get("/kb/articles/{article_id}", response_class=HTMLResponse, include_in_schema=False)
async def kb_article_page(request: Request, article_id: str, done: str = "") -> Response:
    user, deny = await _page_user(request)
    if deny is not None:
        return deny
    try:
        art = await run_in_threadpool(_article_view, request, article_id)
    except store.NotFound:
        return _not_found(request, user)
    return _render(request, "kb_article.html", user, title=art["title_ko"] or article_id, a=art, done=DONE.get(done),
                   error=None, self_publish=user is not None and user.role in store.SELF_PUBLISH_ROLES)


async def _article_error(request: Request, user: ConsoleUser | None, article_id: str,
                         exc: store.KbError) -> Response:
    try:
        art = await run_in_threadpool(_article_view, request, article_id)
    except store.NotFound:
        return _not_found(request, user)
    problems = exc.problems if isinstance(exc, store.Invalid) else []
    return _render(request, "kb_article.html", user, status_code=_error_status(exc),
                   title=art["title_ko"] or article_id, a=art, done=None,
                   error=str(exc) if not problems else "게시 전에 고칠 점이 있습니다.",
                   error_list=problems, self_publish=user is not None and user.role in store.SELF_PUBLISH_ROLES)


@router.get("/kb/new", response_class=HTMLResponse, include_in_schema=False)
async def kb_new_page(request: Request) -> Response:
    user, deny = await _page_user(request)
    if deny is not None:
        return deny
    return _render(request, "kb_edit.html", user, title="새 문서", f=form_from_article({}), new=True, base_version=None,
                   errors=[], area="", **_choices(request))


@router.post("/kb/new", include_in_schema=False)
async def kb_create(request: Request) -> Response:
    user, form, deny = await _post_user(request)
    if deny is not None or user is None:
        return deny or Response(status_code=401)
    article_id = str(form.get("id") or "").strip().lower()
    d = article_from_form(form, article_id)
    area = str(form.get("area") or "").strip() or None

    def run() -> int:
        with _sessions(request).begin() as s:
            return store.save_draft(s, d, user.username, create=True, area=area)

    try:
        await run_in_threadpool(run)
    except store.KbError as exc:
        errors = exc.problems if isinstance(exc, store.Invalid) else [str(exc)]
        return _render(request, "kb_edit.html", user, status_code=_error_status(exc), title="새 문서", new=True,
                       f={**form_from_article(d), "id": article_id}, base_version=None, errors=errors,
                       area=area or "", **_choices(request))
    return _see_other(f"/console/kb/articles/{quote(article_id)}", "created")


@router.get("/kb/articles/{article_id}/edit", response_class=HTMLResponse, include_in_schema=False)
async def kb_edit_page(request: Request, article_id: str) -> Response:
    user, deny = await _page_user(request)
    if deny is not None:
        return deny

    def load() -> tuple[dict[str, Any], int, str]:
        with _sessions(request)() as s:
            content, base = store.working_content(s, article_id)
            return content, base, store.get_article(s, article_id)["area"]

    try:
        content, base, area = await run_in_threadpool(load)
    except store.NotFound:
        return _not_found(request, user)
    return _render(request, "kb_edit.html", user, title=f"편집: {article_id}", f=form_from_article(content), new=False,
                   base_version=base, errors=[], area=area, preview=preview(request, content), **_choices(request))


@router.post("/kb/articles/{article_id}/edit", include_in_schema=False)
async def kb_save(request: Request, article_id: str) -> Response:
    user, form, deny = await _post_user(request)
    if deny is not None or user is None:
        return deny or Response(status_code=401)
    d = article_from_form(form, article_id)
    base = _int(form.get("base_version"))
    then_submit = form.get("then") == "submit"

    def run() -> int:
        with _sessions(request).begin() as s:
            version = store.save_draft(s, d, user.username, base_version=base, note=str(form.get("note") or "")[:255])
            if then_submit:
                problems = strict_problems(request, d)
                if problems:
                    raise store.Invalid(problems)
                store.submit(s, article_id, version, user.username)
            return version

    try:
        await run_in_threadpool(run)
    except store.KbError as exc:
        errors = exc.problems if isinstance(exc, store.Invalid) else [str(exc)]
        return _render(request, "kb_edit.html", user, status_code=_error_status(exc), title=f"편집: {article_id}",
                       f=form_from_article(d), new=False, base_version=base, errors=errors, area="",
                       preview=preview(request, d), **_choices(request))
    return _see_other(f"/console/kb/articles/{quote(article_id)}", "submitted" if then_submit else "saved")


async def _workflow(request: Request, article_id: str, step: str) -> Response:
    user, form, deny = await _post_user(request)
    if deny is not None or user is None:
        return deny or Response(status_code=401)
    version = _int(form.get("version"), 0) or 0
    revision: list[int] = []

    def run() -> None:
        with _sessions(request).begin() as s:
            if step in ("submit", "publish"):
                problems = strict_problems(request, store.get_version(s, article_id, version)["content"])
                if problems:
                    raise store.Invalid(problems)
            if step == "submit":
                store.submit(s, article_id, version, user.username)
            elif step == "publish":
                revision.append(store.publish(s, article_id, version, user.username, user.role))
            elif step == "reject":
                store.reject(s, article_id, version, user.username, str(form.get("note") or "")[:255] or None)
            elif step == "rollback":
                store.rollback(s, article_id, version, user.username)
                revision.append(store.revision(s))
            elif step == "archive":
                revision.append(store.archive(s, article_id, user.username))

    try:
        await run_in_threadpool(run)
    except store.KbError as exc:
        return await _article_error(request, user, article_id, exc)
    if revision:
        await _announce(request, revision[0])
    done = {"submit": "submitted", "publish": "published", "reject": "rejected", "rollback": "rolled_back",
            "archive": "archived"}[step]
    return _see_other(f"/console/kb/articles/{quote(article_id)}", done)


@router.post("/kb/articles/{article_id}/submit", include_in_schema=False)
async def kb_submit(request: Request, article_id: str) -> Response:
    return await _workflow(request, article_id, "submit")


@router.post("/kb/articles/{article_id}/publish", include_in_schema=False)
async def kb_publish(request: Request, article_id: str) -> Response:
    return await _workflow(request, article_id, "publish")


@router.post("/kb/articles/{article_id}/reject", include_in_schema=False)
async def kb_reject(request: Request, article_id: str) -> Response:
    return await _workflow(request, article_id, "reject")


@router.post("/kb/articles/{article_id}/rollback", include_in_schema=False)
async def kb_rollback(request: Request, article_id: str) -> Response:
    return await _workflow(request, article_id, "rollback")


@router.post("/kb/articles/{article_id}/archive", include_in_schema=False)
async def kb_archive(request: Request, article_id: str) -> Response:
    return await _workflow(request, article_id, "archive")


@router.get("/kb/articles/{article_id}/versions/{version}", response_class=HTMLResponse, include_in_schema=False)
async def kb_version_page(request: Request, article_id: str, version: int, against: int | None = None) -> Response:
    user, deny = await _page_user(request)
    if deny is not None:
        return deny

    def load() -> tuple[dict[str, Any], dict[str, Any] | None]:
        with _sessions(request)() as s:
            v = store.get_version(s, article_id, version)
            other = against if against is not None else (version - 1 if version > 1 else None)
            old = store.get_version(s, article_id, other) if other else None
            return v, old

    try:
        v, old = await run_in_threadpool(load)
    except store.NotFound:
        return _not_found(request, user)
    return _render(request, "kb_version.html", user, title=f"{article_id} v{version}", v=v, old=old,
                   changes=diff(old["content"] if old else None, v["content"]), preview=preview(request, v["content"]))


# --- the learning loop ---------------------------------------------------------------------------

def _not_understood_labels() -> list[str]:
    return [learning.OUT_OF_SCOPE, *learning.ABSTAIN_LABELS]


def _clusters(request: Request, days: int) -> list[learning.Cluster]:
    from bot.municipality import LOW_CONFIDENCE

    since = utcnow() - timedelta(days=days)
    k = _knowledge(request)
    abstain = []
    for lang in LANGS:
        try:
            abstain.append(k.render("utter_kb_abstain", lang))
        except KeyError:  # an engine without the knowledge base's own "no answer"
            pass
    with _sessions(request)() as s:
        rows = store.unanswered(s, since, _not_understood_labels(), LOW_CONFIDENCE, limit=learning.MAX_MESSAGES,
                                abstain_texts=abstain)
    kb_sync = getattr(request.app.state, "kb_sync", None)
    return learning.cluster(rows, articles=list(kb_sync.articles) if kb_sync is not None else [])


@router.get("/kb/learn", response_class=HTMLResponse, include_in_schema=False)
async def kb_learn_page(request: Request, days: int = LEARN_DAYS, done: str = "") -> Response:
    user, deny = await _page_user(request)
    if deny is not None:
        return deny
    days = max(1, min(days, 365))
    clusters = await run_in_threadpool(_clusters, request, days)
    k = _knowledge(request)
    intents = [{"code": c, "name": k.label_name(c, "ko")} for c in k.labels]
    return _render(request, "kb_learn.html", user, title="답하지 못한 질문", clusters=clusters, days=days,
                   intents=intents, done=DONE.get(done), errors=[])


def _ids(form: Any, field_name: str = "ids") -> list[int]:
    values = form.getlist(field_name) if hasattr(form, "getlist") else [form.get(field_name)]
    return [i for i in (_int(v) for v in values) if i is not None]


def _texts_of(request: Request, ids: list[int]) -> dict[str, list[str]]:
    """The (masked) texts of these not-understood messages, by language."""
    from crm_store.models import Interaction

    with _sessions(request)() as s:
        rows = s.query(Interaction.id, Interaction.text, Interaction.lang).filter(
            Interaction.id.in_(ids), Interaction.direction == "in").all()
    out: dict[str, list[str]] = {}
    for _id, text, lang in sorted(rows):
        t = learning.clean(text or "")
        if t and t not in out.get("en" if lang == "en" else "ko", []):
            out.setdefault("en" if lang == "en" else "ko", []).append(t)
    return out


@router.post("/kb/learn", include_in_schema=False)
async def kb_learn_action(request: Request) -> Response:
    user = await run_in_threadpool(auth.current_user, request)
    if user is None:
        return RedirectResponse("/console/login?next=/console/kb/learn", status_code=303)
    form = await request.form()
    auth.check_csrf(request, user, str(form.get("csrf_token") or ""))
    if user.role not in KB_ROLES:
        raise HTTPException(status_code=403, detail="knowledge-base editors only")
    ids = _ids(form)
    action = str(form.get("action") or "")
    if not ids:
        return _see_other("/console/kb/learn")
    texts = await run_in_threadpool(_texts_of, request, ids)
    k = _knowledge(request)

    def run() -> str:
        with _sessions(request).begin() as s:
            if action == "attach":
                target = str(form.get("article_id") or "").strip()
                store.add_questions(s, target, texts, user.username)
                store.mark_learned(s, ids, "attach", target, user.username)
                return f"/console/kb/articles/{quote(target)}?done=attached"
            if action == "draft":
                target = str(form.get("new_id") or "").strip().lower()
                title = str(form.get("new_title") or "").strip() or next(iter(texts.get("ko") or texts.get("en") or
                                                                               [target]))
                d: dict[str, Any] = {"id": target, "title": {"ko": title[:120]}, "questions": texts}
                store.save_draft(s, d, user.username, create=True,
                                 note="learning loop: drafted from residents' questions")
                store.mark_learned(s, ids, "draft", target, user.username)
                return f"/console/kb/articles/{quote(target)}/edit"
            if action == "intent":
                intent = str(form.get("intent") or "")
                if intent not in k.labels:
                    raise store.Invalid([f"unknown intent {intent!r}"])
                path = request.app.state.settings.pcrm_nlu_dir / "nlu" / "learned.yml"
                learning.add_examples(path, intent, [t for lang in texts.values() for t in lang])
                store.mark_learned(s, ids, "intent", intent, user.username)
                return "/console/kb/learn?done=labelled"
            if action == "dismiss":
                store.mark_learned(s, ids, "dismiss", None, user.username)
                return "/console/kb/learn?done=dismissed"
            raise store.Invalid([f"unknown action {action!r}"])

    try:
        target = await run_in_threadpool(run)
    except store.KbError as exc:
        clusters = await run_in_threadpool(_clusters, request, LEARN_DAYS)
        intents = [{"code": c, "name": k.label_name(c, "ko")} for c in k.labels]
        errors = exc.problems if isinstance(exc, store.Invalid) else [str(exc)]
        return _render(request, "kb_learn.html", user, status_code=_error_status(exc), title="답하지 못한 질문",
                       clusters=clusters, days=LEARN_DAYS, intents=intents, done=None, errors=errors)
    return RedirectResponse(target, status_code=303)


# --- JSON API (automation, tests, kb.js's live preview) ------------------------------------------

class ArticleBody(BaseModel):
    article: dict[str, Any]
    base_version: int | None = None
    create: bool = False
    area: str | None = Field(default=None, max_length=64)


class VersionBody(BaseModel):
    version: int
    note: str | None = Field(default=None, max_length=255)


def _api(fn: Any) -> Any:
    try:
        return fn()
    except store.KbError as exc:
        detail: Any = exc.problems if isinstance(exc, store.Invalid) else str(exc)
        raise HTTPException(status_code=_error_status(exc), detail=detail) from None


@router.get("/api/kb/articles", summary="Knowledge-base articles (search: every word of q)")
async def api_kb_list(request: Request, q: str = "", area: str = "", status: str = "",
                      user: ConsoleUser = Depends(require_kb_editor)) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with _sessions(request)() as s:
            return {"revision": store.revision(s),
                    "items": store.list_articles(s, q[:100], area or None, status or None)}

    return await run_in_threadpool(run)


@router.get("/api/kb/status", summary="The published revision and the one this worker serves")
async def api_kb_status(request: Request, user: ConsoleUser = Depends(require_kb_editor)) -> dict[str, Any]:
    def run() -> int:
        with _sessions(request)() as s:
            return store.revision(s)

    return {"published_revision": await run_in_threadpool(run), "served_revision": _served(request)}


@router.get("/api/kb/articles/{article_id}", summary="One article with its whole version history")
async def api_kb_get(request: Request, article_id: str,
                     user: ConsoleUser = Depends(require_kb_editor)) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with _sessions(request)() as s:
            return store.get_article(s, article_id)

    return await run_in_threadpool(_api, run)


@router.post("/api/kb/articles", summary="Save a new draft version (create=true for a new article)")
async def api_kb_save(request: Request, body: ArticleBody,
                      user: ConsoleUser = Depends(kb_editor_with_csrf)) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with _sessions(request).begin() as s:
            v = store.save_draft(s, body.article, user.username, base_version=body.base_version, create=body.create,
                                 area=body.area)
            return {"id": body.article.get("id"), "version": v, "status": "draft"}

    return await run_in_threadpool(_api, run)


async def _api_step(request: Request, article_id: str, step: str, body: VersionBody,
                    user: ConsoleUser) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with _sessions(request).begin() as s:
            if step in ("submit", "publish"):
                problems = strict_problems(request, store.get_version(s, article_id, body.version)["content"])
                if problems:
                    raise store.Invalid(problems)
            if step == "submit":
                store.submit(s, article_id, body.version, user.username)
            elif step == "publish":
                store.publish(s, article_id, body.version, user.username, user.role)
            elif step == "reject":
                store.reject(s, article_id, body.version, user.username, body.note)
            elif step == "rollback":
                store.rollback(s, article_id, body.version, user.username)
            art = store.get_article(s, article_id)
            return {"id": article_id, "latest_version": art["latest_version"], "latest_status": art["latest_status"],
                    "published_version": art["published_version"], "revision": store.revision(s)}

    out = await run_in_threadpool(_api, run)
    if step in ("publish", "rollback"):
        await _announce(request, out["revision"])
    return out


@router.post("/api/kb/articles/{article_id}/submit", summary="Ask for review of the newest draft")
async def api_kb_submit(request: Request, article_id: str, body: VersionBody,
                        user: ConsoleUser = Depends(kb_editor_with_csrf)) -> dict[str, Any]:
    return await _api_step(request, article_id, "submit", body, user)


@router.post("/api/kb/articles/{article_id}/publish",
             summary="Publish a version in review (another editor, or a supervisor); live in every worker")
async def api_kb_publish(request: Request, article_id: str, body: VersionBody,
                         user: ConsoleUser = Depends(kb_editor_with_csrf)) -> dict[str, Any]:
    return await _api_step(request, article_id, "publish", body, user)


@router.post("/api/kb/articles/{article_id}/reject", summary="Send a version in review back to draft")
async def api_kb_reject(request: Request, article_id: str, body: VersionBody,
                        user: ConsoleUser = Depends(kb_editor_with_csrf)) -> dict[str, Any]:
    return await _api_step(request, article_id, "reject", body, user)


@router.post("/api/kb/articles/{article_id}/rollback", summary="Publish a copy of an earlier version at once")
async def api_kb_rollback(request: Request, article_id: str, body: VersionBody,
                          user: ConsoleUser = Depends(kb_editor_with_csrf)) -> dict[str, Any]:
    return await _api_step(request, article_id, "rollback", body, user)


class PreviewBody(BaseModel):
    answer: dict[str, str] = Field(default_factory=dict)
    spoken: dict[str, str] = Field(default_factory=dict)


@router.post("/api/kb/preview", summary="An answer with the city's placeholders filled, as residents see it")
async def api_kb_preview(request: Request, body: PreviewBody,
                         user: ConsoleUser = Depends(kb_editor_with_csrf)) -> dict[str, Any]:
    return preview(request, {"answer": body.answer, "spoken": body.spoken})


@router.get("/api/kb/learn", summary="Not-understood questions of the last days, clustered")
async def api_kb_learn(request: Request, days: int = LEARN_DAYS,
                       user: ConsoleUser = Depends(require_kb_editor)) -> dict[str, Any]:
    clusters = await run_in_threadpool(_clusters, request, max(1, min(days, 365)))
    return {"clusters": [{"key": c.key, "label": c.label, "count": c.count, "texts": c.texts(),
                          "ids": [m.id for m in c.messages], "labels": c.labels, "suggestion": c.suggestion}
                         for c in clusters]}
