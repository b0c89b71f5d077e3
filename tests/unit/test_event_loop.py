"""Which event loop the proxy runs on: uvloop's where it is installed (it carries more calls
per CPU second), asyncio's own elsewhere."""

from __future__ import annotations

import sys

import pytest

from mcp_oauth2_proxy.app import cli


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop has no Windows build")
def test_the_proxy_runs_on_uvloop_where_it_is_installed() -> None:
    import uvloop

    assert cli._event_loop() == {"loop_factory": uvloop.new_event_loop}


def test_without_uvloop_the_proxy_runs_on_asyncio_s_own_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # importing it now raises ImportError
    assert cli._event_loop() == {}
