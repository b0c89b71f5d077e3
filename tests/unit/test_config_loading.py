"""load_config: the file named by MCP_PROXY_CONFIG, the environment, then the startup checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_oauth2_proxy.adapters.config_file import JsonConfigFile
from mcp_oauth2_proxy.app.config_loading import check_config, load_config
from mcp_oauth2_proxy.domain.config_merge import Source
from mcp_oauth2_proxy.domain.errors import ConfigError, ConfigProblem, InsecureUrlError
from mcp_oauth2_proxy.domain.ports import ConfigFileReader

UPSTREAM = "https://mcp.example.com/mcp"
TOKEN_URL = "https://idp.example.com/oauth/token"
# Enough for the default grant (authorization_code, interactive) to pass every check.
MINIMAL_ENV = {
    "UPSTREAM_URL": UPSTREAM,
    "OAUTH2_TOKEN_URL": TOKEN_URL,
    "OAUTH2_CLIENT_ID": "proxy-client",
}


class FakeConfigFileReader:
    """Serves documents from a dict and records which paths were read."""

    def __init__(self, documents: dict[str, object] | None = None) -> None:
        self.documents = documents or {}
        self.reads: list[str] = []

    def read(self, path: str) -> object:
        self.reads.append(path)
        if path not in self.documents:
            raise ConfigError(
                [ConfigProblem("MCP_PROXY_CONFIG", "env MCP_PROXY_CONFIG", f"{path} is missing")]
            )
        return self.documents[path]


def fake_reader(documents: dict[str, object] | None = None) -> FakeConfigFileReader:
    reader = FakeConfigFileReader(documents)
    port: ConfigFileReader = reader  # mypy checks the fake against the Protocol
    assert port is reader
    return reader


def problems_by_field(error: ConfigError) -> dict[str, ConfigProblem]:
    """The problems by dotted key: a known setting's field is `key / VARIABLE`."""
    return {problem.field.split(" / ")[0]: problem for problem in error.problems}


# --- with a fake reader ---------------------------------------------------------------------


def test_without_mcp_proxy_config_no_file_is_read() -> None:
    reader = fake_reader()

    loaded = load_config(MINIMAL_ENV, reader)

    assert reader.reads == []
    assert loaded.config.upstream.url == UPSTREAM
    assert loaded.source_of("upstream.url") == Source("env", "UPSTREAM_URL")


def test_empty_mcp_proxy_config_counts_as_unset() -> None:
    reader = fake_reader()

    loaded = load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": ""}, reader)

    assert reader.reads == []
    assert loaded.config.oauth2.client_id == "proxy-client"


def test_the_named_file_is_read_and_merged_under_the_environment() -> None:
    path = "/srv/proxy/config.json"
    reader = fake_reader(
        {
            path: {
                "upstream": {"url": "https://file.example.com/mcp", "timeoutMs": 1234},
                "oauth2": {"tokenUrl": TOKEN_URL, "clientId": "file-client"},
            }
        }
    )

    loaded = load_config(
        {"MCP_PROXY_CONFIG": path, "OAUTH2_CLIENT_ID": "env-client"},
        reader,
    )

    assert reader.reads == [path]
    assert loaded.config.upstream.url == "https://file.example.com/mcp"
    assert loaded.config.upstream.timeout_ms == 1234
    assert loaded.config.oauth2.client_id == "env-client"
    assert loaded.source_of("upstream.timeoutMs") == Source("file", path)
    assert loaded.source_of("oauth2.clientId") == Source("env", "OAUTH2_CLIENT_ID")


def test_file_problems_name_the_path_from_mcp_proxy_config() -> None:
    path = "/srv/proxy/config.json"
    reader = fake_reader({path: {"upstream": {"url": UPSTREAM, "timeoutMs": "300"}}})

    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": path}, reader)

    problem = problems_by_field(caught.value)["upstream.timeoutMs"]
    assert problem.source == f"file {path}"


def test_a_reader_error_propagates_unchanged() -> None:
    reader = fake_reader()

    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": "/nowhere.json"}, reader)

    assert reader.reads == ["/nowhere.json"]
    (problem,) = caught.value.problems
    assert problem.field == "MCP_PROXY_CONFIG"
    assert "/nowhere.json" in problem.message


def test_insecure_urls_are_refused_by_load_config() -> None:
    reader = fake_reader()

    with pytest.raises(InsecureUrlError) as caught:
        load_config({**MINIMAL_ENV, "OAUTH2_TOKEN_URL": "http://idp.example.com/token"}, reader)

    (problem,) = caught.value.problems
    assert problem.field == "oauth2.tokenUrl / OAUTH2_TOKEN_URL"
    assert problem.source == "env OAUTH2_TOKEN_URL"


# --- with the real JsonConfigFile in tmp_path -----------------------------------------------


def _write(path: Path, document: object) -> str:
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def test_json_file_is_loaded(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "proxy.json",
        {
            "upstream": {"url": UPSTREAM},
            "oauth2": {"tokenUrl": TOKEN_URL, "clientId": "c", "scope": "mcp:read"},
        },
    )

    loaded = load_config({"MCP_PROXY_CONFIG": path}, JsonConfigFile())

    assert loaded.config.oauth2.scope == "mcp:read"
    assert loaded.source_of("oauth2.scope") == Source("file", path)
    assert loaded.source_of("oauth2.scope").describe() == f"file {path}"


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.json")

    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": path}, JsonConfigFile())

    (problem,) = caught.value.problems
    assert str(problem) == (
        f"MCP_PROXY_CONFIG: the file {path} does not exist; fix the path or unset MCP_PROXY_CONFIG"
    )


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": str(tmp_path)}, JsonConfigFile())

    (problem,) = caught.value.problems
    assert problem.field == "MCP_PROXY_CONFIG"
    assert str(tmp_path) in problem.message
    assert "directory" in problem.message
    assert "point MCP_PROXY_CONFIG at the JSON file" in problem.message


def test_invalid_json_names_path_and_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.json"
    file.write_text('{\n  "upstream": {\n    "url": "https://x/y",\n  }\n}\n', encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": str(file)}, JsonConfigFile())

    (problem,) = caught.value.problems
    assert problem.field == "MCP_PROXY_CONFIG"
    assert str(file) in problem.message
    assert "not valid JSON" in problem.message
    assert "line 4" in problem.message
    assert str(file) in str(caught.value)


def test_empty_file_is_invalid_json(tmp_path: Path) -> None:
    file = tmp_path / "empty.json"
    file.write_text("", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": str(file)}, JsonConfigFile())

    assert "line 1" in caught.value.problems[0].message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    file = tmp_path / "bom.json"
    text = json.dumps({"upstream": {"url": UPSTREAM}, "oauth2": {"scope": "ünïcode"}})
    file.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))

    loaded = load_config(
        {"MCP_PROXY_CONFIG": str(file), "OAUTH2_TOKEN_URL": TOKEN_URL, "OAUTH2_CLIENT_ID": "c"},
        JsonConfigFile(),
    )

    assert loaded.config.upstream.url == UPSTREAM
    assert loaded.config.oauth2.scope == "ünïcode"


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "latin1.json"
    file.write_bytes('{"oauth2": {"scope": "caf\u00e9"}}'.encode("latin-1"))

    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": str(file)}, JsonConfigFile())

    (problem,) = caught.value.problems
    assert str(file) in problem.message
    assert "is not UTF-8 text; save it as UTF-8" in problem.message


def test_json_file_with_a_non_object_top_level(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.json", [{"upstream": {"url": UPSTREAM}}])

    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": path}, JsonConfigFile())

    (problem,) = caught.value.problems
    assert problem.field == "MCP_PROXY_CONFIG"
    assert problem.source == f"file {path}"


def test_json_config_file_satisfies_the_port() -> None:
    port: ConfigFileReader = JsonConfigFile()

    assert callable(port.read)


# --- grant requirements ---------------------------------------------------------------------


def test_client_id_and_token_url_are_required_without_discovery() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"UPSTREAM_URL": UPSTREAM, "DISCOVERY_ENABLED": "false"}, fake_reader())

    problems = problems_by_field(caught.value)
    assert set(problems) == {"oauth2.clientId", "oauth2.tokenUrl"}
    assert "OAUTH2_CLIENT_ID" in problems["oauth2.clientId"].message
    assert "OAUTH2_TOKEN_URL" in problems["oauth2.tokenUrl"].message


def test_with_discovery_only_the_upstream_url_is_needed() -> None:
    loaded = load_config({"UPSTREAM_URL": UPSTREAM}, fake_reader())
    assert loaded.config.oauth2.client_id is None
    assert loaded.config.oauth2.token_url is None
    with pytest.raises(ConfigError, match="discovery did not find it"):
        check_config(loaded, discovery_pending=False)


def test_client_credentials_without_secret_names_oauth2_client_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "OAUTH2_GRANT": "client_credentials"}, fake_reader())

    (problem,) = caught.value.problems
    assert str(problem) == (
        "oauth2.clientSecret / OAUTH2_CLIENT_SECRET: required for grant client_credentials; "
        'set OAUTH2_CLIENT_SECRET, or "oauth2.clientSecret" in the JSON file MCP_PROXY_CONFIG '
        "names"
    )


def test_client_credentials_with_an_empty_secret_env_is_still_missing() -> None:
    env = {**MINIMAL_ENV, "OAUTH2_GRANT": "client_credentials", "OAUTH2_CLIENT_SECRET": ""}

    with pytest.raises(ConfigError) as caught:
        load_config(env, fake_reader())

    assert set(problems_by_field(caught.value)) == {"oauth2.clientSecret"}


def test_client_credentials_with_secret_passes() -> None:
    env = {**MINIMAL_ENV, "OAUTH2_GRANT": "client_credentials", "OAUTH2_CLIENT_SECRET": "s"}

    loaded = load_config(env, fake_reader())

    assert loaded.config.oauth2.grant == "client_credentials"


def test_password_grant_without_username_and_password_reports_both() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "OAUTH2_GRANT": "password"}, fake_reader())

    problems = problems_by_field(caught.value)
    assert set(problems) == {"oauth2.username", "oauth2.password"}
    assert "OAUTH2_USERNAME" in problems["oauth2.username"].message
    assert "OAUTH2_PASSWORD" in problems["oauth2.password"].message


@pytest.mark.parametrize(
    ("present", "missing"),
    [("OAUTH2_USERNAME", "oauth2.password"), ("OAUTH2_PASSWORD", "oauth2.username")],
)
def test_password_grant_with_one_of_the_two(present: str, missing: str) -> None:
    env = {**MINIMAL_ENV, "OAUTH2_GRANT": "password", present: "value"}

    with pytest.raises(ConfigError) as caught:
        load_config(env, fake_reader())

    assert set(problems_by_field(caught.value)) == {missing}


def test_refresh_token_grant_without_refresh_token() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**MINIMAL_ENV, "OAUTH2_GRANT": "refresh_token"}, fake_reader())

    (problem,) = caught.value.problems
    assert problem.field == "oauth2.refreshToken / OAUTH2_REFRESH_TOKEN"
    assert "OAUTH2_REFRESH_TOKEN" in problem.message


def test_refresh_token_grant_from_the_file_passes() -> None:
    path = "/etc/proxy.json"
    reader = fake_reader({path: {"oauth2": {"grant": "refresh_token", "refreshToken": "rt"}}})

    loaded = load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": path}, reader)

    assert loaded.config.oauth2.grant == "refresh_token"
    assert loaded.source_of("oauth2.refreshToken") == Source("file", path)


@pytest.mark.parametrize("flag", ["false", "0", "no", "off"])
def test_authorization_code_not_interactive_may_rely_on_a_cached_login(flag: str) -> None:
    env = {**MINIMAL_ENV, "OAUTH2_GRANT": "authorization_code", "OAUTH2_INTERACTIVE": flag}
    assert load_config(env, fake_reader()).config.oauth2.interactive is False


@pytest.mark.parametrize(
    "start",
    [{"OAUTH2_REFRESH_TOKEN": "rt"}, {"OAUTH2_AUTHORIZATION_CODE": "code"}],
)
def test_authorization_code_not_interactive_with_a_start_passes(start: dict[str, str]) -> None:
    env = {**MINIMAL_ENV, "OAUTH2_INTERACTIVE": "false", **start}

    loaded = load_config(env, fake_reader())

    assert loaded.config.oauth2.interactive is False


def test_authorization_code_interactive_needs_nothing_more() -> None:
    loaded = load_config(MINIMAL_ENV, fake_reader())

    assert loaded.config.oauth2.grant == "authorization_code"
    assert loaded.config.oauth2.interactive is True


def test_grant_problems_never_echo_secrets() -> None:
    env = {
        **MINIMAL_ENV,
        "OAUTH2_GRANT": "password",
        "OAUTH2_CLIENT_SECRET": "cs-value-3a3a",
        "OAUTH2_USERNAME": "alice",
    }

    with pytest.raises(ConfigError) as caught:
        load_config(env, fake_reader())

    assert "cs-value-3a3a" not in str(caught.value)
    assert set(problems_by_field(caught.value)) == {"oauth2.password"}


def test_a_tilde_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path / "proxy.json", {"upstream": {"url": UPSTREAM}, "log": {"level": "warn"}})

    loaded = load_config({**MINIMAL_ENV, "MCP_PROXY_CONFIG": "~/proxy.json"}, JsonConfigFile())

    assert loaded.config.log.level == "warn"
    assert loaded.source_of("log.level") == Source("file", "~/proxy.json")


def test_url_and_grant_problems_are_reported_together() -> None:
    env = {
        "UPSTREAM_URL": "http://mcp.example/mcp",
        "OAUTH2_GRANT": "client_credentials",
        "OAUTH2_CLIENT_ID": "app",
        "OAUTH2_TOKEN_URL": "https://idp.example/token",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(env, fake_reader())
    fields = problems_by_field(caught.value)
    assert "upstream.url" in fields
    assert "oauth2.clientSecret" in fields
