"""Limits against guessing and flooding: one-time codes and console logins.

They count on the app's security limiter (:func:`limiter`: the same Redis/in-process
:class:`~bot.ratelimit.RateLimiter` as the message limits, so every worker shares the counts)
and raise :class:`~bot.ratelimit.RateLimited`, which the app answers ``429`` with
``Retry-After``. The numbers are here, in one place, with what they protect:

* issuing a one-time code (an SMS costs money and annoys its recipient): per phone number
  3 in 10 minutes and 10 a day, per identity 3 in 10 minutes, per client address 10 in 10 minutes;
* checking a code: per client address 30 in 10 minutes (the code itself dies after 5 wrong tries,
  :data:`crm_store.otp.MAX_ATTEMPTS`);
* console logins: 5 failures of one account in 15 minutes lock that account, 20 failures from
  one client address lock that address, for the rest of the window; while locked even the right
  password is refused (429).
"""

from __future__ import annotations

from typing import Any

from bot.ratelimit import InProcessRateLimiter, RateLimiter

OTP_PER_PHONE = ((3, 600), (10, 86_400))
OTP_PER_IDENTITY = ((3, 600),)
OTP_PER_CLIENT = ((10, 600),)
OTP_VERIFY_PER_CLIENT = ((30, 600),)
LOGIN_WINDOW_S = 900
LOGIN_FAILURES_PER_ACCOUNT = 5
LOGIN_FAILURES_PER_CLIENT = 20


def limiter(app_or_state: Any) -> RateLimiter:
    """The security limiter of an app (``app.state.security_limiter``), made in-process on first use."""
    state = getattr(app_or_state, "state", app_or_state)
    lim = getattr(state, "security_limiter", None)
    if lim is None:
        lim = InProcessRateLimiter()
        state.security_limiter = lim
    return lim


def client_ip(request: Any) -> str:
    """The caller's address (uvicorn's ``--proxy-headers`` puts a trusted proxy's client here)."""
    client = getattr(request, "client", None)
    return (client.host if client else None) or "unknown"


def hit_all(lim: RateLimiter, bucket: str, limits: tuple[tuple[int, int], ...]) -> None:
    """Count one event of ``bucket`` against each ``(limit, window_s)``."""
    for limit, window in limits:
        lim.hit(f"{bucket}:{window}", limit, window)


def otp_issue(lim: RateLimiter, identity_key: str, phone_e164: str, ip: str | None) -> None:
    """Count one code issued; :class:`RateLimited` over any of the limits."""
    if ip:
        hit_all(lim, f"otp-client:{ip}", OTP_PER_CLIENT)
    hit_all(lim, f"otp-identity:{identity_key}", OTP_PER_IDENTITY)
    hit_all(lim, f"otp-phone:{phone_e164}", OTP_PER_PHONE)


def login_blocked(lim: RateLimiter, username: str, ip: str) -> None:
    """:class:`RateLimited` while the account or the address is locked out."""
    lim.blocked(f"login-account:{username.strip().lower()}", LOGIN_FAILURES_PER_ACCOUNT, LOGIN_WINDOW_S)
    lim.blocked(f"login-client:{ip}", LOGIN_FAILURES_PER_CLIENT, LOGIN_WINDOW_S)


def login_failed(lim: RateLimiter, username: str, ip: str) -> None:
    """Count one failed login of the account and of the address (never raises)."""
    from bot.ratelimit import RateLimited

    for bucket, limit in ((f"login-account:{username.strip().lower()}", LOGIN_FAILURES_PER_ACCOUNT),
                          (f"login-client:{ip}", LOGIN_FAILURES_PER_CLIENT)):
        try:
            lim.hit(bucket, limit, LOGIN_WINDOW_S)
        except RateLimited:
            pass
