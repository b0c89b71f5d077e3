"""The logging adapter: logfmt lines on the given stream, levels, and redaction on the
package logger before any handler sees a record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_oauth2_proxy.adapters.stderr_log import (
    TRACE,
    attach_redaction,
    detach_redaction,
    log_to_stderr,
    notice_logger,
    package_logger,
)
from mcp_oauth2_proxy.domain.redaction import MIN_SECRET_LENGTH, Redactor


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    logger = package_logger()
    saved = (list(logger.handlers), logger.level, logger.propagate)
    buffer = io.StringIO()
    yield buffer
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_logfmt_line_with_fields(stream: io.StringIO) -> None:
    log_to_stderr("info", stream)
    package_logger().info("obtained a token", extra={"grant": "client_credentials", "n": 3})
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("time=")
    assert ' level=info msg="obtained a token" grant=client_credentials n=3' in line


def test_values_with_spaces_quotes_and_newlines_stay_on_one_line(stream: io.StringIO) -> None:
    log_to_stderr("info", stream)
    package_logger().warning('two\nlines and "quotes"', extra={"path": "a b"})
    (line,) = stream.getvalue().splitlines()
    assert 'level=warn msg="two\\nlines and \\"quotes\\""' in line
    assert 'path="a b"' in line


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [
        ("trace", [TRACE, logging.DEBUG], []),
        ("debug", [logging.DEBUG, logging.INFO], [TRACE]),
        ("warn", [logging.WARNING, logging.ERROR], [logging.INFO]),
        ("fatal", [logging.CRITICAL], [logging.ERROR]),
    ],
)
def test_levels(stream: io.StringIO, level: str, shown: list[int], hidden: list[int]) -> None:
    log_to_stderr(level, stream)  # type: ignore[arg-type]
    for number in shown + hidden:
        package_logger().log(number, "event-%d", number)
    text = stream.getvalue()
    for number in shown:
        assert f"event-{number}" in text
    for number in hidden:
        assert f"event-{number}" not in text


def test_fatal_and_trace_names(stream: io.StringIO) -> None:
    log_to_stderr("trace", stream)
    package_logger().critical("x")
    package_logger().log(TRACE, "y")
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == [
        "level=fatal",
        "level=trace",
    ]


def test_redaction_reaches_message_args_fields_and_tracebacks(stream: io.StringIO) -> None:
    log_to_stderr("debug", stream)
    redactor = Redactor()
    redactor.register("the-secret-value")
    redacting = attach_redaction(redactor)
    try:
        try:
            raise ValueError("failed with the-secret-value")
        except ValueError:
            package_logger().exception(
                "sent %s", "the-secret-value", extra={"header": "Bearer the-secret-value"}
            )
    finally:
        detach_redaction(redacting)
    text = stream.getvalue()
    assert "the-secret-value" not in text
    assert "ValueError" in text


def test_a_second_install_replaces_the_first_handler(stream: io.StringIO) -> None:
    log_to_stderr("info", stream)
    log_to_stderr("info", stream)
    package_logger().info("once")
    assert stream.getvalue().count("once") == 1


def test_notices_show_whatever_the_level_and_are_redacted(stream: io.StringIO) -> None:
    log_to_stderr("fatal", stream)
    redactor = Redactor()
    redactor.register("secret-in-notice")
    redacting = attach_redaction(redactor)
    try:
        notice_logger().warning("open https://idp.example/authorize secret-in-notice")
        package_logger().warning("an ordinary warning")
    finally:
        detach_redaction(redacting)
    text = stream.getvalue()
    assert "open https://idp.example/authorize ***" in text
    assert "ordinary" not in text


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    secret=st.text(min_size=MIN_SECRET_LENGTH, max_size=30).filter(lambda s: s.strip() == s),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_no_registered_secret_survives_into_a_log_line_whatever_surrounds_it(
    stream: io.StringIO, secret: str, before: str, after: str
) -> None:
    """Through the real formatter: logfmt quoting and escaping must not let a secret out in
    the message, an argument or a field, nor in their escaped spellings."""
    stream.seek(0)
    stream.truncate()
    log_to_stderr("debug", stream)
    redactor = Redactor()
    redactor.register(secret)
    redacting = attach_redaction(redactor)
    try:
        text = before + secret + after
        package_logger().warning(text.replace("%", "%%") + " %s", text, extra={"field": text})
    finally:
        detach_redaction(redacting)
    line = stream.getvalue()
    assert line.count("\n") == 1  # one record, one line
    for spelling in (secret, json.dumps(secret)[1:-1]):
        assert spelling not in line
