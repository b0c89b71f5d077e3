"""The insecure-URL guard: https anywhere, http only to loopback, nothing else ever."""

from __future__ import annotations

import pytest

from mcp_oauth2_proxy.domain.config_merge import LoadedConfig, merge_config
from mcp_oauth2_proxy.domain.errors import ConfigError, InsecureUrlError
from mcp_oauth2_proxy.domain.url_guard import (
    GUARDED_SETTINGS,
    check_config_urls,
    check_url,
    is_loopback_host,
    url_problem,
)

ALWAYS_FINE = [
    "https://example.com/mcp",
    "https://10.0.0.1/token",
    "https://192.168.1.1:8443/",
    "https://[::2]/mcp",
    "HTTPS://EXAMPLE.COM/mcp",
]

LOOPBACK_HTTP = [
    "http://127.0.0.1/mcp",
    "http://127.0.0.1:8080/mcp",
    "http://127.5.6.7/mcp",
    "http://[::1]/mcp",
    "http://[::1]:3000/mcp",
    "http://localhost/mcp",
    "http://LOCALHOST./mcp",
    "HTTP://localhost:9000/callback",
]

OFF_LOOPBACK_HTTP = [
    "http://example.com/mcp",
    "http://10.0.0.1/token",
    "http://192.168.1.1/token",
    "http://[::2]/mcp",
    "http://127.0.0.1.evil.com/mcp",
    "http://localhost.evil.com/mcp",
    "http://0.0.0.0/mcp",
    "http://localhost@evil.com/mcp",
    "http://foo.localhost/mcp",
]

OTHER_SCHEMES = [
    "ftp://127.0.0.1/file",
    "ftp://example.com/file",
    "file:///etc/passwd",
    "ws://127.0.0.1/socket",
    "ws://example.com/socket",
    "wss://example.com/socket",
    "javascript:alert(1)",
    "//example.com/no-scheme",
]


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("url", ALWAYS_FINE + LOOPBACK_HTTP)
def test_https_anywhere_and_http_on_loopback_pass(url: str, allow: bool) -> None:
    assert url_problem(url, allow_insecure_http=allow) is None


@pytest.mark.parametrize("url", OFF_LOOPBACK_HTTP)
def test_http_off_loopback_is_refused_by_default(url: str) -> None:
    problem = url_problem(url, allow_insecure_http=False)

    assert problem is not None
    assert "http://" in problem
    assert "ALLOW_INSECURE_HTTP" in problem


@pytest.mark.parametrize("url", OFF_LOOPBACK_HTTP)
def test_http_off_loopback_passes_with_the_override(url: str) -> None:
    assert url_problem(url, allow_insecure_http=True) is None


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("url", OTHER_SCHEMES)
def test_other_schemes_are_refused_even_with_the_override(url: str, allow: bool) -> None:
    problem = url_problem(url, allow_insecure_http=allow)

    assert problem is not None
    assert "https://" in problem


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("a.b.localhost", False),
        ("", False),
        ("::2", False),
        ("128.0.0.1", False),
        ("localhost.evil.com", False),
        ("evil-localhost", False),
        ("127.0.0.1.evil.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def _loaded(env: dict[str, str], file_document: object = None) -> LoadedConfig:
    return merge_config(env, file_document, "/etc/proxy.json" if file_document else None)


def test_check_config_urls_names_setting_override_and_env_source() -> None:
    loaded = _loaded({"UPSTREAM_URL": "http://example.com/mcp"})

    with pytest.raises(InsecureUrlError) as caught:
        check_config_urls(loaded)

    (problem,) = caught.value.problems
    assert problem.field == "upstream.url / UPSTREAM_URL"
    assert problem.source == "env UPSTREAM_URL"
    assert "http://example.com/mcp" in problem.message
    assert "ALLOW_INSECURE_HTTP" in problem.message
    text = str(caught.value)
    for needle in ("upstream.url", "UPSTREAM_URL", "env UPSTREAM_URL", "ALLOW_INSECURE_HTTP"):
        assert needle in text


def test_check_config_urls_names_file_source_and_key() -> None:
    loaded = _loaded(
        {},
        {
            "upstream": {"url": "https://mcp.example.com/mcp"},
            "oauth2": {"tokenUrl": "http://10.0.0.1/token"},
        },
    )

    with pytest.raises(InsecureUrlError) as caught:
        check_config_urls(loaded)

    (problem,) = caught.value.problems
    assert problem.field == "oauth2.tokenUrl / OAUTH2_TOKEN_URL"
    assert problem.source == "file /etc/proxy.json"
    assert "security.allowInsecureHttp / ALLOW_INSECURE_HTTP=true" in problem.message


def test_check_config_urls_reports_every_guarded_setting_at_once() -> None:
    loaded = _loaded(
        {
            "UPSTREAM_URL": "http://example.com/mcp",
            "OAUTH2_TOKEN_URL": "http://example.com/token",
            "OAUTH2_AUTHORIZATION_URL": "http://example.com/authorize",
            "OAUTH2_DEVICE_AUTHORIZATION_URL": "http://example.com/device",
            "OAUTH2_REDIRECT_URI": "http://example.com/callback",
        }
    )

    with pytest.raises(InsecureUrlError) as caught:
        check_config_urls(loaded)

    fields = [problem.field.split(" / ")[0] for problem in caught.value.problems]
    assert sorted(fields) == sorted(GUARDED_SETTINGS)
    assert isinstance(caught.value, ConfigError)


def test_check_config_urls_accepts_https_and_loopback() -> None:
    loaded = _loaded(
        {
            "UPSTREAM_URL": "http://127.0.0.1:8080/mcp",
            "OAUTH2_TOKEN_URL": "https://idp.example.com/token",
            "OAUTH2_REDIRECT_URI": "http://localhost:53682/callback",
        }
    )

    check_config_urls(loaded)

    assert loaded.config.upstream.url == "http://127.0.0.1:8080/mcp"


@pytest.mark.parametrize("flag_source", ["env", "file"])
def test_allow_insecure_http_permits_http_off_loopback(flag_source: str) -> None:
    env = {"UPSTREAM_URL": "http://example.com/mcp"}
    document: dict[str, object] | None = None
    if flag_source == "env":
        env["ALLOW_INSECURE_HTTP"] = "true"
    else:
        document = {"security": {"allowInsecureHttp": True}}
    loaded = _loaded(env, document)

    check_config_urls(loaded)

    assert loaded.config.security.allow_insecure_http is True


def test_allow_insecure_http_does_not_permit_other_schemes() -> None:
    loaded = _loaded({"UPSTREAM_URL": "ws://example.com/mcp", "ALLOW_INSECURE_HTTP": "yes"})

    with pytest.raises(InsecureUrlError) as caught:
        check_config_urls(loaded)

    (problem,) = caught.value.problems
    assert problem.field == "upstream.url / UPSTREAM_URL"
    assert "'ws'" in problem.message


def test_check_url_names_the_setting_both_ways() -> None:
    with pytest.raises(InsecureUrlError) as caught:
        check_url(
            "http://idp.example.com/token",
            "oauth2.tokenUrl",
            "discovered from https://mcp.example.com/.well-known/oauth-protected-resource",
            allow_insecure_http=False,
        )

    (problem,) = caught.value.problems
    assert problem.field == "oauth2.tokenUrl / OAUTH2_TOKEN_URL"
    assert problem.source.startswith("discovered from")
    assert "ALLOW_INSECURE_HTTP" in problem.message


def test_check_url_keeps_an_unknown_label_and_passes_good_urls() -> None:
    check_url("https://idp.example.com/token", "oauth2.tokenUrl", "x", allow_insecure_http=False)

    with pytest.raises(InsecureUrlError) as caught:
        check_url("file:///x", "metadata.jwks_uri", "discovery", allow_insecure_http=True)

    assert caught.value.problems[0].field == "metadata.jwks_uri"
