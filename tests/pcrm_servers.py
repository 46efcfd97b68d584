"""Real processes for the scale-out and fault tests: ``pcrm serve`` workers, and a Redis or a
PostgreSQL of the test's own (another port, a temporary directory) that a test may stop and
restart without touching the machine's shared servers.

* :class:`PcrmServe` — ``pcrm serve --workers N`` as a subprocess (its own session, so
  stopping it stops its workers), settings from the environment as in production;
  every answer names its worker (``X-PCRM-Worker``).
* :class:`OwnRedis` — ``redis-server --save "" --appendonly no`` on a free port.
* :class:`OwnPostgres` — ``initdb`` + ``postgres`` on a free port, as the ``postgres``
  system user when the tests run as root (PostgreSQL refuses to run as root).
* :func:`need` — skip with a reason, or fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from bot.settings import ROOT

PCRM = ROOT / ".venv" / "bin" / "pcrm"
POSTGRES_URL = os.environ.get("PCRM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PCRM_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def need(ok: bool, reason: str) -> None:
    """Skip the test (fail under ``CI=true``) unless ``ok``."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = pred()
            if got:
                return got
        except Exception as exc:  # noqa: BLE001 - not yet
            last_exc = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


def redis_reachable(url: str = REDIS_URL) -> str | None:
    """None when Redis answers PING at ``url``, else the reason."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"Redis not reachable at {url}: {type(exc).__name__}: {exc}"


def postgres_schema(url: str = POSTGRES_URL) -> tuple[str, str]:
    """A fresh migrated schema on ``url``: (schema, URL pinned to it). Skips if unreachable."""
    from sqlalchemy import create_engine, text

    from crm_store.db import upgrade

    admin = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        need(False, f"PostgreSQL not reachable at {url}: {type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        admin.dispose()
    schema = f"pcrm_scale_{uuid.uuid4().hex[:10]}"
    upgrade(url, schema=schema)
    return schema, f"{url}?options={quote(f'-csearch_path={schema}')}"


def drop_schema(schema: str, url: str = POSTGRES_URL) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


def always_open_config(tmp: Path, **extra: Any) -> Path:
    """config.yml with the office always open (hand-offs are queued), plus ``extra`` keys."""
    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    config["business_hours"] = {**(config.get("business_hours") or {}), "always_open": True}
    config.update(extra)
    path = tmp / "config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


class PcrmServe:
    """``pcrm serve --workers N`` in a subprocess, configured by environment variables."""

    def __init__(self, tmp: Path, database_url: str, redis_url: str | None, workers: int = 2,
                 **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = tmp / f"pcrm-serve-{self.port}.log"
        self.spool = tmp / "spool.jsonl"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PCRM_CONFIG": str(always_open_config(tmp)),
            "PCRM_MODEL_DIR": str(ROOT / "var" / "model"),
            "PCRM_SECRET_KEY": "scale-test-secret",
            "PCRM_PUBLIC_URL": self.url,
            "PCRM_SPOOL_PATH": str(self.spool),
            "PCRM_SPOOL_FLUSH_S": "1",
            "PCRM_WORKER_HEADER": "1",  # which worker answered
            "PCRM_REDIS_PREFIX": f"pcrm-test-{uuid.uuid4().hex[:8]}:",
            **env,
        }
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        else:
            self.env.pop("REDIS_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def prefix(self) -> str:
        return self.env["PCRM_REDIS_PREFIX"]

    def start(self, timeout: float = 180.0) -> PcrmServe:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [str(PCRM), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
             "--log-level", os.environ.get("PCRM_TEST_SERVE_LOG_LEVEL", "info")],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        seen: set[str] = set()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"pcrm serve exited: {self.log()[-3000:]}")
            r = httpx.get(self.url + "/healthz", timeout=2, headers={"connection": "close"})
            if r.status_code == 200:
                seen.add(r.headers["x-pcrm-worker"])
            # Every worker answered once: a worker still in its start-up (model load, warm-up, heap
            # freeze, connection pool) does not accept yet, and the tests need all of them serving.
            return len(self.worker_pids()) >= self.workers and r.status_code == 200 and len(seen) >= self.workers

        try:
            wait_for(ready, timeout, f"pcrm serve on {self.url}", every=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def worker_pids(self) -> list[int]:
        """Live worker processes (children of the uvicorn supervisor)."""
        if self.proc is None:
            return []
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.proc.pid and fields[0] not in ("Z", "X"):
                try:
                    cmdline = (stat.parent / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"resource_tracker" not in cmdline:  # multiprocessing's helper, not a worker
                    out.append(int(stat.parent.name))
        return sorted(out)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the supervisor and its workers (our session)
            self.proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)


class OwnRedis:
    """A throw-away ``redis-server`` on a free port (no persistence)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OwnRedis:
        exe = shutil.which("redis-server")
        need(exe is not None, "redis-server is not installed")
        self.proc = subprocess.Popen(
            [str(exe), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: redis_reachable(self.url) is None, 10, f"redis-server on {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    exe = shutil.which("initdb")
    return Path(exe).parent if exe else None


class OwnPostgres:
    """A throw-away PostgreSQL cluster (``initdb`` into a temporary directory, trust auth)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        need(self.bin is not None, "PostgreSQL server binaries (initdb, postgres) are not installed")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pcrm-pg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root: use the postgres system user
            runuser = shutil.which("runuser")
            need(runuser is not None, "running as root and runuser is missing")
            try:
                shutil.chown(self.dir, "postgres", "postgres")
            except (LookupError, PermissionError) as exc:
                need(False, f"running as root and cannot hand a data directory to user postgres: {exc}")
            self._as = [str(runuser), "-u", "postgres", "--"]

    def initdb(self) -> OwnPostgres:
        assert self.bin is not None
        r = subprocess.run([*self._as, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                            "postgres", "--no-sync", "-E", "UTF8", "--locale", "C"],
                           capture_output=True, text=True, timeout=120)
        need(r.returncode == 0, f"initdb failed: {r.stderr.strip()[-500:]}")
        return self

    def start(self) -> OwnPostgres:
        assert self.bin is not None
        self.proc = subprocess.Popen(
            [*self._as, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "postgres.log", "ab"))  # noqa: SIM115
        wait_for(self._up, 30, f"postgres on port {self.port}")
        return self

    def _up(self) -> bool:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             connect_timeout=1) as conn:
            conn.execute("SELECT 1")
        return True

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, as in an outage."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:  # the postmaster itself (runuser, if any, need not forward signals)
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
        except (OSError, ValueError, IndexError):
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
