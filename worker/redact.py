"""Credentials out of everything qtrain prints or logs: one redaction for URLs and for free text.

A URL's password (``postgresql://qtrain:pw@db/qtrain``, ``redis://:pw@redis:6379/0``,
``http://user:pw@gpu1:8000/v1``) becomes ``***``; the user name stays, so a message still says
which account. ``RedactFilter`` applies the same rule to log records: installed on the ``httpx`` and
``httpcore`` loggers (whose request lines carry the URL as given, ``HTTP Request: POST
http://user:pw@...``) and on the worker's handlers, so a password in ``OPENAI_BASE_URL`` or
``DATABASE_URL`` never reaches a terminal or a log file.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

#: ``scheme://user:password@host``: the password (whatever it holds up to the authority's last ``@``;
#: the authority ends at ``/``, whitespace or a double quote) is masked; the user name and host stay.
#: Passwords in URLs must be percent-encoded where they hold ``/``, ``"`` or spaces (RFC 3986).
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)(?P<pw>[^\s/\"]*)(?=@[^\s/@'\"]*(?:[\s/'\"]|$))"
)


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by ``***``."""
    if "://" not in text or "@" not in text:
        return text
    return _USERINFO.sub(lambda m: m["head"] + (MASK if m["pw"] else ""), text)


def redact(url: str) -> str:
    """``url`` (or a comma list of URLs) with any password replaced by ``***``; safe to print or log.

    Never raises, whatever ``url`` holds: text that is not a URL comes back as it was.
    """
    return redact_text(url)


class RedactFilter(logging.Filter):
    """A logging filter that redacts URL passwords in a record's final message (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            exc = record.exc_info[1]
            if exc is not None and redact_text(str(exc)) != str(exc):
                record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactFilter()
#: Loggers of libraries that log request URLs as given (with their userinfo).
URL_LOGGERS = ("httpx", "httpcore")


def install_log_redaction(*handlers: logging.Handler) -> None:
    """Put the redaction filter on the URL-logging libraries' loggers and on ``handlers`` (idempotent).

    A filter on a logger sees only the records logged on it (not its children's), hence the
    handlers too: the worker passes its root handlers, so every record it writes is redacted.
    """
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
