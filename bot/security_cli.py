"""``pcrm users passwd|disable|enable|list|sessions|revoke`` and ``pcrm doctor``.

Kept apart from :mod:`bot.cli` (which only dispatches here) so the account and deployment
checks live next to what they check: :mod:`bot.console.auth` and :mod:`bot.settings`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from sqlalchemy import select


def _sessions() -> Any:
    from crm_store.db import make_session_factory, resolve_url, upgrade

    url = resolve_url()
    upgrade(url)
    return make_session_factory(url)


def _agent(s: Any, username: str) -> Any:
    from crm_store.models import Agent

    row = s.scalars(select(Agent).where(Agent.username == username.strip())).first()
    if row is None:
        raise SystemExit(f"error: no user {username!r}")
    return row


def cmd_passwd(args: argparse.Namespace) -> int:
    """A new password (policy-checked); every session of the user ends."""
    from bot.console.auth import end_sessions_of, hash_password
    from bot.console.passwords import check_policy
    from crm_store.models import audit

    password = args.password or getpass.getpass(f"new password for {args.username}: ")
    try:
        check_policy(password, args.username)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with _sessions().begin() as s:
        row = _agent(s, args.username)
        row.password_hash = hash_password(password)
        ended = end_sessions_of(s, row.id)
        s.add(audit("cli", "console.password_changed", f"agent:{row.id}"))
    print(f"password of {args.username} changed; {ended} session(s) ended")
    return 0


def cmd_disable(args: argparse.Namespace, active: bool = False) -> int:
    """Deactivate (or re-activate) a user; deactivating ends every session."""
    from bot.console.auth import end_sessions_of
    from crm_store.models import audit

    with _sessions().begin() as s:
        row = _agent(s, args.username)
        row.active = active
        ended = 0 if active else end_sessions_of(s, row.id)
        s.add(audit("cli", "console.enabled" if active else "console.disabled", f"agent:{row.id}"))
    print(f"{args.username} {'enabled' if active else f'disabled; {ended} session(s) ended'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from crm_store.models import Agent

    with _sessions()() as s:
        rows = [{"username": a.username, "role": a.role, "departments": list(a.departments or []),
                 "active": a.active} for a in s.scalars(select(Agent).order_by(Agent.username))]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    for r in rows if not args.json else []:
        print(f"{r['username']:20s} {r['role']:10s} {'active' if r['active'] else 'disabled':8s} "
              f"{','.join(r['departments']) or '-'}")
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    """Live sessions (all users, or one): id, user, since, last seen, client."""
    from bot.console.auth import IDLE_TIMEOUT_S
    from crm_store.models import Agent, ConsoleSession
    from crm_store.timeutil import as_utc, utcnow

    now = utcnow()
    stmt = (select(ConsoleSession, Agent).join(Agent, Agent.id == ConsoleSession.agent_id)
            .where(ConsoleSession.ended_at.is_(None)).order_by(ConsoleSession.id))
    if args.username:
        stmt = stmt.where(Agent.username == args.username)
    out = []
    with _sessions()() as s:
        for row, agent in s.execute(stmt):
            if as_utc(row.expires_at) <= now or (now - as_utc(row.last_seen_at)).total_seconds() > IDLE_TIMEOUT_S:
                continue
            out.append({"id": row.id, "username": agent.username, "created_at": as_utc(row.created_at).isoformat(),
                        "last_seen_at": as_utc(row.last_seen_at).isoformat(), "client": row.client,
                        "user_agent": row.user_agent})
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for r in out:
        print(f"{r['id']:6d} {r['username']:16s} since {r['created_at'][:19]} last {r['last_seen_at'][:19]} "
              f"{r['client']}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """End one session by id, or every session of ``--user``."""
    from bot.console.auth import end_sessions_of
    from crm_store.models import ConsoleSession, audit
    from crm_store.timeutil import utcnow

    with _sessions().begin() as s:
        if args.user:
            row = _agent(s, args.user)
            n = end_sessions_of(s, row.id)
            s.add(audit("cli", "console.sessions_revoked", f"agent:{row.id}"))
        else:
            sess = s.get(ConsoleSession, args.id)
            n = 0
            if sess is not None and sess.ended_at is None:
                sess.ended_at = utcnow()
                n = 1
                s.add(audit("cli", "console.session_revoked", f"agent:{sess.agent_id}"))
    print(f"{n} session(s) ended")
    return 0


def add_user_commands(usub: Any) -> None:
    """The account commands under ``pcrm users``."""
    p = usub.add_parser("passwd", help="set a user's password (ends their sessions)")
    p.add_argument("username")
    p.add_argument("--password", help="prompted for when omitted")
    p.set_defaults(func=cmd_passwd)
    d = usub.add_parser("disable", help="deactivate a user (ends their sessions)")
    d.add_argument("username")
    d.set_defaults(func=cmd_disable)
    e = usub.add_parser("enable", help="re-activate a user")
    e.add_argument("username")
    e.set_defaults(func=lambda a: cmd_disable(a, active=True))
    ls = usub.add_parser("list", help="console users")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    ss = usub.add_parser("sessions", help="live console sessions")
    ss.add_argument("username", nargs="?")
    ss.add_argument("--json", action="store_true")
    ss.set_defaults(func=cmd_sessions)
    rv = usub.add_parser("revoke", help="end a session (by id) or all sessions of --user")
    g = rv.add_mutually_exclusive_group(required=True)
    g.add_argument("id", nargs="?", type=int)
    g.add_argument("--user")
    rv.set_defaults(func=cmd_revoke)


# ---------------------------------------------------------------------------- doctor

def doctor_findings() -> list[tuple[str, str]]:
    """What a production deployment still lacks: ``(item, advice)`` pairs; empty = nothing found."""
    from bot.municipality import ConfigError
    from bot.open311 import _load_keys, keys_path
    from bot.settings import Settings

    settings = Settings()
    out: list[tuple[str, str]] = []
    try:
        settings.municipality()
    except ConfigError as exc:
        out.extend((str(settings.pcrm_config), p) for p in exc.problems)
    if settings.secret_generated:
        out.append(("PCRM_SECRET_KEY", "not set: a random per-installation secret in var/secret_key is used; set "
                                       "one secret for all servers (e.g. `python -c 'import secrets; "
                                       "print(secrets.token_urlsafe(32))'`)"))
    if not settings.pcrm_public_url.startswith("https://"):
        out.append(("PCRM_PUBLIC_URL", f"{settings.pcrm_public_url!r} is not https: put the app behind an HTTPS "
                                       "reverse proxy (Secure cookies, webhook signatures) and run uvicorn with "
                                       "--proxy-headers"))
    if not settings.pcrm_rest_token:
        out.append(("PCRM_REST_TOKEN", "not set: anyone can post to /webhooks/rest/webhook as any sender"))
    if settings.telegram_bot_token and not settings.telegram_webhook_secret:
        out.append(("TELEGRAM_WEBHOOK_SECRET", "not set while the Telegram channel is on"))
    if not settings.kakao_skill_secret:
        out.append(("KAKAO_SKILL_SECRET", "not set: Kakao skill requests are not authenticated"))
    if settings.twilio_account_sid and not settings.twilio_auth_token:
        out.append(("TWILIO_AUTH_TOKEN", "not set: Twilio webhook signatures cannot be checked"))
    url = settings.database_url or ""
    if not url.startswith("postgresql"):
        out.append(("DATABASE_URL", "SQLite: use PostgreSQL in production"))
    if not settings.redis_url:
        out.append(("REDIS_URL", "not set: rate limits and login lockouts count per process"))
    if not settings.pcrm_backup_confirmed:
        out.append(("backups", "no backup confirmed: schedule pg_dump (and keep var/secret_key, "
                               "var/open311_keys.json); set PCRM_BACKUP_CONFIRMED=1 once done"))
    if settings.pcrm_supervisor_basic_allow:
        out.append(("PCRM_SUPERVISOR_BASIC_ALLOW", f"HTTP Basic allowed from {settings.pcrm_supervisor_basic_allow}"))
    if not _load_keys(keys_path(settings)) and not settings.open311_api_keys:
        out.append(("Open311 keys", "none: city systems cannot post (pcrm open311 keys add NAME)"))
    return out


def cmd_doctor(args: argparse.Namespace) -> int:
    findings = doctor_findings()
    if args.json:
        print(json.dumps([{"item": i, "advice": a} for i, a in findings], ensure_ascii=False))
    else:
        for item, advice in findings:
            print(f"- {item}: {advice}")
        print("nothing missing" if not findings else f"{len(findings)} item(s) to look at before production")
    return 1 if findings and args.strict else 0


def add_doctor_command(sub: Any) -> None:
    d = sub.add_parser("doctor", help="what a production deployment still lacks (secrets, tokens, HTTPS, backups)")
    d.add_argument("--json", action="store_true")
    d.add_argument("--strict", action="store_true", help="exit 1 when anything is missing")
    d.set_defaults(func=cmd_doctor)
