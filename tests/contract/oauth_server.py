"""A real authorization server on 127.0.0.1, built from Authlib (the OAuth library many
Python IdPs are made of): the device authorization grant of RFC 8628 with a verification
page a scripted user approves or denies, refresh tokens, and client credentials with
private_key_jwt client authentication (RFC 7523) that checks signature, audience, expiry
and that no `jti` is used twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc8628 import (
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    DeviceCredentialDict,
)
from flask import Flask, request
from joserfc.jwk import Key
from werkzeug.serving import make_server

DEVICE_CLIENT = "device-client"
JWT_CLIENT = "jwt-client"


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    grant_types: tuple[str, ...]
    auth_method: str
    public_key: Key | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class StoredRefreshToken(TokenMixin):  # type: ignore[misc]
    client_id: str
    scope: str

    def check_client(self, client: Client) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 3600

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False


@dataclass
class OAuthServer:
    """What the tests read: the URLs, and what the server saw and decided."""

    issuer: str = ""
    clients: dict[str, Client] = field(default_factory=dict)
    devices: dict[str, DeviceCredentialDict] = field(default_factory=dict)
    decisions: dict[str, bool] = field(default_factory=dict)
    polls: list[str] = field(default_factory=list)
    slow_down_once: bool = False
    issued: list[dict[str, Any]] = field(default_factory=list)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    seen_jtis: set[str] = field(default_factory=set)
    token_forms: list[dict[str, str]] = field(default_factory=list)

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def device_url(self) -> str:
        return f"{self.issuer}/device_authorization"

    def decide(self, user_code: str, approve: bool) -> None:
        """The user at the verification page, on another device."""
        self.decisions[user_code] = approve


@contextmanager
def oauth_server(
    *, device_interval: int = 1, jwt_public_key: Key | None = None
) -> Iterator[OAuthServer]:
    state = OAuthServer()
    state.clients[DEVICE_CLIENT] = Client(
        DEVICE_CLIENT, (DeviceCodeGrant.GRANT_TYPE, "refresh_token"), "none"
    )
    state.clients[JWT_CLIENT] = Client(
        JWT_CLIENT,
        ("client_credentials",),
        JWTBearerClientAssertion.CLIENT_AUTH_METHOD,
        jwt_public_key,
    )
    app = Flask("oauth-test-server")
    app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True

    def save_token(token: dict[str, Any], oauth_request: Any) -> None:
        state.issued.append(token)
        if "refresh_token" in token:
            state.refresh_tokens[token["refresh_token"]] = oauth_request.client.get_client_id()

    server = AuthorizationServer(app, query_client=state.clients.get, save_token=save_token)

    class Devices(DeviceAuthorizationEndpoint):  # type: ignore[misc]
        CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["none"]
        INTERVAL = device_interval
        EXPIRES_IN = 120

        def get_verification_uri(self) -> str:
            return f"{state.issuer}/verify"

        def save_device_credential(
            self, client_id: str, scope: str | None, data: dict[str, Any]
        ) -> None:
            state.devices[data["device_code"]] = DeviceCredentialDict(
                client_id=client_id,
                scope=scope,
                expires_at=time.time() + self.EXPIRES_IN,
                **data,
            )

    class DevicePolls(DeviceCodeGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["none"]

        def query_device_credential(self, device_code: str) -> DeviceCredentialDict | None:
            state.polls.append(device_code)
            return state.devices.get(device_code)

        def query_user_grant(self, user_code: str) -> tuple[dict[str, str], bool] | None:
            if user_code not in state.decisions:
                return None
            return {"sub": "alice"}, state.decisions[user_code]

        def should_slow_down(self, credential: DeviceCredentialDict) -> bool:
            if state.slow_down_once:
                state.slow_down_once = False
                return True
            return False

    class Refreshes(grants.RefreshTokenGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["none"]
        INCLUDE_NEW_REFRESH_TOKEN = True

        def authenticate_refresh_token(self, refresh_token: str) -> StoredRefreshToken | None:
            client_id = state.refresh_tokens.pop(refresh_token, None)
            return StoredRefreshToken(client_id, "") if client_id else None

        def authenticate_user(self, credential: StoredRefreshToken) -> dict[str, str]:
            return {"sub": "alice"}

        def revoke_old_credential(self, credential: StoredRefreshToken) -> None:
            """Popped when it was used."""

    class ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
            JWTBearerClientAssertion.CLIENT_AUTH_METHOD
        ]

    class Assertions(JWTBearerClientAssertion):  # type: ignore[misc]
        def get_audiences(self) -> list[str]:
            return [state.token_url]

        def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
            if jti in state.seen_jtis:
                return False
            state.seen_jtis.add(jti)
            return True

        def resolve_client_public_key(self, client: Client) -> Key | None:
            return client.public_key

    server.register_endpoint(Devices)
    server.register_grant(DevicePolls)
    server.register_grant(Refreshes)
    server.register_grant(ClientCredentials)
    server.register_client_auth_method(Assertions.CLIENT_AUTH_METHOD, Assertions(leeway=0))

    @app.post("/device_authorization")
    def device_authorization() -> Any:
        return server.create_endpoint_response("device_authorization")

    @app.post("/token")
    def token() -> Any:
        state.token_forms.append(dict(request.form))
        return server.create_token_response()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log in the test output
    listener = make_server("127.0.0.1", 0, app, threaded=True)
    state.issuer = f"http://127.0.0.1:{listener.server_port}"
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        listener.shutdown()
        thread.join(timeout=5)
