"""The project's own gates, run by the README's test command so CI cannot skip them:
ruff, mypy --strict, the import-linter layer contracts, and the wheel's layout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOUND_SECONDS = 600


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "src", "tests", "bench"),
        ("ruff", "format", "--check", "src", "tests", "bench"),
        ("mypy",),
    ],
    ids=["ruff", "ruff-format", "mypy-strict"],
)
def test_static_check_is_clean(command: tuple[str, ...]) -> None:
    result = tool(*command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_layer_contracts_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_wheel_installs_the_package_not_top_level_modules(tmp_path: Path) -> None:
    result = tool("pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("mcp_oauth2_proxy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mcp_oauth2_proxy/domain/__init__.py" in names
    assert "mcp_oauth2_proxy/py.typed" in names
    tops = {name.split("/")[0] for name in names}
    assert not tops & {"domain", "app", "adapters", "src", "tests"}
