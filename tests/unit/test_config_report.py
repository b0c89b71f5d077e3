"""The `config` report: every setting once, in the table's order, with its source; secrets
only as "set", whatever their value."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.config_merge import LoadedConfig, Source, merge_config
from mcp_oauth2_proxy.domain.config_report import config_report, render_report
from mcp_oauth2_proxy.domain.settings import SETTINGS, Kind

BASE = {
    "UPSTREAM_URL": "https://mcp.example.com/mcp",
    "OAUTH2_GRANT": "client_credentials",
    "OAUTH2_CLIENT_ID": "app",
    "OAUTH2_TOKEN_URL": "https://idp.example.com/token",
}
SECRETS = [s for s in SETTINGS if s.kind is Kind.SECRET]


def test_every_setting_appears_once_in_the_tables_order() -> None:
    lines = config_report(merge_config(BASE))
    assert [line.path for line in lines] == [s.path for s in SETTINGS]
    assert [line.env for line in lines] == [s.env for s in SETTINGS]


def test_values_and_sources_read_as_a_user_would_write_them() -> None:
    loaded = merge_config(
        {**BASE, "UPSTREAM_TIMEOUT_MS": "5000"},
        {"oauth2": {"extraParams": {"prompt": "login"}}},
        "/etc/proxy.json",
    )
    rows = {line.path: line for line in config_report(loaded)}
    assert (rows["upstream.timeoutMs"].value, rows["upstream.timeoutMs"].source) == (
        "5000",
        "env UPSTREAM_TIMEOUT_MS",
    )
    assert rows["oauth2.extraParams"].value == '{"prompt": "login"}'
    assert rows["oauth2.extraParams"].source == "file /etc/proxy.json"
    assert (rows["oauth2.scope"].value, rows["oauth2.scope"].source) == ("not set", "default")
    assert rows["discovery.enabled"].value == "true"


def test_a_discovered_value_names_where_it_was_found() -> None:
    loaded = merge_config(BASE)
    discovered = LoadedConfig(
        loaded.config,
        {**loaded.sources, "oauth2.tokenUrl": Source("discovery", "https://idp.example.com")},
    )
    rows = {line.path: line for line in config_report(discovered)}
    assert rows["oauth2.tokenUrl"].source == "discovered from https://idp.example.com"


@given(st.text(alphabet=st.characters(codec="ascii", min_codepoint=33), min_size=4))
def test_no_secret_value_is_ever_shown(tail: str) -> None:
    secret = "Zq-" + tail  # distinct from every other value of the report
    env = {**BASE, **{s.env: secret for s in SECRETS}}
    lines = config_report(merge_config(env))
    for line in lines:
        if line.path in {s.path for s in SECRETS}:
            assert line.value == "set"
    text = render_report(lines) + json.dumps([line.as_dict() for line in lines])
    assert secret not in text
