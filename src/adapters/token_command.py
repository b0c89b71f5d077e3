"""The TokenCommand port over a child process: the user's credential helper, run as an argv
(never through a shell) in its own process group, its stdout and stderr collected."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import anyio
from anyio.abc import ByteReceiveStream

from ..domain.errors import OAuthError
from ..domain.token_command import COMMAND_SETTING_NAMES, MAX_OUTPUT_BYTES
from .stderr_log import package_logger

log = package_logger()

DEFAULT_TIMEOUT_SECONDS = 60.0
READ_GRACE_SECONDS = 0.2


class SubprocessTokenCommand:
    """Runs `words` with this process's environment (a company CLI needs its own login) and
    no stdin. It is given `timeout_seconds`, then killed: a helper that waits for input a
    user cannot give must not hang every tool call."""

    def __init__(self, words: list[str], *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS):
        self._words = words
        self._timeout = timeout_seconds

    @property
    def program(self) -> str:
        return self._words[0]

    async def run(self) -> tuple[bytes, bytes]:
        try:
            process = await anyio.open_process(
                self._words,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            raise OAuthError(
                f"could not run the token command {self.program}: "
                f"{error.strerror or error}; check {COMMAND_SETTING_NAMES} (a full path "
                "helps when the MCP client starts the proxy with a short PATH)"
            ) from None
        stdout = bytearray()
        stderr = bytearray()
        async with process:
            with anyio.move_on_after(self._timeout) as waiting:
                async with anyio.create_task_group() as readers:
                    assert process.stdout is not None
                    assert process.stderr is not None
                    readers.start_soon(_collect, process.stdout, stdout)
                    readers.start_soon(_collect, process.stderr, stderr)
                    await process.wait()
                    # A background child the helper left behind may hold the pipes open:
                    # what the helper printed before it exited is all there is to read.
                    await anyio.sleep(READ_GRACE_SECONDS)
                    readers.cancel_scope.cancel()
            if waiting.cancelled_caught:
                _stop_group(process.pid)
                with anyio.CancelScope(shield=True):
                    await process.wait()
        if waiting.cancelled_caught or process.returncode != 0:
            # No token came, so nothing of it can be in these lines: they say what went wrong.
            for line in stderr.decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.info("token command: %s", line.rstrip(), extra={"command": self.program})
        if waiting.cancelled_caught:
            raise OAuthError(
                f"the token command {self.program} did not finish within {self._timeout:g} s "
                f"and was stopped; it must print a token without waiting for input; check "
                f"{COMMAND_SETTING_NAMES}"
            )
        if process.returncode != 0:
            said = _last_line(stderr)
            raise OAuthError(
                f"the token command {self.program} failed with exit status "
                f"{process.returncode}{f': {said}' if said else ''}; run it yourself to see why, "
                f"and check {COMMAND_SETTING_NAMES}"
            )
        return bytes(stdout), bytes(stderr)


def _stop_group(pid: int) -> None:
    """Kill the helper and whatever it started (it leads its own process group)."""
    if sys.platform == "win32":
        os.kill(pid, signal.SIGTERM)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


async def _collect(stream: ByteReceiveStream, into: bytearray) -> None:
    """Everything the stream gives, up to MAX_OUTPUT_BYTES (the rest is read and dropped, so
    a chatty helper cannot block on a full pipe)."""
    async for chunk in stream:
        room = MAX_OUTPUT_BYTES - len(into)
        if room > 0:
            into += chunk[:room]


def _last_line(stderr: bytearray) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    said = [line for line in lines if line]
    return said[-1][:300] if said else ""
