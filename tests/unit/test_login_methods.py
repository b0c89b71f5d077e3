"""The device login's polling, a fresh private_key_jwt assertion on every POST, and tokens
from the credential helper, with a fake IdP and a fake clock."""

from __future__ import annotations

import logging

import pytest

from mcp_oauth2_proxy.adapters.stderr_log import (
    attach_redaction,
    detach_redaction,
    package_logger,
)
from mcp_oauth2_proxy.app.client_assertions import ClientAssertions
from mcp_oauth2_proxy.app.device_login import DeviceLogin
from mcp_oauth2_proxy.app.grants import CommandGrant, build_token_requests
from mcp_oauth2_proxy.app.token_client import TokenClient
from mcp_oauth2_proxy.domain.client_assertion import CLIENT_ASSERTION_TYPE, Algorithm
from mcp_oauth2_proxy.domain.config import (
    DiscoveryConfig,
    OAuth2Config,
    ProxyConfig,
    UpstreamConfig,
)
from mcp_oauth2_proxy.domain.config_merge import LoadedConfig
from mcp_oauth2_proxy.domain.device_flow import DEVICE_CODE_GRANT
from mcp_oauth2_proxy.domain.errors import ConfigError, IdpUnreachableError, OAuthError
from mcp_oauth2_proxy.domain.grant_requirements import check_grant_requirements
from mcp_oauth2_proxy.domain.redaction import Redactor
from mcp_oauth2_proxy.domain.token_exchange import (
    TokenReply,
    TokenRequest,
    TokenRequestBuilder,
)

from ..fakes import FakeClock, FakeEntropy, FakeTokenEndpoint, Sleeps, json_reply, token_reply

pytestmark = pytest.mark.anyio

DEVICE_URL = "https://idp.example/device"
AUTHORIZED = {
    "device_code": "device-code-secret",
    "user_code": "ABCD-EFGH",
    "verification_uri": "https://idp.example/activate",
    "expires_in": 60,
    "interval": 5,
}


def device_login(
    endpoint: FakeTokenEndpoint, clock: FakeClock, **settings: object
) -> tuple[DeviceLogin, Sleeps]:
    oauth = OAuth2Config.model_validate(
        {
            "grant": "device_code",
            "client_id": "cli",
            "token_url": "https://idp.example/token",
            "device_authorization_url": DEVICE_URL,
            "scope": "mcp offline_access",
            **settings,
        }
    )
    client = TokenClient(endpoint, clock, Redactor(), refresh_skew_seconds=30)
    sleeps = Sleeps(clock)
    return DeviceLogin(oauth, client, build_token_requests(oauth), clock, sleep=sleeps), sleeps


def pending(code: str) -> TokenReply:
    return json_reply(400, {"error": code})


async def test_polls_at_the_interval_until_approved() -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(
        json_reply(200, AUTHORIZED),
        pending("authorization_pending"),
        pending("authorization_pending"),
        token_reply("access-1", refresh="refresh-1"),
    )
    login, sleeps = device_login(endpoint, clock)
    issued = await login.run()
    assert issued.access.value == "access-1"
    assert issued.refresh_token == "refresh-1"
    assert sleeps.waits == [5, 5, 5]
    asked = endpoint.forms[0]
    assert asked == {"client_id": "cli", "scope": "mcp offline_access"}
    assert "grant_type" not in asked
    poll = endpoint.forms[1]
    assert poll["grant_type"] == DEVICE_CODE_GRANT
    assert poll["device_code"] == "device-code-secret"


async def test_slow_down_adds_five_seconds_for_good() -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(
        json_reply(200, AUTHORIZED),
        pending("slow_down"),
        pending("authorization_pending"),
        token_reply("access-1"),
    )
    login, sleeps = device_login(endpoint, clock)
    await login.run()
    assert sleeps.waits == [5, 10, 10]


@pytest.mark.parametrize(
    ("answer", "says"),
    [("access_denied", "denied on the verification page"), ("expired_token", "expired")],
)
async def test_denied_or_expired_stops_with_what_to_do(answer: str, says: str) -> None:
    endpoint = FakeTokenEndpoint(json_reply(200, AUTHORIZED), pending(answer))
    login, _ = device_login(endpoint, FakeClock())
    with pytest.raises(OAuthError, match=says) as raised:
        await login.run()
    assert "mcp-oauth2-proxy login" in str(raised.value)


async def test_polling_stops_when_the_code_runs_out() -> None:
    replies = [pending("authorization_pending")] * 20
    endpoint = FakeTokenEndpoint(json_reply(200, AUTHORIZED), *replies)
    login, sleeps = device_login(endpoint, FakeClock())
    with pytest.raises(OAuthError, match="not approved within 60 s"):
        await login.run()
    assert sum(sleeps.waits) <= 60


async def test_a_poll_without_an_answer_is_asked_again_less_often() -> None:
    def unreachable(request: TokenRequest) -> TokenReply:
        raise IdpUnreachableError("could not reach token endpoint https://idp.example/token")

    endpoint = FakeTokenEndpoint(json_reply(200, AUTHORIZED), unreachable, token_reply("access-1"))
    login, sleeps = device_login(endpoint, FakeClock())
    assert (await login.run()).access.value == "access-1"
    assert sleeps.waits == [5, 10]


async def test_without_a_device_endpoint_the_setting_is_named() -> None:
    login, _ = device_login(FakeTokenEndpoint(), FakeClock(), device_authorization_url=None)
    with pytest.raises(ConfigError, match="OAUTH2_DEVICE_AUTHORIZATION_URL"):
        await login.run()


class FixedSigner:
    algorithm: Algorithm = "ES256"

    def sign(self, data: bytes) -> bytes:
        return b"sig:" + data[-4:]


def jwt_client(
    endpoint: FakeTokenEndpoint, redactor: Redactor
) -> tuple[TokenClient, TokenRequestBuilder]:
    oauth = OAuth2Config(
        grant="client_credentials",
        client_id="svc",
        token_url="https://idp.example/token",
        auth_style="private_key_jwt",
        client_assertion_key_file="/keys/svc.pem",
    )
    clock = FakeClock()
    assertions = ClientAssertions(FixedSigner(), clock, FakeEntropy(), "kid-1")
    client = TokenClient(endpoint, clock, redactor, refresh_skew_seconds=30, assertions=assertions)
    return client, build_token_requests(oauth)


async def test_every_post_gets_its_own_assertion_and_no_secret() -> None:
    endpoint = FakeTokenEndpoint(
        json_reply(503, {"error": "temporarily_unavailable"}), token_reply("access-1")
    )
    redactor = Redactor()
    client, builder = jwt_client(endpoint, redactor)
    await client.exchange(builder.client_credentials())
    first, second = endpoint.forms
    for form in (first, second):
        assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
        assert form["client_id"] == "svc"
        assert "client_secret" not in form
    assert first["client_assertion"] != second["client_assertion"]  # a new jti each time
    # Not registered one by one (they would pile up); masked by their shape in any log line.
    assert redactor.redact(f"client_assertion={second['client_assertion']}") == (
        "client_assertion=***"
    )


async def test_private_key_jwt_without_a_signer_names_the_key_setting() -> None:
    oauth = OAuth2Config(
        grant="client_credentials",
        client_id="svc",
        token_url="https://idp.example/token",
        auth_style="private_key_jwt",
    )
    client = TokenClient(FakeTokenEndpoint(), FakeClock(), Redactor(), refresh_skew_seconds=30)
    with pytest.raises(ConfigError, match="OAUTH2_CLIENT_ASSERTION_KEY_FILE"):
        await client.exchange(build_token_requests(oauth).client_credentials())


class PrintingCommand:
    program = "corp-token"

    def __init__(self, stdout: bytes, stderr: bytes = b"") -> None:
        self.printed = (stdout, stderr)

    async def run(self) -> tuple[bytes, bytes]:
        return self.printed


async def test_the_token_command_gives_a_token_renewed_before_it_expires() -> None:
    clock = FakeClock()
    grant = CommandGrant(
        PrintingCommand(b'{"access_token": "t-1", "expires_in": 600}'), clock, Redactor(), 30
    )
    issued = await grant.start()
    assert issued.access.value == "t-1"
    assert issued.access.renew_at == clock.now() + 570
    assert issued.refresh_token is None


async def test_a_token_command_without_expiry_is_kept_until_refused() -> None:
    grant = CommandGrant(PrintingCommand(b"opaque-token\n"), FakeClock(), Redactor(), 30)
    issued = await grant.start()
    assert issued.access.value == "opaque-token"
    assert issued.access.renew_at is None


async def test_the_command_token_is_masked_before_its_stderr_is_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    redactor = Redactor()
    monkeypatch.setattr(package_logger(), "propagate", True)
    caplog.set_level(logging.INFO)
    masking = attach_redaction(redactor)
    try:
        command = PrintingCommand(b"opaque-token-4711\n", b"issued opaque-token-4711 for you\n")
        await CommandGrant(command, FakeClock(), redactor, 30).start()
    finally:
        detach_redaction(masking)
    said = [record.getMessage() for record in caplog.records]
    assert any("token command: issued" in line for line in said)
    assert not any("opaque-token-4711" in line for line in said)


def loaded(**oauth: object) -> LoadedConfig:
    return LoadedConfig(
        ProxyConfig(
            upstream=UpstreamConfig(url="https://mcp.example/mcp"),
            oauth2=OAuth2Config.model_validate(oauth),
            discovery=DiscoveryConfig(enabled=False),
        )
    )


def test_the_token_command_needs_no_oauth_settings() -> None:
    check_grant_requirements(loaded(token_command="corp-token --audience mcp"))
    assert build_token_requests(OAuth2Config(token_command="corp-token")).client_id == ""


def test_private_key_jwt_needs_the_key_file_instead_of_a_secret() -> None:
    with pytest.raises(ConfigError) as raised:
        check_grant_requirements(
            loaded(
                grant="client_credentials",
                client_id="svc",
                token_url="https://idp.example/token",
                auth_style="private_key_jwt",
            )
        )
    message = str(raised.value)
    assert "OAUTH2_CLIENT_ASSERTION_KEY_FILE" in message
    assert "OAUTH2_CLIENT_SECRET" not in message


def test_the_device_grant_needs_its_endpoint_without_discovery() -> None:
    with pytest.raises(ConfigError, match="OAUTH2_DEVICE_AUTHORIZATION_URL"):
        check_grant_requirements(
            loaded(grant="device_code", client_id="cli", token_url="https://idp.example/token")
        )
