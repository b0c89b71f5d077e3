"""Logging: key=value lines on stderr, and redaction of every secret the process knows.

stdout is the JSON-RPC channel, so the handler writes to stderr only. Format (logfmt, one
line per event, easy to read and to grep):

    time=2026-11-30T12:00:00.123Z level=info msg="obtained an access token" grant=client_credentials

Redaction is a filter on the package logger, not on the handler, so records are clean before
any handler sees them — also a handler a Python harness adds.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Final

from ..domain.config import LogLevel
from ..domain.redaction import Redactor

LOGGER_NAME: Final = "mcp_oauth2_proxy"
TRACE: Final = 5
LEVELS: Final[dict[LogLevel, int]] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}
_NAMES: Final = {number: name for name, number in LEVELS.items()}
_STANDARD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}

logging.addLevelName(TRACE, "TRACE")


class RedactingFilter(logging.Filter):
    """Renders each record's message and fields once, with every known secret masked."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self._redactor.redact
        record.msg = redact(record.getMessage())
        record.args = None
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD_ATTRIBUTES:
                record.__dict__[name] = redact(str(value))
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            # Redacted even when another filter rendered it first (with other secrets).
            record.exc_text = redact(record.exc_text)
        return True


class LogfmtFormatter(logging.Formatter):
    """One `key=value` line per record; values with spaces or quotes are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        level = _NAMES.get(record.levelno, record.levelname.lower())
        parts = [
            f"time={stamp}.{millis:03d}Z",
            f"level={level}",
            f"msg={_quote(record.getMessage())}",
        ]
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES:
                parts.append(f"{name}={_quote(str(value))}")
        if record.exc_text:
            parts.append(f"error={_quote(record.exc_text)}")
        return " ".join(parts)


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(char in text for char in ' ="\\\n\r\t'):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def package_logger() -> logging.Logger:
    """The logger every module of the proxy writes to."""
    return logging.getLogger(LOGGER_NAME)


def notice_logger() -> logging.Logger:
    """For what the user must see whatever LOG_LEVEL says (the browser-login URL).

    Its own level is fixed, and a record is level-checked only where it is logged; it then
    reaches the package logger's handlers, so it lands on stderr in the same format.
    """
    notices = logging.getLogger(f"{LOGGER_NAME}.notice")
    notices.setLevel(logging.INFO)
    return notices


def attach_redaction(redactor: Redactor) -> RedactingFilter:
    """Mask `redactor`'s secrets in every record of the package's loggers; returns the filter
    so its owner can detach it. (A filter on a logger does not see records that propagate
    from its children, so the notice logger gets it too.)"""
    redacting = RedactingFilter(redactor)
    for logger in (package_logger(), notice_logger()):
        logger.addFilter(redacting)
    return redacting


def detach_redaction(redacting: RedactingFilter) -> None:
    for logger in (package_logger(), notice_logger()):
        logger.removeFilter(redacting)


def log_to_stderr(level: LogLevel, stream: IO[str] | None = None) -> None:
    """Send the package's records at `level` and above to stderr as logfmt lines.

    Called by the CLI; a Python harness that wants the proxy's logs elsewhere adds its own
    handler to `package_logger()` instead.
    """
    logger = package_logger()
    for handler in list(logger.handlers):
        if isinstance(handler.formatter, LogfmtFormatter):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
