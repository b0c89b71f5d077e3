"""Shared fixtures: anyio runs on asyncio, the event loop the proxy ships with."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
