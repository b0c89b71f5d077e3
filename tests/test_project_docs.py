"""The docs that promise something checkable: the settings table, the README's commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic.alias_generators import to_snake
from pydantic_core import PydanticUndefined

from mcp_oauth2_proxy.app.cli import build_parser
from mcp_oauth2_proxy.domain.config import ProxyConfig
from mcp_oauth2_proxy.domain.settings import SETTINGS, Setting

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(
    r"^\| `(?P<env>[A-Z0-9_]+)` \| `(?P<path>[A-Za-z0-9.]+)` "
    r"\| (?P<kind>[a-z ]+) \| (?P<default>[^|]+) \|"
)


def documented_rows() -> list[tuple[str, str, str, str]]:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            rows.append(
                (match["env"], match["path"], match["kind"].strip(), match["default"].strip())
            )
    return rows


def rendered_default(setting: Setting) -> str:
    section = ProxyConfig.model_fields[setting.section].annotation
    assert isinstance(section, type)
    field = section.model_fields[to_snake(setting.key)]
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None or value is PydanticUndefined:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def test_configuration_table_matches_the_domain_table() -> None:
    expected = [(s.env, s.path, s.kind.value, rendered_default(s)) for s in SETTINGS]
    assert documented_rows() == expected


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.env)
def test_help_lists_every_variable(setting: Setting) -> None:
    assert setting.env in build_parser().format_help()


def test_ci_runs_the_readmes_test_command() -> None:
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (ROOT / "README.md").read_text()
    assert ci_command in readme.split("```")[1]
    assert "pytest" in ci_command


def test_every_test_named_in_the_reliability_page_exists() -> None:
    """docs/reliability.md backs each fault with a test by name; a renamed or deleted test
    must not leave a row that promises what nothing checks."""
    names = set(re.findall(r"`(test_[a-z0-9_]+)`", (ROOT / "docs" / "reliability.md").read_text()))
    defined = {
        match
        for path in (ROOT / "tests").rglob("test_*.py")
        for match in re.findall(r"^(?:async )?def (test_[a-z0-9_]+)", path.read_text(), re.M)
    }
    assert names, "the page names no tests"
    assert sorted(names - defined) == []
