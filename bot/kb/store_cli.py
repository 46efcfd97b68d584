"""``pcrm kb import [DIR]`` and ``pcrm kb export DIR``: the seed files and the store.

* ``import`` validates the whole folder first (the engine's schema and this city's
  placeholders: :func:`bot.kb.articles.load_dir`) and imports nothing if any article is wrong;
  then it publishes every new or changed article as a new version (unchanged ones are left
  alone, so running it twice changes nothing) and bumps the revision the workers poll.
* ``export`` writes the *published* articles (what residents are told now, edits made in the
  console included) as one ``<area>.yml`` per area, in the seed format: commit them to keep
  the seed in step with the console, or move a knowledge base to another installation.
"""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import Any


def _settings() -> Any:
    from bot.settings import get_settings

    return get_settings()


def seed_dir(path: str | None) -> Path:
    """``path``, else ``PCRM_KB_DIR``, else ``<nlu_dir>/knowledge``."""
    if path:
        return Path(path)
    s = _settings()
    return Path(getattr(s, "pcrm_kb_dir", None) or s.pcrm_nlu_dir / "knowledge")


def _sessions() -> Any:
    from crm_store.db import make_session_factory, resolve_url, upgrade

    url = resolve_url(_settings().database_url)
    upgrade(url)
    return make_session_factory(url)


def cmd_kb_import(args: argparse.Namespace) -> int:
    from bot.kb.articles import ArticleError, load_dir
    from crm_store import kb as kb_store

    folder = seed_dir(getattr(args, "dir", None))
    if not folder.is_dir():
        print(f"error: {folder} is not a folder")
        return 2
    try:
        articles = load_dir(folder, _settings().config())
    except ArticleError as exc:
        print(f"not imported, {len(exc.problems)} problem(s):\n{exc}")
        return 2
    who = getattr(args, "who", None) or f"cli:{getpass.getuser()}"
    sessions = _sessions()
    with sessions.begin() as s:
        result = kb_store.import_articles(s, [(a.area or a.id.split(".", 1)[0], a.to_dict()) for a in articles],
                                          who=who)
    print(f"{folder}: {result}")
    for aid in result.updated:
        print(f"  updated {aid}")
    return 0


def cmd_kb_export(args: argparse.Namespace) -> int:
    from crm_store import kb as kb_store

    sessions = _sessions()
    with sessions() as s:
        files = kb_store.export_dir(s, Path(args.dir))
        revision = kb_store.revision(s)
    for path in files:
        print(path)
    print(f"{len(files)} file(s), revision {revision}")
    return 0


def add_kb_store_parsers(kbs: Any) -> None:
    """``import`` and ``export`` on the ``pcrm kb`` sub-command parser ``kbs``."""
    imp = kbs.add_parser("import", help="publish the seed folder's new and changed articles in the store "
                                        "(default PCRM_KB_DIR or nlu_data/knowledge)")
    imp.add_argument("dir", nargs="?")
    imp.add_argument("--who", help="name recorded as author in the versions and audit (default cli:<user>)")
    imp.set_defaults(func=cmd_kb_import)
    exp = kbs.add_parser("export", help="write the published articles as seed files, one per area")
    exp.add_argument("dir")
    exp.set_defaults(func=cmd_kb_export)
