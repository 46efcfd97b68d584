"""Personal data never reaches the logs: phone numbers and 주민등록번호 are masked in every record.

:func:`install_pii_filter` (called once by ``create_app``) puts :class:`PiiMaskingFilter` on the
handlers of the root logger and of uvicorn's loggers, and on our own loggers. A filter on a
*logger* sees only records logged to that very logger, not to its children, so the filter is
also added to every ``pcrm.*`` logger that exists, and to ones created later through a logger
class hook; a filter on a *handler* sees everything that reaches the handler. Either way a
record is masked once: the message is rendered with its arguments and masked, the arguments
dropped, and a traceback (which quotes SQL parameters and conversation keys) is rendered and
masked into ``exc_text``.
"""

from __future__ import annotations

import logging
import re

from bot.masking import mask_pii

#: Query-string parameters whose values never reach a log (keys, signatures, session ids, codes).
_SECRET_QUERY = re.compile(r"([?&](?:api_key|key|sig|session|token|code|password|secret|access_token)=)[^&\s\"']*",
                           re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with personal numbers masked and secret query-string values replaced."""
    masked = mask_pii(text)
    return _SECRET_QUERY.sub(r"\1[redacted]", masked) if "=" in masked else masked

#: Loggers whose records are masked (with their children).
MASKED_LOGGERS = ("pcrm", "bot", "channels", "crm_store", "actions", "uvicorn", "uvicorn.error",
                  "uvicorn.access", "sqlalchemy", "telegram", "httpx")
_FORMATTER = logging.Formatter()


def _masked(value: object) -> object:
    """A log argument with PII masked: numbers stay numbers, anything else becomes masked text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(value if isinstance(value, str) else str(value))


class PiiMaskingFilter(logging.Filter):
    """Masks phone numbers and resident registration numbers in a record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "pii_masked", False):
            return True
        # Mask the format string and each argument in place rather than pre-formatting the
        # message: formatters such as uvicorn's access log read ``record.args`` themselves.
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_masked(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _masked(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_pii(record.exc_text)
            record.exc_info = None  # formatters would render the raw traceback again
        if record.stack_info:
            record.stack_info = mask_pii(record.stack_info)
        record.pii_masked = True  # type: ignore[attr-defined]
        return True


_FILTER = PiiMaskingFilter()


def _covered(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in MASKED_LOGGERS)


def _add(target: logging.Filterer) -> None:
    if _FILTER not in target.filters:
        target.addFilter(_FILTER)


def install_pii_filter() -> PiiMaskingFilter:
    """Mask personal data in our loggers, uvicorn's, and whatever handlers exist now (idempotent)."""
    manager = logging.Logger.manager
    for name in MASKED_LOGGERS:
        _add(logging.getLogger(name))
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and _covered(name):
            _add(logger)
            for handler in logger.handlers:
                _add(handler)
    for handler in logging.getLogger().handlers:
        _add(handler)
    # Loggers created from now on (modules imported later) get the filter as they are made.
    cls = logging.getLoggerClass()
    if not getattr(cls, "_pii_masking", False):
        class _MaskedLogger(cls):  # type: ignore[valid-type,misc]
            _pii_masking = True

            def __init__(self, name: str, level: int = logging.NOTSET) -> None:
                super().__init__(name, level)
                if _covered(name):
                    self.addFilter(_FILTER)

        logging.setLoggerClass(_MaskedLogger)
    return _FILTER
