"""The event loops the command runs on: uvloop's where it has a build (src/app/cli.py), and
asyncio's own. Test modules of adapters that drive the loop themselves (protocols,
transports, subprocesses) run on each, by overriding anyio's backend fixture:

    @pytest.fixture(params=EVENT_LOOPS)
    def anyio_backend(request: pytest.FixtureRequest) -> object:
        return request.param
"""

from __future__ import annotations

import sys

import pytest

EVENT_LOOPS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(
        ("asyncio", {"use_uvloop": True}),
        id="uvloop",
        marks=pytest.mark.skipif(sys.platform == "win32", reason="uvloop has no Windows build"),
    ),
]
