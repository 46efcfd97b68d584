"""The deployment files agree with the code and the README (images cannot be built here).

* compose: the four services; only the proxy publishes ports (80, 443); the app's port is the
  one its command serves on and the one the proxy forwards to; the database and Redis URLs name
  the compose services; every variable given to the app is one the code reads (``Settings`` or
  ``os.environ``) and the README documents; the production secrets are all there.
* Dockerfile: its install steps are the README's, it runs as a non-root user, it serves.
* systemd: a non-root ``pcrm serve``.
* dashboard and alert rules: every series they query is one ``/metrics`` exposes.
* backup.sh: a SQLite backup restores what was backed up.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import yaml

from bot.settings import ROOT, Settings

DEPLOY = ROOT / "deploy"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yml").read_text(encoding="utf-8"))


def env_names_read_by_code() -> set[str]:
    names = {name.upper() for name in Settings.model_fields}
    for folder in ("bot", "channels", "crm_store", "actions"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"os\.environ(?:\.get)?[\[(]\"([A-Z0-9_]+)\"", path.read_text(encoding="utf-8")))
    return names


def test_compose_services_and_ports() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "pcrm", "proxy"}
    published = {name: svc.get("ports", []) for name, svc in services.items() if svc.get("ports")}
    assert list(published) == ["proxy"], "only the reverse proxy may publish ports"
    assert sorted(p.split(":")[-1] for p in published["proxy"]) == ["443", "80"]
    app = services["pcrm"]
    command = app["command"]
    assert command[:2] == ["pcrm", "serve"] and "--workers" in command
    port = command[command.index("--port") + 1]
    assert app["expose"] == [port]
    caddy = (DEPLOY / "Caddyfile").read_text(encoding="utf-8")
    assert re.search(rf"dynamic a pcrm {port}\b", caddy), "the proxy forwards to the app's port"
    assert "respond /metrics 404" in caddy
    for header in ("Strict-Transport-Security", "X-Content-Type-Options", "Referrer-Policy",
                   "Content-Security-Policy", "X-Frame-Options"):
        assert header in caddy, header


def test_compose_environment_matches_settings_and_readme() -> None:
    env = compose()["services"]["pcrm"]["environment"]
    known = env_names_read_by_code()
    unknown = sorted(set(env) - known)
    assert not unknown, f"compose gives the app variables no code reads: {unknown}"
    undocumented = sorted(name for name in env if f"`{name}`" not in README and f"`{name}=" not in README)
    assert not undocumented, f"variables missing from the README: {undocumented}"
    for needed in ("DATABASE_URL", "REDIS_URL", "PCRM_SECRET_KEY", "PCRM_PUBLIC_URL", "PCRM_METRICS_TOKEN"):
        assert needed in env, needed
    db = urlsplit(env["DATABASE_URL"].replace("${POSTGRES_PASSWORD}", "x"))
    assert (db.scheme, db.hostname, db.port, db.path) == ("postgresql", "postgres", 5432, "/pcrm")
    postgres = compose()["services"]["postgres"]["environment"]
    assert db.username == postgres["POSTGRES_USER"] and postgres["POSTGRES_DB"] == "pcrm"
    assert urlsplit(env["REDIS_URL"]).hostname == "redis"
    # each setting documented in the README's configuration table that a deployment sets is passed on
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table)) & {n.upper() for n in Settings.model_fields}
    local_only = {"PCRM_CONFIG", "PCRM_WORKER_HEADER", "TWILIO_API_BASE_URL", "TELEGRAM_API_BASE_URL",
                  "TWILIO_WEBHOOK_SHARED_KEY", "OPEN311_KEYS_FILE",
                  "PCRM_SQLITE_SYNCHRONOUS"}  # the compose file runs PostgreSQL
    missing = sorted(documented - set(env) - local_only)
    assert not missing, f"README settings the compose file does not pass: {missing}"


def _install_steps_in_readme() -> list[str]:
    block = README.split("<!-- install-steps -->", 1)[1].split("<!-- /install-steps -->", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("```")]


def test_dockerfile_installs_as_the_readme_says_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    steps = text.split("# -- install steps", 1)[1].split("# -- end of install steps", 1)[0]
    runs = [line[len("RUN "):].strip() for line in steps.splitlines() if line.startswith("RUN ")]
    assert runs == _install_steps_in_readme()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert text.index(f"USER {users[-1]}") < text.index("RUN python3 -m venv")
    assert re.search(r'^CMD \["pcrm", "serve", .*"--port", "8000"', text, re.M)


def test_systemd_unit_serves_as_an_unprivileged_user() -> None:
    unit = (DEPLOY / "pcrm.service").read_text(encoding="utf-8")
    assert re.search(r"^User=(?!root)\w+", unit, re.M)
    assert re.search(r"^ExecStart=\S*pcrm serve .*--workers", unit, re.M)
    assert "EnvironmentFile=" in unit and "KillMode=mixed" in unit


def test_dashboard_and_alerts_query_only_exposed_series() -> None:
    import json

    from bot import metrics, metrics_http

    exposed = {m._name for m in (metrics.MESSAGES, metrics.TURN_SECONDS, metrics.STAGE_SECONDS,
                                 metrics.HANDOFFS, metrics.ERRORS)}
    state = SimpleNamespace(settings=Settings(), sessions=None, inbox=SimpleNamespace(spool_path=Path("/nonexistent")))
    exposed |= {fam.name for fam in metrics_http.StoreCollector(SimpleNamespace(state=state)).collect()}
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text(encoding="utf-8"))
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {re.sub(r"_(total|bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"\bpcrm_[a-z_]+", e)}
    assert used, "no series queried"
    assert used <= exposed, f"queried but never exposed: {sorted(used - exposed)}"
    assert {"pcrm_messages", "pcrm_turn_seconds", "pcrm_handoff_queue_depth", "pcrm_sla_breaches"} <= used


def test_backup_script_restores_a_sqlite_database(tmp_path: Path) -> None:
    db = tmp_path / "pcrm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES ('before')")
    env = {"DATABASE_URL": f"sqlite:///{db}", "PATH": "/usr/bin:/bin"}
    backup = tmp_path / "b" / "pcrm.sqlite3"
    r = subprocess.run(["bash", str(DEPLOY / "backup.sh"), "backup", str(backup)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE t SET v = 'after'")
    r = subprocess.run(["bash", str(DEPLOY / "backup.sh"), "restore", str(backup)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("before",)]
