"""The real loopback listener on 127.0.0.1, driven over TCP by httpx and by raw sockets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import anyio
import httpx
import pytest

from mcp_oauth2_proxy.adapters.callback_listener import LoopbackCallbackListener
from mcp_oauth2_proxy.domain.authorization import Denied, Granted, RedirectTarget
from mcp_oauth2_proxy.domain.errors import ConfigError, OAuthError
from mcp_oauth2_proxy.domain.pkce import LoginSecrets
from mcp_oauth2_proxy.domain.ports import CallbackListener, PendingCallback

pytestmark = pytest.mark.anyio

TARGET = RedirectTarget("127.0.0.1", 0, "/callback")
SECRETS = LoginSecrets.from_random(b"\x03" * 32, b"\x05" * 32)
SECONDS = 5  # bounds every test: a hang is a failure, not a stuck run


@dataclass
class Login:
    pending: PendingCallback
    http: httpx.AsyncClient
    port: int

    def url(self, **params: str) -> str:
        return f"http://127.0.0.1:{self.port}/callback?{urlencode(params)}"

    async def result(self) -> Granted | Denied:
        with anyio.fail_after(SECONDS):
            return await self.pending.result()


@asynccontextmanager
async def login(target: RedirectTarget = TARGET) -> AsyncIterator[Login]:
    listener: CallbackListener = LoopbackCallbackListener()
    with anyio.fail_after(SECONDS):
        async with (
            listener.listening(target, SECRETS) as pending,
            httpx.AsyncClient(trust_env=False, timeout=SECONDS) as http,
        ):
            port = urlsplit(pending.redirect_uri).port
            assert port is not None
            yield Login(pending, http, port)


async def test_redirect_uri_has_the_bound_port() -> None:
    async with login() as session:
        parts = urlsplit(session.pending.redirect_uri)
        assert (parts.scheme, parts.hostname, parts.path) == ("http", "127.0.0.1", "/callback")
        assert session.port != 0
        # Something is listening there.
        response = await session.http.get(f"http://127.0.0.1:{session.port}/")
        assert response.status_code == 404


async def test_correct_callback_is_granted_with_a_page() -> None:
    async with login() as session:
        response = await session.http.get(session.url(code="the-code", state=SECRETS.state))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "<html" in response.text
        assert "close this tab" in response.text
        assert await session.result() == Granted("the-code")


async def test_wrong_host_header_is_refused_and_the_login_keeps_waiting() -> None:
    async with login() as session:
        refused = await session.http.get(
            session.url(code="rebound", state=SECRETS.state),
            headers={"Host": f"evil.example:{session.port}"},
        )
        assert refused.status_code == 421
        # The refused request settled nothing: the real callback is still accepted.
        accepted = await session.http.get(session.url(code="real", state=SECRETS.state))
        assert accepted.status_code == 200
        assert await session.result() == Granted("real")


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/", {"code": "c", "state": SECRETS.state}, 404),
        ("/favicon.ico", {}, 404),
        ("/callback", {"code": "c", "state": "wrong"}, 400),
        ("/callback", {"code": "c"}, 400),
        ("/callback", {"state": SECRETS.state}, 400),
        ("/callback", {"error": "access_denied", "state": "wrong"}, 400),
    ],
)
async def test_refused_requests_leave_the_login_waiting(
    path: str, params: dict[str, str], status: int
) -> None:
    async with login() as session:
        url = f"http://127.0.0.1:{session.port}{path}?{urlencode(params)}"
        refused = await session.http.get(url)
        assert refused.status_code == status
        assert "access_denied" not in refused.text
        accepted = await session.http.get(session.url(code="real", state=SECRETS.state))
        assert accepted.status_code == 200
        assert await session.result() == Granted("real")


async def test_post_to_the_callback_is_refused() -> None:
    async with login() as session:
        response = await session.http.post(
            session.url(code="c", state=SECRETS.state), content=b"x=1"
        )
        assert response.status_code == 405
        accepted = await session.http.get(session.url(code="real", state=SECRETS.state))
        assert accepted.status_code == 200
        assert await session.result() == Granted("real")


async def test_idp_error_is_denied_and_shown_html_escaped() -> None:
    description = "<script>alert('x')</script> & more"
    async with login() as session:
        response = await session.http.get(
            session.url(error="access_denied", error_description=description, state=SECRETS.state)
        )
        assert response.status_code == 400
        assert "The IdP refused the login (access_denied: " in response.text
        assert "If you cancelled, run mcp-oauth2-proxy login again" in response.text
        assert f"register {session.pending.redirect_uri} with the IdP" in response.text
        assert "&lt;script&gt;" in response.text
        assert "<script" not in response.text
        assert "&amp; more" in response.text
        assert await session.result() == Denied("access_denied", description)


async def test_second_valid_callback_gets_409_and_the_first_result_is_kept() -> None:
    async with login() as session:
        first = await session.http.get(session.url(code="first", state=SECRETS.state))
        second = await session.http.get(session.url(code="second", state=SECRETS.state))
        assert first.status_code == 200
        assert second.status_code == 409
        assert await session.result() == Granted("first")


async def test_denial_after_a_grant_does_not_replace_it() -> None:
    async with login() as session:
        await session.http.get(session.url(code="first", state=SECRETS.state))
        late = await session.http.get(session.url(error="access_denied", state=SECRETS.state))
        assert late.status_code == 409
        assert await session.result() == Granted("first")


@pytest.mark.parametrize("success", [True, False])
async def test_pages_are_not_cached_and_carry_a_csp(success: bool) -> None:
    async with login() as session:
        url = session.url(code="c", state=SECRETS.state) if success else session.url(code="c")
        response = await session.http.get(url)
        assert response.status_code == (200 if success else 400)
        assert response.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


async def enter_and_leave(target: RedirectTarget) -> None:
    async with LoopbackCallbackListener().listening(target, SECRETS):
        pass


async def test_busy_port_is_a_config_error_naming_the_setting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match="OAUTH2_CALLBACK_PORT") as caught:
            await enter_and_leave(RedirectTarget("127.0.0.1", port, "/callback"))
    assert str(port) in str(caught.value)
    assert "already in use" in str(caught.value)
    assert "register the new redirect URI with your IdP" in str(caught.value)


async def test_busy_port_of_a_configured_redirect_uri_names_that_setting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        configured = f"http://127.0.0.1:{port}/cb"
        with pytest.raises(ConfigError) as caught:
            await enter_and_leave(RedirectTarget("127.0.0.1", port, "/cb", configured))
    (problem,) = caught.value.problems
    assert problem.field == "oauth2.redirectUri / OAUTH2_REDIRECT_URI"
    assert problem.message.endswith(
        "choose another port in oauth2.redirectUri / OAUTH2_REDIRECT_URI and register it with "
        "your IdP"
    )
    assert "OAUTH2_CALLBACK_PORT" not in str(caught.value)


async def test_listener_is_closed_after_the_block() -> None:
    async with login() as session:
        port = session.port
        response = await session.http.get(session.url(code="c", state=SECRETS.state))
        assert response.status_code == 200
    with pytest.raises(OSError):  # noqa: PT011 - refused is all a closed port can say
        await anyio.connect_tcp("127.0.0.1", port)


async def test_listener_is_closed_when_the_block_raises() -> None:
    port = 0
    try:
        async with login() as session:
            port = session.port
            raise RuntimeError("owner failed")
    except* RuntimeError:
        pass
    assert port != 0
    with pytest.raises(OSError):  # noqa: PT011
        await anyio.connect_tcp("127.0.0.1", port)


async def time_out_inside_the_login() -> None:
    async with login() as session:
        with anyio.move_on_after(0):
            await session.pending.result()
        # What InteractiveLogin.run raises here when callbackTimeoutSeconds runs out.
        raise OAuthError("the browser login was not finished within 0 s")


async def test_an_error_raised_in_the_block_comes_out_unwrapped() -> None:
    with pytest.raises(OAuthError, match="not finished"):
        await time_out_inside_the_login()


async def test_silent_connections_do_not_block_the_callback() -> None:
    async with login() as session:
        # One client connects and hangs up at once, another connects and says nothing.
        async with await anyio.connect_tcp("127.0.0.1", session.port):
            pass
        async with await anyio.connect_tcp("127.0.0.1", session.port):
            response = await session.http.get(session.url(code="real", state=SECRETS.state))
            assert response.status_code == 200
            assert await session.result() == Granted("real")


async def test_half_a_request_then_hang_up_does_not_break_the_listener() -> None:
    async with login() as session:
        async with await anyio.connect_tcp("127.0.0.1", session.port) as raw:
            await raw.send(b"GET /callback?code=x HTTP/1.1\r\nHo")
        response = await session.http.get(session.url(code="real", state=SECRETS.state))
        assert response.status_code == 200
        assert await session.result() == Granted("real")


async def send_raw(port: int, payload: bytes) -> None:
    """Send `payload`, read whatever comes back until the listener hangs up."""
    async with await anyio.connect_tcp("127.0.0.1", port) as raw:
        await raw.send(payload)
        await raw.send_eof()
        try:
            while await raw.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00\x01\x02 garbage\r\n\r\n", id="garbage"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="no-host-header"),
        pytest.param(b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="head"),
        pytest.param(b"GET /" + b"a" * (70 * 1024) + b" HTTP/1.1\r\n\r\n", id="oversized"),
    ],
)
async def test_malformed_requests_do_not_break_the_listener(payload: bytes) -> None:
    async with login() as session:
        await send_raw(session.port, payload)
        response = await session.http.get(session.url(code="real", state=SECRETS.state))
        assert response.status_code == 200
        assert await session.result() == Granted("real")
