"""The credential helper: what a command's output means, and running real little commands
(success, JSON, failure, a slow one, one that does not exist)."""

from __future__ import annotations

import logging
import sys

import anyio
import pytest

from mcp_oauth2_proxy.adapters.stderr_log import package_logger
from mcp_oauth2_proxy.adapters.token_command import SubprocessTokenCommand
from mcp_oauth2_proxy.domain.errors import OAuthError
from mcp_oauth2_proxy.domain.token_command import command_words, read_command_output

from ..event_loops import EVENT_LOOPS

PYTHON = sys.executable


@pytest.fixture(params=EVENT_LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


def script(code: str) -> list[str]:
    return [PYTHON, "-c", code]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("gcloud auth print-access-token", ["gcloud", "auth", "print-access-token"]),
        ('"/opt/My Tools/token" --aud "api one"', ["/opt/My Tools/token", "--aud", "api one"]),
        (["az", "account", "get-access-token"], ["az", "account", "get-access-token"]),
    ],
)
def test_the_setting_becomes_an_argv_never_a_shell_line(
    value: str | list[str], words: list[str]
) -> None:
    assert command_words(value) == words


@pytest.mark.parametrize("value", ["", "   ", 'token "unclosed', []])
def test_a_setting_without_a_command_is_refused(value: str | list[str]) -> None:
    with pytest.raises(ValueError, match=r"no command|quotation"):
        command_words(value)


def test_the_token_alone() -> None:
    assert read_command_output(b"ya29.token-value\n", "helper") == (
        "ya29.token-value",
        None,
        "Bearer",
    )


def test_json_with_expiry_and_type() -> None:
    printed = b'{"access_token": "abc.def", "expires_in": 1800, "token_type": "DPoP"}'
    assert read_command_output(printed, "helper") == ("abc.def", 1800.0, "DPoP")
    assert read_command_output(b'{"access_token": "x1", "expires_in": "60"}', "h")[1] == 60.0
    assert read_command_output(b'{"access_token": "x1", "expires_in": true}', "h")[1] is None


@pytest.mark.parametrize(
    ("printed", "says"),
    [
        (b"", "printed nothing"),
        (b"Please log in first\n", "more than one word"),
        (b'{"token": "abc"}', "without a string access_token"),
        (b"{not json", "without a string access_token"),
    ],
)
def test_output_without_a_token_is_a_clear_error_that_does_not_repeat_it(
    printed: bytes, says: str
) -> None:
    with pytest.raises(OAuthError, match=says) as raised:
        read_command_output(printed, "helper")
    assert "OAUTH2_TOKEN_COMMAND" in str(raised.value)
    if printed:
        assert printed.decode().strip() not in str(raised.value)


@pytest.mark.anyio
async def test_a_command_gives_back_what_it_printed_on_each_stream() -> None:
    command = SubprocessTokenCommand(
        script("import sys; print('using cached credentials', file=sys.stderr); print('tok123')")
    )
    assert await command.run() == (b"tok123\n", b"using cached credentials\n")


@pytest.mark.anyio
async def test_a_background_child_holding_the_pipes_does_not_hold_the_token() -> None:
    code = (
        "import subprocess, sys; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
        "print('tok-early')"
    )
    command = SubprocessTokenCommand(script(code), timeout_seconds=10)
    with anyio.fail_after(8):
        printed, _ = await command.run()
    assert printed == b"tok-early\n"


@pytest.mark.anyio
async def test_a_failing_command_gives_its_status_and_last_words(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(package_logger(), "propagate", True)
    caplog.set_level(logging.INFO)
    command = SubprocessTokenCommand(
        script(
            "import sys; print('ERROR: not logged in, run corp-login', file=sys.stderr); "
            "sys.exit(3)"
        )
    )
    with pytest.raises(OAuthError) as raised:
        await command.run()
    message = str(raised.value)
    assert "failed with exit status 3: ERROR: not logged in, run corp-login" in message
    assert "OAUTH2_TOKEN_COMMAND" in message
    logged = [record.getMessage() for record in caplog.records]
    assert "token command: ERROR: not logged in, run corp-login" in logged


@pytest.mark.anyio
async def test_a_slow_command_is_stopped() -> None:
    command = SubprocessTokenCommand(script("import time; time.sleep(30)"), timeout_seconds=0.5)
    with pytest.raises(OAuthError, match=r"did not finish within 0.5 s and was stopped"):
        await command.run()


@pytest.mark.anyio
async def test_a_command_that_does_not_exist_says_so() -> None:
    command = SubprocessTokenCommand(["/nonexistent/corp-token-helper"])
    with pytest.raises(OAuthError, match="could not run the token command") as raised:
        await command.run()
    assert "full path" in str(raised.value)
