"""Shared fixtures: anyio runs on asyncio (tests/event_loops.py runs the modules that drive
the event loop themselves on uvloop too, which the command uses where it can); and no test
ever touches the real user's configuration directory (token cache, registrations)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_oauth2_proxy.adapters.stderr_log import LOGGER_NAME, package_logger


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def private_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the per-OS config directories (and so the default token cache) at a temporary
    directory, for this process and every process a test starts."""
    home = tmp_path_factory.mktemp("config-home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("XDG_CONFIG_HOME", "APPDATA", "LOCALAPPDATA"):
            patch.setenv(name, str(home))
        # Nor the machine's keychain: keyring's backend that stores nothing, unless a test
        # sets its own (tests/unit/test_cache_keys.py).
        patch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
        yield home


@pytest.fixture
def caplog_warnings(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    # The CLI's log setup stops propagation; caplog listens on the root logger.
    monkeypatch.setattr(package_logger(), "propagate", True)
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    return caplog


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == LOGGER_NAME and record.levelno == logging.WARNING
    ]
