"""Settings: ``config.yml`` (the municipality) plus the environment (deployment).

The municipality's facts live in ``config.yml`` so another city edits data, not
code; secrets and URLs come from the environment, the way operators expect.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from bot.municipality import Municipality

ROOT = Path(__file__).resolve().parent.parent


class StoreSettings(BaseSettings):
    """What the store (:mod:`crm_store.db`) reads itself: engines are made in places no
    :class:`Settings` reaches (migrations, tests, benches), and making one has no side effect
    (a full :class:`Settings` creates the installation secret)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    #: Unset: ``sqlite:///var/pcrm.db`` (:data:`crm_store.db.DEFAULT_URL`).
    database_url: str | None = None
    #: SQLite's ``synchronous`` in WAL mode; why NORMAL: :func:`crm_store.db._sqlite_synchronous`.
    pcrm_sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"

    @field_validator("pcrm_sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class Settings(StoreSettings):
    """Environment variables (and a ``.env`` file, if present)."""

    redis_url: str | None = None
    #: Prefix of every Redis key and pub/sub channel (two deployments, or test runs, may share a Redis).
    pcrm_redis_prefix: str = "pcrm:"
    #: Seconds between retries of what a database outage left in the spool.
    pcrm_spool_flush_s: float = 30.0
    #: Where that spool lives (default: ``var/spool.jsonl`` next to the model cache).
    pcrm_spool_path: Path | None = None
    #: Seconds between checks of the published knowledge base's revision (edits go live within this).
    pcrm_kb_poll_s: float = 15.0
    pcrm_config: Path = ROOT / "config.yml"
    #: Signs console CSRF tokens and keys the one-time-code hashes. Unset: a random secret made
    #: once per installation (``var/secret_key``, :mod:`bot.secret_key`), never a constant.
    pcrm_secret_key: str = ""
    #: Where that random secret is kept (default: ``var/secret_key`` next to the model cache).
    pcrm_secret_file: Path | None = None
    #: Bearer token the REST channel requires (``Authorization: Bearer …``); unset: open, as Rasa's.
    pcrm_rest_token: str | None = None
    #: Addresses (IPs or CIDRs, comma list) allowed to use HTTP Basic on ``/supervisor/*``; unset: none.
    pcrm_supervisor_basic_allow: str = ""
    #: Proxies whose ``X-Forwarded-For`` is believed (uvicorn's ``forwarded_allow_ips``): the client
    #: address that login lockouts and one-time-code limits count by. ``*`` only when nothing but the
    #: proxy can reach the app (as in deploy/compose.yml).
    pcrm_trusted_proxies: str = "127.0.0.1"
    #: Hosts a Kakao ``callbackUrl`` may point to (comma list; a leading dot allows subdomains).
    kakao_callback_hosts: str = ".kakao.com,.kakaoenterprise.com,.kakao.ai"
    pcrm_public_url: str = "http://127.0.0.1:8000"
    pcrm_nlu_dir: Path = ROOT / "nlu_data"
    pcrm_model_dir: Path = ROOT / "var" / "model"
    #: The knowledge base's articles (default: ``<pcrm_nlu_dir>/knowledge``).
    pcrm_kb_dir: Path | None = None
    pcrm_max_message_chars: int = 5000
    #: Messages handled at once per worker (threads); read by the inbox.
    pcrm_inbox_threads: int = 4
    #: Open311 keys kept hashed in this file (default: ``var/open311_keys.json`` next to the model cache).
    open311_keys_file: Path | None = None
    #: More Open311 keys from the environment: comma list, plain or ``sha256:<hex>``.
    open311_api_keys: str = ""
    #: ``X-PCRM-Worker: <pid>`` on every response (which worker answered); off by default: it
    #: tells the world process ids. The multi-worker tests and diagnostics turn it on.
    pcrm_worker_header: bool = False
    #: ``GET /metrics`` needs ``Authorization: Bearer <token>`` when set; unset: loopback clients only.
    pcrm_metrics_token: str | None = None
    #: ``json``: one JSON object per log line, with request and conversation ids (default: text).
    pcrm_log_format: str = "text"
    #: OpenTelemetry: traces of each turn go to this OTLP/HTTP endpoint when set (off and free when not).
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "pcrm"
    #: NLU engine, overriding ``engine`` in config.yml: ``builtin`` or ``rasa`` (then ``RASA_URL``).
    pcrm_engine: str | None = None
    rasa_url: str | None = None
    telegram_bot_token: str | None = None
    telegram_webhook_secret: str | None = None
    telegram_api_base_url: str = "https://api.telegram.org"
    kakao_skill_secret: str | None = None
    # Twilio SMS and voice (channels/twilio_sms.py, channels/twilio_voice.py).
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from_number: str | None = None
    #: Where the REST client sends API calls instead of https://api.twilio.com (a local fake, a proxy).
    twilio_api_base_url: str | None = None
    #: Secret of a Twilio webhook SharedKey, for webhooks whose Webhook Rule signs with one.
    twilio_webhook_shared_key: str | None = None
    #: An operator's word that backups are scheduled (``pcrm doctor`` stops asking; SECURITY.md).
    pcrm_backup_confirmed: bool | None = None

    @field_validator("pcrm_secret_file", "open311_keys_file", "pcrm_backup_confirmed", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # These were read as `os.environ.get(...)` with "if override:": an empty variable meant unset.
        return None if value == "" else value

    def model_post_init(self, __context: Any) -> None:
        if not self.pcrm_secret_key:
            from bot.secret_key import installation_secret

            self.pcrm_secret_key = installation_secret(self)
            self._generated_secret = True

    @property
    def secret_generated(self) -> bool:
        """Whether the secret is the installation's random one (``PCRM_SECRET_KEY`` unset)."""
        return bool(getattr(self, "_generated_secret", False))

    def config(self) -> dict[str, Any]:
        """The parsed ``config.yml``, as a dict (what the knowledge base and older readers take)."""
        return load_config(self.pcrm_config)

    def municipality(self) -> Municipality:
        """``config.yml`` typed and validated (:mod:`bot.municipality`); raises
        :class:`bot.municipality.ConfigError` naming each bad key."""
        return load_municipality(self.pcrm_config)


def safe_load_yaml(text: Any) -> Any:
    """``yaml.safe_load`` of a string or stream, with libyaml's parser when PyYAML was built with
    it: the same safe constructors (the same objects for every YAML file of the repository),
    ≈ 8x less CPU (the catalog, the responses and the NLU data at start)."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a SafeLoader


@lru_cache(maxsize=8)
def load_config(path: Path) -> dict[str, Any]:
    """Parse a municipality config file once per process; a key given twice, or text that is not
    YAML, raises :class:`bot.municipality.ConfigError` naming it."""
    from bot.municipality import read_yaml

    return read_yaml(path)


@lru_cache(maxsize=8)
def load_municipality(path: Path) -> Municipality:
    """Validate a municipality config file once per process (the same dict :func:`load_config` gave)."""
    from bot.municipality import parse

    return parse(load_config(path), str(path))


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; tests change the env)."""
    return Settings()
