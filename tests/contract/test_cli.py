"""The installed `mcp-oauth2-proxy` command, run as an MCP host would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_oauth2_proxy import __version__

from .local_idp import local_idp

COMMAND = str(Path(sys.executable).with_name("mcp-oauth2-proxy"))
# Bounds against a hung process, not speed assertions: the benchmark measures speed.
BOUND_SECONDS = 30


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not _is_ours(key)}
    return subprocess.run(
        [COMMAND, *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=BOUND_SECONDS,
        check=False,
    )


def _is_ours(name: str) -> bool:
    return name.startswith(("OAUTH2_", "UPSTREAM_", "MCP_PROXY_")) or name in {
        "LOG_LEVEL",
        "DISCOVERY_ENABLED",
        "ALLOW_INSECURE_HTTP",
    }


def client_credentials_env(token_url: str, secret: str) -> dict[str, str]:
    return {
        "UPSTREAM_URL": "http://127.0.0.1:9/mcp",
        "OAUTH2_GRANT": "client_credentials",
        "OAUTH2_CLIENT_ID": "app",
        "OAUTH2_CLIENT_SECRET": secret,
        "OAUTH2_TOKEN_URL": token_url,
    }


def test_version_and_help() -> None:
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"mcp-oauth2-proxy {__version__}"
    helped = run("--help")
    assert helped.returncode == 0
    assert "OAUTH2_CLIENT_SECRET" in helped.stdout
    assert "MCP_PROXY_CONFIG" in helped.stdout


def test_python_dash_m_is_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcp_oauth2_proxy", "--version"],
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS,
        check=False,
    )
    assert result.stdout.strip() == f"mcp-oauth2-proxy {__version__}"


def test_a_wrong_secret_fails_fast_with_the_idps_words_and_nothing_on_stdout() -> None:
    with local_idp() as idp:
        result = run(env=client_credentials_env(idp.url, "wrong-secret"))
    assert result.returncode == 3
    assert result.stdout == ""
    assert "invalid_client: Client authentication failed" in result.stderr
    assert "OAUTH2_CLIENT_SECRET" in result.stderr
    assert "wrong-secret" not in result.stderr
    assert idp.forms[0]["client_secret"] == "wrong-secret"


def test_the_right_secret_gets_a_token_that_never_reaches_the_logs() -> None:
    with local_idp() as idp:
        result = run(env={**client_credentials_env(idp.url, "right-secret"), "LOG_LEVEL": "trace"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "obtained an access token" in result.stderr
    assert "local-access-token" not in result.stderr
    assert "right-secret" not in result.stderr


def test_an_unreachable_idp_names_the_url_and_what_to_check() -> None:
    result = run(env=client_credentials_env("http://127.0.0.1:9/token", "s"))
    assert result.returncode == 3
    assert "could not reach token endpoint http://127.0.0.1:9/token" in result.stderr


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        (
            {},
            [
                "upstream.url / UPSTREAM_URL: required but not set; set UPSTREAM_URL, or "
                '"upstream.url" in the JSON file MCP_PROXY_CONFIG names'
            ],
        ),
        (
            {"UPSTREAM_URL": "https://m.example/mcp", "OAUTH2_CALLBACK_PORT": "eighty"},
            [
                "oauth2.callbackPort / OAUTH2_CALLBACK_PORT (env OAUTH2_CALLBACK_PORT)",
                "expected an integer",
            ],
        ),
        (
            {
                "UPSTREAM_URL": "http://m.example/mcp",
                "OAUTH2_CLIENT_ID": "a",
                "OAUTH2_TOKEN_URL": "https://i.example/t",
            },
            ["upstream.url / UPSTREAM_URL", "ALLOW_INSECURE_HTTP"],
        ),
        (
            {"MCP_PROXY_CONFIG": "/nonexistent/proxy.json"},
            [
                "MCP_PROXY_CONFIG: the file /nonexistent/proxy.json does not exist; fix the path "
                "or unset MCP_PROXY_CONFIG"
            ],
        ),
    ],
)
def test_configuration_errors_exit_2_and_name_the_field(
    env: dict[str, str], fragments: list[str]
) -> None:
    result = run(env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr


def test_a_config_file_error_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "proxy.json"
    path.write_text(json.dumps({"upstream": {"url": "https://m.example/mcp", "timeoutMs": "5"}}))
    result = run(env={"MCP_PROXY_CONFIG": str(path)})
    assert result.returncode == 2
    assert (
        f"upstream.timeoutMs / UPSTREAM_TIMEOUT_MS (file {path}): expected an integer, got "
        '"5"; write it without quotes: 5' in result.stderr
    )


def refresh_token_env(cache_dir: Path) -> dict[str, str]:
    return {
        "UPSTREAM_URL": "http://127.0.0.1:9/mcp",
        "OAUTH2_GRANT": "refresh_token",
        "OAUTH2_CLIENT_ID": "app",
        "OAUTH2_TOKEN_URL": "http://127.0.0.1:9/token",
        "OAUTH2_REFRESH_TOKEN": "rt-cli-test-Zq83",
        "OAUTH2_TOKEN_CACHE_DIR": str(cache_dir),
        "DISCOVERY_ENABLED": "false",
    }


def test_an_unusable_token_cache_directory_is_a_configuration_error(tmp_path: Path) -> None:
    """Not a traceback: the setting, where it came from, why, and what to do (exit 2)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    cache_dir = blocker / "cache"
    result = run(env=refresh_token_env(cache_dir))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "oauth2.tokenCacheDir / OAUTH2_TOKEN_CACHE_DIR (env OAUTH2_TOKEN_CACHE_DIR): cannot use "
        f"the token cache directory {cache_dir}: Not a directory; set it to a directory you "
        "can write, or fix its permissions" in result.stderr
    )
    assert "rt-cli-test-Zq83" not in result.stderr


def test_status_without_a_login_for_grant_refresh_token_asks_for_a_new_token(
    tmp_path: Path,
) -> None:
    status = run("status", env=refresh_token_env(tmp_path / "cache"))
    assert status.returncode == 1, status.stderr
    assert status.stdout.startswith("Not logged in: no cached login for client app at ")
    assert status.stdout.strip().endswith("Set a new oauth2.refreshToken / OAUTH2_REFRESH_TOKEN.")
    assert "mcp-oauth2-proxy login" not in status.stdout


def test_a_failure_message_is_redacted_too() -> None:
    """The IdP echoes the secret in its error text; the fatal line still hides it."""
    with local_idp(echo=True) as idp:
        env = client_credentials_env(idp.url, "wrong-secret-456")
        result = run(env={**env, "LOG_LEVEL": "debug"})
    assert result.returncode == 3
    assert "Client authentication failed (got ***)" in result.stderr
    assert "wrong-secret-456" not in result.stderr


def test_the_demo_shows_the_whole_path_working() -> None:
    result = run("demo", env={"OAUTH2_SCOPE": "must-not-leak-into-the-demo"})
    assert result.returncode == 0, result.stderr
    for step in (
        "HTTP 401 without a token",
        "discovery",
        "issued an access token to the proxy (client_credentials)",
        "tools/list",
        "add(2, 3) = 5",
        "lift-off",
    ):
        assert step in result.stdout
    assert "\N{BALLOT X}" not in result.stdout


@pytest.mark.parametrize(("consent", "outcome"), [("approve", 0), ("deny", 1)])
def test_the_interactive_demo_logs_in_through_the_browser(consent: str, outcome: int) -> None:
    browser = f"{sys.executable} {Path(__file__).with_name('consenting_browser.py')} %s"
    result = run("demo", "--interactive", env={"BROWSER": browser, "CONSENT": consent})
    assert result.returncode == outcome, result.stdout + result.stderr
    if consent == "approve":
        assert "approved; the IdP sent the browser back to the proxy" in result.stdout
        assert "(authorization_code with PKCE)" in result.stdout
        assert "add(2, 3) = 5" in result.stdout
    else:
        assert "denied in the browser" in result.stdout
        assert "access_denied" in result.stderr


def test_status_and_logout_for_a_grant_that_caches_nothing() -> None:
    env = client_credentials_env("https://idp.example/token", "s")
    status = run("status", env=env)
    assert (status.returncode, "keeps no cached login" in status.stdout) == (1, True)
    logout = run("logout", env=env)
    assert (logout.returncode, "nothing to forget" in logout.stdout) == (0, True)


def test_config_shows_every_value_and_its_source_and_never_a_secret(tmp_path: Path) -> None:
    secret = "file-secret-Zq81"
    config_file = tmp_path / "proxy.json"
    config_file.write_text(
        json.dumps({"oauth2": {"clientSecret": secret, "scope": "mcp:read"}}), encoding="utf-8"
    )
    env = {
        **client_credentials_env("http://127.0.0.1:9/token", "env-secret-Zq82"),
        "MCP_PROXY_CONFIG": str(config_file),
        "DISCOVERY_ENABLED": "false",
    }
    del env["OAUTH2_CLIENT_SECRET"]
    shown = run("config", env=env)
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines()}
    assert lines["oauth2.scope"].endswith(f"(file {config_file})")
    assert "mcp:read" in lines["oauth2.scope"]
    assert lines["oauth2.clientSecret"].split()[1] == "set"
    assert lines["oauth2.clientId"].endswith("(env OAUTH2_CLIENT_ID)")
    assert lines["upstream.timeoutMs"].endswith("(default)")
    assert secret not in shown.stdout + shown.stderr

    as_json = run("config", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    rows = {row["key"]: row for row in json.loads(as_json.stdout)}
    assert rows["oauth2.clientSecret"] == {
        "key": "oauth2.clientSecret",
        "env": "OAUTH2_CLIENT_SECRET",
        "value": "set",
        "source": f"file {config_file}",
    }
    assert secret not in as_json.stdout


def test_config_with_a_failing_discovery_still_shows_the_rest_and_says_why() -> None:
    env = client_credentials_env("http://127.0.0.1:9/token", "s")
    del env["OAUTH2_TOKEN_URL"]  # discovery must find it, from an upstream that is not there
    shown = run("config", env=env)
    assert shown.returncode == 3
    values = {line.split()[0]: line.split()[1:3] for line in shown.stdout.splitlines()}
    assert values["upstream.url"][0] == "http://127.0.0.1:9/mcp"
    assert values["oauth2.tokenUrl"] == ["not", "set"]
    assert "discovery could not reach http://127.0.0.1:9/mcp" in shown.stderr
    assert "DISCOVERY_ENABLED=false" in shown.stderr
    assert "discovery failed, so the values it would fill in are missing" in shown.stderr
