"""`mcp-oauth2-proxy doctor` through the installed command, against a working local setup
and deliberately broken ones: each ✗ must say what is wrong and name the fix."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from .environment import clean_env
from .local_idp import LocalIdp, local_idp
from .upstream import Upstream, running_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.contract]

COMMAND = str(Path(sys.executable).with_name("mcp-oauth2-proxy"))
BOUND_SECONDS = 60  # against a hung process, not a speed assertion


def credentials(idp: LocalIdp, upstream_url: str, **extra: str) -> dict[str, str]:
    settings = {
        "UPSTREAM_URL": upstream_url,
        "OAUTH2_GRANT": "client_credentials",
        "OAUTH2_CLIENT_ID": idp.client_id,
        "OAUTH2_CLIENT_SECRET": idp.client_secret,
        "OAUTH2_TOKEN_URL": idp.url,
    }
    return clean_env(**{**settings, **extra})


class Report:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        document = json.loads(stdout)
        self.ok: bool = document["ok"]
        self.checks: dict[str, dict[str, Any]] = {c["check"]: c for c in document["checks"]}

    def outcome(self, name: str) -> str:
        return str(self.checks[name]["outcome"])

    def fix(self, name: str) -> str:
        return str(self.checks[name]["fix"])

    def text(self, name: str) -> str:
        check = self.checks[name]
        return " ".join([check["detail"], *check["facts"], check["fix"] or ""])


async def doctor(env: dict[str, str]) -> Report:
    with anyio.fail_after(BOUND_SECONDS):
        done = await anyio.run_process([COMMAND, "doctor", "--json"], env=env, check=False)
    return Report(done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def idp() -> Iterator[LocalIdp]:
    with local_idp() as served:
        yield served


@pytest.fixture
async def upstream(idp: LocalIdp) -> AsyncIterator[Upstream]:
    async with running_upstream(idp) as served:
        yield served


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_working_setup_passes_every_step_and_shows_no_secret(
    upstream: Upstream, idp: LocalIdp
) -> None:
    report = await doctor(credentials(idp, upstream.url))
    assert report.returncode == 0, report.stdout + report.stderr
    assert report.ok
    for step in ("configuration", "security", "token", "clock", "upstream", "server stream"):
        assert report.outcome(step) == "passed", report.checks[step]
    assert report.outcome("discovery") == "skipped"
    assert report.outcome("callback port") == "skipped"
    assert "answered initialize with the token" in report.text("upstream")
    assert "OAUTH2_CLIENT_SECRET = set" in report.text("configuration")
    for secret in (idp.client_secret, *idp.issued):
        assert secret not in report.stdout
        assert secret not in report.stderr
    assert any(seen.method == "DELETE" for seen in upstream.seen)


async def test_the_human_form_marks_each_step() -> None:
    env = clean_env(UPSTREAM_URL="http://mcp.example.com/mcp", OAUTH2_CLIENT_ID="app")
    with anyio.fail_after(BOUND_SECONDS):
        done = await anyio.run_process([COMMAND, "doctor"], env=env, check=False)
    shown = done.stdout.decode()
    assert done.returncode == 1
    assert "\N{BALLOT X} security" in shown
    assert "fix: switch it to https://" in shown
    assert "1 problem found" in shown


async def test_a_wrong_secret_fails_the_token_step_naming_the_secret_setting(
    upstream: Upstream, idp: LocalIdp
) -> None:
    report = await doctor(credentials(idp, upstream.url, OAUTH2_CLIENT_SECRET="wrong-secret"))
    assert report.returncode == 1
    assert report.outcome("token") == "failed"
    assert "invalid_client" in report.checks["token"]["detail"]
    assert "OAUTH2_CLIENT_SECRET" in report.fix("token")
    assert "wrong-secret" not in report.stdout


async def test_no_discovery_at_the_server_names_the_settings_to_set_instead(
    idp: LocalIdp, tmp_path: Path
) -> None:
    # The token endpoint stands in for an MCP server that publishes no metadata.
    env = clean_env(
        UPSTREAM_URL=idp.url,
        OAUTH2_TOKEN_CACHE_DIR=str(tmp_path),
        OAUTH2_CALLBACK_PORT=str(closed_port()),
    )
    report = await doctor(env)
    assert report.outcome("discovery") == "failed"
    assert "DISCOVERY_ENABLED=false" in report.fix("discovery")
    assert "OAUTH2_TOKEN_URL" in report.fix("discovery")
    # What was tried, URL by URL, is in the message itself.
    assert f"POST {idp.url} (no token)" in report.checks["discovery"]["detail"]
    assert report.outcome("token") == "skipped"


async def test_an_insecure_url_fails_before_any_request() -> None:
    env = clean_env(
        UPSTREAM_URL="http://mcp.example.com/mcp",
        OAUTH2_GRANT="client_credentials",
        OAUTH2_CLIENT_ID="app",
        OAUTH2_CLIENT_SECRET="s3cret-value",
        OAUTH2_TOKEN_URL="https://idp.example.com/token",
    )
    report = await doctor(env)
    assert report.returncode == 1
    assert report.outcome("configuration") == "passed"
    assert report.outcome("security") == "failed"
    assert "ALLOW_INSECURE_HTTP" in report.fix("security")
    assert "http://mcp.example.com/mcp" in report.text("security")
    assert report.outcome("upstream") == "skipped"


def browser_login(port: int, cache: Path) -> dict[str, str]:
    """The browser login's settings, with nothing cached and nothing reachable."""
    return clean_env(
        UPSTREAM_URL="http://127.0.0.1:9/mcp",
        OAUTH2_CLIENT_ID="app",
        OAUTH2_TOKEN_URL="http://127.0.0.1:9/token",
        OAUTH2_AUTHORIZATION_URL="http://127.0.0.1:9/authorize",
        OAUTH2_CALLBACK_PORT=str(port),
        OAUTH2_TOKEN_CACHE_DIR=str(cache),
    )


async def test_a_busy_callback_port_and_no_cached_login_each_name_their_fix(
    tmp_path: Path,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        report = await doctor(browser_login(port, tmp_path))
    assert report.outcome("callback port") == "failed"
    assert f"127.0.0.1:{port} is in use" in report.checks["callback port"]["detail"]
    assert "OAUTH2_CALLBACK_PORT" in report.fix("callback port")
    assert report.outcome("token") == "failed"
    assert "mcp-oauth2-proxy login" in report.fix("token")


async def test_a_free_callback_port_shows_the_redirect_uri_to_register(tmp_path: Path) -> None:
    port = closed_port()
    report = await doctor(browser_login(port, tmp_path))
    assert report.outcome("callback port") == "passed"
    assert f"http://127.0.0.1:{port}/callback" in report.text("callback port")


async def test_an_upstream_that_is_down_names_the_url_setting(idp: LocalIdp) -> None:
    report = await doctor(credentials(idp, f"http://127.0.0.1:{closed_port()}/mcp"))
    assert report.returncode == 1
    assert report.outcome("token") == "passed"
    assert report.outcome("upstream") == "failed"
    assert "could not reach the upstream" in report.checks["upstream"]["detail"]
    assert "UPSTREAM_URL" in report.fix("upstream")


async def test_a_skewed_clock_is_found_from_the_idps_date_header() -> None:
    with local_idp(clock_offset_seconds=-600) as idp:
        report = await doctor(credentials(idp, f"http://127.0.0.1:{closed_port()}/mcp"))
    assert report.outcome("clock") == "failed"
    # The Date header counts whole seconds: 600 to 601 s, never near the 60 s allowed.
    assert re.search(r"10 min [01] s ahead of the IdP's", report.checks["clock"]["detail"])
    assert "NTP" in report.fix("clock")


@pytest.fixture
def company_ca() -> trustme.CA:
    return trustme.CA(organization_name="Example Corp TLS inspection")


@pytest.fixture
def tls_files(company_ca: trustme.CA, tmp_path: Path) -> tuple[str, str, str]:
    """(the CA bundle, the server's certificate chain, its key) for 127.0.0.1."""
    issued = company_ca.issue_cert("127.0.0.1")
    files = (tmp_path / "ca.pem", tmp_path / "chain.pem", tmp_path / "key.pem")
    company_ca.cert_pem.write_to_path(str(files[0]))
    with files[1].open("wb") as chain:
        for blob in issued.cert_chain_pems:
            chain.write(blob.bytes())
    issued.private_key_pem.write_to_path(str(files[2]))
    return str(files[0]), str(files[1]), str(files[2])


async def test_an_untrusted_certificate_names_the_trust_settings_and_ssl_cert_file_fixes_it(
    idp: LocalIdp, tls_files: tuple[str, str, str]
) -> None:
    bundle, chain, key = tls_files
    async with running_upstream(idp, tls=(chain, key)) as upstream:
        untrusted = await doctor(credentials(idp, upstream.url))
        trusted = await doctor(credentials(idp, upstream.url, SSL_CERT_FILE=bundle))
    assert untrusted.outcome("upstream") == "failed"
    assert "TLS certificate was not trusted" in untrusted.checks["upstream"]["detail"]
    assert "SSL_CERT_FILE" in untrusted.text("upstream")
    assert trusted.returncode == 0, trusted.stdout
    assert trusted.outcome("upstream") == "passed"
