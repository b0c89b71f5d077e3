"""The installed command with the ways to log in beyond the original's: the device login
against Authlib's RFC 8628 server with a scripted user, private_key_jwt against Authlib's
RFC 7523 verification, and the credential helper in front of the real MCP upstream."""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import mcp_types as types
import pytest
from anyio.streams.text import TextReceiveStream
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from mcp import Client, StdioServerParameters

from mcp_oauth2_proxy.adapters.assertion_signer import PemAssertionSigner
from mcp_oauth2_proxy.domain.client_assertion import (
    CLIENT_ASSERTION_TYPE,
    compact_jws,
    signing_input,
)

from .environment import clean_env
from .local_idp import local_idp
from .oauth_server import DEVICE_CLIENT, JWT_CLIENT, OAuthServer, oauth_server
from .upstream import running_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.contract]

COMMAND = str(Path(sys.executable).with_name("mcp-oauth2-proxy"))
BOUND_SECONDS = 60  # against a hung process, not a speed assertion


@pytest.fixture
def server() -> Iterator[OAuthServer]:
    with oauth_server() as served:
        yield served


def device_env(server: OAuthServer, cache: Path) -> dict[str, str]:
    return clean_env(
        UPSTREAM_URL="http://127.0.0.1:9/mcp",
        OAUTH2_GRANT="device_code",
        OAUTH2_CLIENT_ID=DEVICE_CLIENT,
        OAUTH2_TOKEN_URL=server.token_url,
        OAUTH2_DEVICE_AUTHORIZATION_URL=server.device_url,
        OAUTH2_TOKEN_CACHE_DIR=str(cache),
        DISCOVERY_ENABLED="false",
    )


async def login_approving(env: dict[str, str], server: OAuthServer, approve: bool) -> str:
    """Run `login`, read the code it shows on stderr, decide as the user, return stderr."""
    shown = ""
    with anyio.fail_after(BOUND_SECONDS):
        async with await anyio.open_process([COMMAND, "login"], env=env) as process:
            assert process.stderr is not None
            async for text in TextReceiveStream(process.stderr):
                shown += text
                code = re.search(r"enter the code (\S+?)(;|\s|\()", shown)
                if code is not None:
                    server.decide(code.group(1), approve)
                    break
            async for text in TextReceiveStream(process.stderr):
                shown += text
            await process.wait()
            shown += f"\nexit status {process.returncode}"
    return shown


async def test_the_device_login_shows_a_code_polls_and_caches_the_login(
    server: OAuthServer, tmp_path: Path
) -> None:
    env = device_env(server, tmp_path)
    shown = await login_approving(env, server, approve=True)
    assert "exit status 0" in shown, shown
    assert f"open {server.issuer}/verify on any device" in shown
    assert len(server.polls) >= 1
    with anyio.fail_after(BOUND_SECONDS):
        status = await anyio.run_process([COMMAND, "status"], env=env, check=False)
    assert status.returncode == 0, status.stdout
    assert b"Logged in" in status.stdout
    device_code = next(iter(server.devices))
    assert device_code not in shown  # the device code is a secret; the user code is not
    with anyio.fail_after(BOUND_SECONDS):
        doctor = await anyio.run_process([COMMAND, "doctor", "--json"], env=env, check=False)
    checks = {check["check"]: check for check in json.loads(doctor.stdout)["checks"]}
    assert checks["token"]["outcome"] == "passed", checks["token"]
    assert "from the cached login, refreshed" in checks["token"]["detail"]
    assert any("its key in a key file beside it" in fact for fact in checks["token"]["facts"])


async def test_a_denied_device_login_says_so(server: OAuthServer, tmp_path: Path) -> None:
    shown = await login_approving(device_env(server, tmp_path), server, approve=False)
    assert "exit status 3" in shown
    assert "denied on the verification page" in shown


def es256_key(tmp_path: Path) -> tuple[str, ECKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "client.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return str(path), ECKey.import_key(public)


async def test_private_key_jwt_is_accepted_and_a_replay_or_an_old_assertion_refused(
    tmp_path: Path,
) -> None:
    key_file, public = es256_key(tmp_path)
    with oauth_server(jwt_public_key=public) as server:
        env = clean_env(
            UPSTREAM_URL="http://127.0.0.1:9/mcp",
            OAUTH2_GRANT="client_credentials",
            OAUTH2_CLIENT_ID=JWT_CLIENT,
            OAUTH2_TOKEN_URL=server.token_url,
            OAUTH2_AUTH_STYLE="private_key_jwt",
            OAUTH2_CLIENT_ASSERTION_KEY_FILE=key_file,
            OAUTH2_CLIENT_ASSERTION_ALG="ES256",
            OAUTH2_CLIENT_ASSERTION_KID="proxy-key-1",
        )
        with anyio.fail_after(BOUND_SECONDS):
            # The proxy fetches its token at start, then stdin's end stops it.
            ran = await anyio.run_process([COMMAND], env=env, check=False)
        assert ran.returncode == 0, ran.stderr.decode()
        assert len(server.issued) == 1
        (sent,) = server.token_forms
        assert sent["client_assertion_type"] == CLIENT_ASSERTION_TYPE
        assert "client_secret" not in sent
        async with httpx.AsyncClient() as client:
            replayed = await client.post(server.token_url, data=sent)
            signer = PemAssertionSigner(key_file, "ES256")
            old = signing_input(
                client_id=JWT_CLIENT,
                audience=server.token_url,
                now=time.time() - 3600,
                jti=secrets.token_hex(8),
                algorithm="ES256",
                key_id=None,
            )
            expired = await client.post(
                server.token_url,
                data={**sent, "client_assertion": compact_jws(old, signer.sign(old))},
            )
    assert replayed.status_code == 400
    assert replayed.json()["error_description"] == "JWT ID is used before."
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_client"
    assert sent["client_assertion"] not in ran.stderr.decode()


HELPER = """
import sys
from pathlib import Path
print("corp-token: using the cached session", file=sys.stderr)
print(Path(sys.argv[1]).read_text().strip())
"""


async def test_the_token_command_feeds_the_upstream_and_runs_again_after_a_401(
    tmp_path: Path,
) -> None:
    helper = tmp_path / "corp token.py"
    helper.write_text(HELPER)
    current = tmp_path / "current-token"
    current.write_text("helper-token-1")
    with local_idp() as idp:
        idp.issued.append("helper-token-1")
        async with running_upstream(idp) as upstream:
            env = clean_env(
                UPSTREAM_URL=upstream.url,
                OAUTH2_TOKEN_COMMAND=f'{sys.executable} "{helper}" {current}',
                LOG_LEVEL="info",
            )
            params = StdioServerParameters(command=COMMAND, env=env)
            with anyio.fail_after(BOUND_SECONDS):
                async with Client(params) as session:
                    first = await session.call_tool("echo", {"text": "one"})
                    # The company CLI renews; the server stops accepting the old token.
                    idp.issued.append("helper-token-2")
                    current.write_text("helper-token-2")
                    idp.revoked.add("helper-token-1")
                    second = await session.call_tool("echo", {"text": "two"})
    texts = [
        item.text
        for result in (first, second)
        for item in result.content
        if isinstance(item, types.TextContent)
    ]
    assert texts == ["one", "two"]
    calls = upstream.posts("tools/call")
    assert calls[0].headers["authorization"] == "Bearer helper-token-1"
    assert calls[-1].headers["authorization"] == "Bearer helper-token-2"
