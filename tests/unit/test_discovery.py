"""Discovery as plain functions: the Bearer challenge, canonical resource URIs, the order of
metadata URLs, what is accepted from a metadata document, the scope to ask for, the RFC 9207
`iss` check, step-up and the resource indicator an IdP refuses."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.authorization import (
    Denied,
    Granted,
    Refused,
    judge_callback,
)
from mcp_oauth2_proxy.domain.client_registration import read_registration, registration_request
from mcp_oauth2_proxy.domain.discovery import (
    DiscoveryError,
    ResourceMetadata,
    ServerMetadata,
    authorization_server_metadata_urls,
    bearer_challenge,
    canonical_resource,
    choose_scope,
    read_resource_metadata,
    read_server_metadata,
    resource_covers,
    resource_metadata_urls,
    unsafe_endpoints,
    widen_scope,
)
from mcp_oauth2_proxy.domain.errors import OAuthError, TokenEndpointError
from mcp_oauth2_proxy.domain.pkce import LoginSecrets
from mcp_oauth2_proxy.domain.retry_policy import step_up_scope
from mcp_oauth2_proxy.domain.token_exchange import (
    TokenRequest,
    refuses_resource,
    without_resource,
)

UPSTREAM = "https://mcp.example/mcp"
ISSUER = "https://idp.example"
PRM = "https://mcp.example/.well-known/oauth-protected-resource"

# --- bearer_challenge -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, {}),
        ("", {}),
        ('Basic realm="api"', {}),
        ("Bearer", {}),
        (
            'Bearer resource_metadata="https://mcp.example/prm"',
            {"resource_metadata": "https://mcp.example/prm"},
        ),
        (
            'Bearer error="insufficient_scope", scope="files:read files:write"',
            {"error": "insufficient_scope", "scope": "files:read files:write"},
        ),
        # Quoted values keep their commas; escapes are undone (RFC 9110 §5.6.4).
        ('Bearer scope="a, b,c", realm="x"', {"scope": "a, b,c", "realm": "x"}),
        (
            r'Bearer error_description="say \"no\", twice \\ backslash", error="invalid_token"',
            {"error_description": 'say "no", twice \\ backslash', "error": "invalid_token"},
        ),
        ('Bearer realm=""', {"realm": ""}),
        # Unquoted tokens; scheme and parameter names are case-insensitive.
        ("bearer ERROR=invalid_token, Scope=read", {"error": "invalid_token", "scope": "read"}),
        ('BEARER Resource_Metadata = "https://m/prm"', {"resource_metadata": "https://m/prm"}),
        # A repeated parameter: the first one counts.
        ('Bearer scope="first", scope="second"', {"scope": "first"}),
        # Several schemes in one header (or several headers joined with a comma): only the
        # Bearer challenge's parameters, not those of a challenge before it.
        (
            'Basic realm="legacy", Bearer error="insufficient_scope", scope="admin"',
            {"error": "insufficient_scope", "scope": "admin"},
        ),
        (
            'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple", '
            'Bearer resource_metadata="https://mcp.example/prm"',
            {"resource_metadata": "https://mcp.example/prm"},
        ),
        (
            'DPoP algs="ES256 PS256", Bearer realm="mcp"',
            {"realm": "mcp"},
        ),
    ],
)
def test_bearer_challenge_parameters(header: str | None, expected: dict[str, str]) -> None:
    assert bearer_challenge(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="mcp", DPoP algs="ES256", error="insufficient_scope", scope="admin"',
            {"realm": "mcp"},
        ),
        ('Basic realm="bearer tokens", charset="UTF-8"', {}),
    ],
)
def test_bearer_challenge_ignores_the_parameters_of_other_schemes(
    header: str, expected: dict[str, str]
) -> None:
    assert bearer_challenge(header) == expected


def test_a_bearer_challenge_inside_another_word_is_not_one() -> None:
    assert bearer_challenge('NotBearer scope="x"') == {}


# --- canonical_resource and resource_covers ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://mcp.example/mcp", "https://mcp.example/mcp"),
        ("HTTPS://MCP.Example.COM/mcp", "https://mcp.example.com/mcp"),
        ("https://mcp.example/MCP", "https://mcp.example/MCP"),
        ("https://mcp.example:443/mcp/", "https://mcp.example/mcp"),
        ("https://mcp.example/", "https://mcp.example"),
        ("https://mcp.example", "https://mcp.example"),
        ("http://localhost:80/mcp", "http://localhost/mcp"),
        ("http://localhost:443/mcp", "http://localhost:443/mcp"),
        ("https://mcp.example:8443/mcp#section", "https://mcp.example:8443/mcp"),
        ("https://mcp.example/mcp?tenant=a", "https://mcp.example/mcp?tenant=a"),
        ("https://[::1]:8443/mcp", "https://[::1]:8443/mcp"),
        ("https://[::1]:443/", "https://[::1]"),
    ],
)
def test_canonical_resource(url: str, canonical: str) -> None:
    assert canonical_resource(url) == canonical


_HOSTS = st.from_regex(r"[a-zA-Z][a-zA-Z0-9-]{0,10}(\.[a-zA-Z]{2,5}){1,2}", fullmatch=True)
_PATHS = st.lists(st.from_regex(r"[a-zA-Z0-9_-]{1,8}", fullmatch=True), max_size=3).map(
    lambda segments: "".join(f"/{segment}" for segment in segments)
)


@given(
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
    host=_HOSTS,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    path=_PATHS,
    slash=st.booleans(),
)
def test_canonical_form_is_stable_and_covers_itself(
    scheme: str, host: str, port: int | None, path: str, slash: bool
) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}{path}{'/' if slash else ''}"
    canonical = canonical_resource(url)
    assert canonical_resource(canonical) == canonical
    assert canonical == canonical.rstrip("/")
    assert resource_covers(url, canonical)
    assert resource_covers(canonical, url)


@pytest.mark.parametrize(
    ("resource", "upstream", "covers"),
    [
        (UPSTREAM, UPSTREAM, True),
        ("https://MCP.example:443/mcp/", UPSTREAM, True),
        ("https://mcp.example", UPSTREAM, True),
        ("https://mcp.example/", UPSTREAM, True),
        ("https://mcp.example/v1", "https://mcp.example/v1/mcp", True),
        ("https://mcp.example/v1/mc", "https://mcp.example/v1/mcp", False),
        ("https://mcp.example/mcp/tools", UPSTREAM, False),
        ("https://mcp.example/other", UPSTREAM, False),
        ("https://other.example/mcp", UPSTREAM, False),
        ("http://mcp.example/mcp", UPSTREAM, False),
        ("https://mcp.example:8443/mcp", UPSTREAM, False),
        ("https://mcp.example.evil/mcp", UPSTREAM, False),
    ],
)
def test_resource_covers(resource: str, upstream: str, covers: bool) -> None:
    assert resource_covers(resource, upstream) is covers


# --- the URL orders ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "hinted", "urls"),
    [
        (UPSTREAM, None, [f"{PRM}/mcp", PRM]),
        ("https://mcp.example/mcp/", None, [f"{PRM}/mcp", PRM]),
        ("https://mcp.example/v1/mcp", None, [f"{PRM}/v1/mcp", PRM]),
        ("https://mcp.example", None, [PRM]),
        ("https://mcp.example/", None, [PRM]),
        (
            "https://mcp.example:8443/mcp",
            None,
            [
                "https://mcp.example:8443/.well-known/oauth-protected-resource/mcp",
                "https://mcp.example:8443/.well-known/oauth-protected-resource",
            ],
        ),
        # The 401's resource_metadata comes first ...
        (
            UPSTREAM,
            "https://mcp.example/meta/prm.json",
            ["https://mcp.example/meta/prm.json", f"{PRM}/mcp", PRM],
        ),
        (
            "https://mcp.example",
            "https://auth.mcp.example/prm",
            ["https://auth.mcp.example/prm", PRM],
        ),
        # ... and a well-known URL it names is not asked for twice.
        (UPSTREAM, PRM, [PRM, f"{PRM}/mcp"]),
        (UPSTREAM, f"{PRM}/mcp", [f"{PRM}/mcp", PRM]),
    ],
)
def test_resource_metadata_urls_in_the_specs_order(
    upstream: str, hinted: str | None, urls: list[str]
) -> None:
    assert resource_metadata_urls(upstream, hinted) == urls


def test_the_upstreams_query_is_kept_in_the_well_known_url() -> None:
    urls = resource_metadata_urls("https://mcp.example/mcp?tenant=a", None)
    assert urls[0] == f"{PRM}/mcp?tenant=a"


@pytest.mark.parametrize(
    ("issuer", "urls"),
    [
        (
            "https://idp.example",
            [
                "https://idp.example/.well-known/oauth-authorization-server",
                "https://idp.example/.well-known/openid-configuration",
            ],
        ),
        (
            "https://idp.example/",
            [
                "https://idp.example/.well-known/oauth-authorization-server",
                "https://idp.example/.well-known/openid-configuration",
            ],
        ),
        (
            "https://idp.example/tenants/t1",
            [
                "https://idp.example/.well-known/oauth-authorization-server/tenants/t1",
                "https://idp.example/.well-known/openid-configuration/tenants/t1",
                "https://idp.example/tenants/t1/.well-known/openid-configuration",
            ],
        ),
        (
            "https://idp.example:8443/realms/r/",
            [
                "https://idp.example:8443/.well-known/oauth-authorization-server/realms/r",
                "https://idp.example:8443/.well-known/openid-configuration/realms/r",
                "https://idp.example:8443/realms/r/.well-known/openid-configuration",
            ],
        ),
    ],
)
def test_authorization_server_metadata_urls_in_the_mcp_order(issuer: str, urls: list[str]) -> None:
    assert authorization_server_metadata_urls(issuer) == urls


# --- read_resource_metadata -------------------------------------------------------------


def test_resource_metadata_is_read_leniently() -> None:
    document = {
        "resource": UPSTREAM,
        "authorization_servers": [ISSUER, "https://backup.example"],
        "scopes_supported": ["mcp:read", "mcp:write"],
        "bearer_methods_supported": ["header"],
    }
    metadata = read_resource_metadata(document, UPSTREAM, PRM)
    assert metadata.authorization_servers == [ISSUER, "https://backup.example"]
    assert metadata.scopes_supported == ["mcp:read", "mcp:write"]


def test_resource_metadata_for_the_origin_of_the_upstream_is_accepted() -> None:
    document = {"resource": "https://mcp.example/", "authorization_servers": [ISSUER]}
    assert read_resource_metadata(document, UPSTREAM, PRM).resource == "https://mcp.example/"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("not a document", "is not protected resource metadata"),
        ([UPSTREAM], "is not protected resource metadata"),
        ({"authorization_servers": [ISSUER]}, "is not protected resource metadata"),
        ({"resource": UPSTREAM, "authorization_servers": "x"}, "not protected resource"),
        ({"resource": UPSTREAM}, "names no authorization server"),
        ({"resource": UPSTREAM, "authorization_servers": []}, "names no authorization server"),
    ],
)
def test_malformed_resource_metadata_is_refused(document: object, fragment: str) -> None:
    with pytest.raises(DiscoveryError, match=fragment) as caught:
        read_resource_metadata(document, UPSTREAM, PRM)
    assert PRM in str(caught.value)


@pytest.mark.parametrize(
    "resource",
    ["https://other.example/mcp", "https://mcp.example/other", "http://mcp.example/mcp"],
)
def test_resource_metadata_for_another_resource_is_refused(resource: str) -> None:
    document = {"resource": resource, "authorization_servers": ["https://evil.example"]}
    with pytest.raises(DiscoveryError) as caught:
        read_resource_metadata(document, UPSTREAM, PRM)
    message = str(caught.value)
    assert repr(resource) in message
    assert repr(UPSTREAM) in message
    assert "RFC 9728" in message
    for name in ("DISCOVERY_ENABLED=false", "OAUTH2_TOKEN_URL", "OAUTH2_AUTHORIZATION_URL"):
        assert name in message


def test_discovery_errors_are_oauth_errors() -> None:
    assert issubclass(DiscoveryError, OAuthError)


# --- read_server_metadata ---------------------------------------------------------------

AS_URL = "https://idp.example/.well-known/oauth-authorization-server"


def test_server_metadata_is_read_leniently() -> None:
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "registration_endpoint": f"{ISSUER}/register",
        "scopes_supported": ["openid", "offline_access"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "authorization_response_iss_parameter_supported": True,
        "response_types_supported": ["code"],
    }
    metadata = read_server_metadata(document, ISSUER, AS_URL)
    assert metadata.token_endpoint == f"{ISSUER}/token"
    assert metadata.registration_endpoint == f"{ISSUER}/register"
    assert metadata.authorization_response_iss_parameter_supported is True
    assert metadata.code_challenge_methods_supported == ["plain", "S256"]


def test_server_metadata_defaults_say_nothing_is_supported() -> None:
    metadata = read_server_metadata({"issuer": ISSUER}, ISSUER, AS_URL)
    assert metadata.token_endpoint is None
    assert metadata.authorization_endpoint is None
    assert metadata.code_challenge_methods_supported is None
    assert metadata.authorization_response_iss_parameter_supported is False
    assert metadata.client_id_metadata_document_supported is False


@pytest.mark.parametrize(("asked", "said"), [(ISSUER, f"{ISSUER}/"), (f"{ISSUER}/", ISSUER)])
def test_a_trailing_slash_on_the_issuer_is_tolerated(asked: str, said: str) -> None:
    assert read_server_metadata({"issuer": said}, asked, AS_URL).issuer == said


@pytest.mark.parametrize(
    "said",
    ["https://evil.example", "https://idp.example/tenant", "http://idp.example", "HTTPS://IDP.X"],
)
def test_server_metadata_for_another_issuer_is_refused(said: str) -> None:
    with pytest.raises(DiscoveryError, match=r"RFC 8414 §3\.3") as caught:
        read_server_metadata({"issuer": said, "token_endpoint": f"{said}/t"}, ISSUER, AS_URL)
    assert repr(said) in str(caught.value)
    assert AS_URL in str(caught.value)


@pytest.mark.parametrize("document", [None, "x", {}, {"token_endpoint": "https://i/t"}])
def test_malformed_server_metadata_is_refused(document: object) -> None:
    with pytest.raises(DiscoveryError, match="is not authorization server metadata"):
        read_server_metadata(document, ISSUER, AS_URL)


# --- choose_scope and widen_scope -------------------------------------------------------


def resource_with(scopes: list[str] | None) -> ResourceMetadata:
    return ResourceMetadata(
        resource=UPSTREAM, authorization_servers=[ISSUER], scopes_supported=scopes
    )


def server_with(scopes: list[str] | None) -> ServerMetadata:
    return ServerMetadata(issuer=ISSUER, scopes_supported=scopes)


@pytest.mark.parametrize(
    ("challenged", "resource", "server", "scope"),
    [
        # The 401's scope first ...
        ("mcp:tools", resource_with(["mcp:read"]), server_with(None), "mcp:tools"),
        # ... then the resource's scopes_supported ...
        (None, resource_with(["mcp:read", "mcp:write"]), server_with(None), "mcp:read mcp:write"),
        (None, None, server_with(None), None),
        # ... else nothing, even when the server lists offline_access.
        (None, resource_with([]), server_with(["offline_access"]), None),
        (None, resource_with(None), server_with(["offline_access"]), None),
        ("", resource_with(["mcp:read"]), server_with(None), "mcp:read"),
        # offline_access is added when the authorization server offers it ...
        (
            "mcp:tools",
            None,
            server_with(["mcp:tools", "offline_access"]),
            "mcp:tools offline_access",
        ),
        (
            None,
            resource_with(["mcp:read"]),
            server_with(["offline_access"]),
            "mcp:read offline_access",
        ),
        # ... once.
        (
            "offline_access mcp:tools",
            None,
            server_with(["offline_access"]),
            "offline_access mcp:tools",
        ),
        # Not when the server does not list it.
        ("mcp:tools", None, server_with(["openid", "offline"]), "mcp:tools"),
    ],
)
def test_choose_scope(
    challenged: str | None,
    resource: ResourceMetadata | None,
    server: ServerMetadata,
    scope: str | None,
) -> None:
    assert choose_scope(challenged, resource, server) == scope


@pytest.mark.parametrize(
    ("current", "required", "wider"),
    [
        (None, "files:write", "files:write"),
        ("files:read", "files:write", "files:read files:write"),
        ("a b", "b c", "a b c"),
        ("a  b", "  a ", "a b"),
        ("a offline_access", "admin", "a offline_access admin"),
        ("a", "", "a"),
    ],
)
def test_widen_scope_is_the_ordered_union(current: str | None, required: str, wider: str) -> None:
    assert widen_scope(current, required) == wider


# --- unsafe_endpoints -------------------------------------------------------------------


def test_endpoints_in_cleartext_off_loopback_are_named() -> None:
    metadata = ServerMetadata(
        issuer=ISSUER,
        authorization_endpoint="https://idp.example/authorize",
        token_endpoint="http://idp.example/token",
        registration_endpoint="http://idp.example/register",
    )
    problems = unsafe_endpoints(metadata, allow_insecure_http=False)
    assert len(problems) == 2
    assert problems[0].startswith("token_endpoint http://idp.example/token is cleartext")
    assert problems[1].startswith("registration_endpoint http://idp.example/register")
    # The server's to fix, or the user's to set instead: not a URL in this configuration.
    for problem in problems:
        assert "ask the server's operator for https" in problem
        assert "discovery.enabled / DISCOVERY_ENABLED=false" in problem
        assert "oauth2.tokenUrl / OAUTH2_TOKEN_URL" in problem
    assert unsafe_endpoints(metadata, allow_insecure_http=True) == []


def test_loopback_and_https_endpoints_are_safe() -> None:
    metadata = ServerMetadata(
        issuer="http://127.0.0.1:9000",
        authorization_endpoint="http://localhost:9000/authorize",
        token_endpoint="http://127.0.0.1:9000/token",
        registration_endpoint="https://idp.example/register",
    )
    assert unsafe_endpoints(metadata, allow_insecure_http=False) == []


def test_other_schemes_are_refused_even_when_http_is_allowed() -> None:
    metadata = ServerMetadata(issuer=ISSUER, authorization_endpoint="javascript:alert(1)")
    (problem,) = unsafe_endpoints(metadata, allow_insecure_http=True)
    assert "authorization_endpoint javascript:alert(1)" in problem
    assert "'javascript'" in problem


# --- step_up_scope ----------------------------------------------------------------------

INSUFFICIENT = {"error": "insufficient_scope", "scope": "files:write"}


@pytest.mark.parametrize(
    ("status", "challenge", "stepped_up", "scope"),
    [
        (403, INSUFFICIENT, False, "files:write"),
        (403, {**INSUFFICIENT, "scope": "a b"}, False, "a b"),
        # Once per message.
        (403, INSUFFICIENT, True, None),
        # Only a 403 ...
        (401, INSUFFICIENT, False, None),
        (400, INSUFFICIENT, False, None),
        # ... that says insufficient_scope ...
        (403, {"error": "invalid_token", "scope": "files:write"}, False, None),
        (403, {"scope": "files:write"}, False, None),
        (403, {}, False, None),
        # ... and names the scope it needs.
        (403, {"error": "insufficient_scope"}, False, None),
        (403, {"error": "insufficient_scope", "scope": ""}, False, None),
    ],
)
def test_step_up_scope(
    status: int, challenge: dict[str, str], stepped_up: bool, scope: str | None
) -> None:
    assert step_up_scope(status, challenge, stepped_up) == scope


def test_step_up_scope_from_a_real_header() -> None:
    header = 'Bearer error="insufficient_scope", scope="files:read files:write", realm="mcp"'
    assert step_up_scope(403, bearer_challenge(header), False) == "files:read files:write"


# --- refuses_resource -------------------------------------------------------------------

ENTRA_MESSAGE = (
    "token request (client_credentials) to https://login.example/token failed: the IdP "
    "refused the request with HTTP 400: invalid_request: AADSTS9010010: The resource "
    "parameter provided in the request doesn't match with the requested scopes."
)


def token_request(*fields: tuple[str, str]) -> TokenRequest:
    form = (("grant_type", "client_credentials"), ("client_id", "app"), *fields)
    return TokenRequest("https://login.example/token", "client_credentials", form)


def entra_error(message: str = ENTRA_MESSAGE) -> TokenEndpointError:
    return TokenEndpointError(message, status=400, error="invalid_request")


def test_entra_refusing_the_resource_indicator_is_recognised() -> None:
    request = token_request(("scope", "api://x/.default"), ("resource", UPSTREAM))
    assert refuses_resource(entra_error(), request) is True
    plain = without_resource(request)
    assert plain.form == (
        ("grant_type", "client_credentials"),
        ("client_id", "app"),
        ("scope", "api://x/.default"),
    )
    assert (plain.url, plain.grant, plain.headers) == (request.url, request.grant, request.headers)
    # Asked again without it, the same refusal is not taken for this one any more.
    assert refuses_resource(entra_error(), plain) is False


def test_other_refusals_are_not_blamed_on_the_resource() -> None:
    request = token_request(("resource", UPSTREAM))
    other = ENTRA_MESSAGE.replace("AADSTS9010010", "AADSTS7000215")
    assert refuses_resource(entra_error(other), request) is False
    assert refuses_resource(entra_error(), token_request()) is False


# --- RFC 9207: the iss parameter of the callback ----------------------------------------

HOST = "127.0.0.1:53682"
STATE_BYTES = b"\x09" * 32


def judge(secrets: LoginSecrets, **params: str) -> Granted | Denied | Refused:
    return judge_callback(
        method="GET",
        target=f"/callback?{urlencode({'state': secrets.state, **params})}",
        host_header=HOST,
        expected_host=HOST,
        expected_path="/callback",
        secrets=secrets,
    )


def secrets(issuer: str | None, *, required: bool = False) -> LoginSecrets:
    return LoginSecrets.from_random(
        b"\x07" * 32, STATE_BYTES, issuer=issuer, issuer_required=required
    )


@pytest.mark.parametrize("required", [False, True])
def test_a_callback_from_the_expected_issuer_is_accepted(required: bool) -> None:
    assert judge(secrets(ISSUER, required=required), code="c", iss=ISSUER) == Granted("c")


@pytest.mark.parametrize("required", [False, True])
@pytest.mark.parametrize("iss", ["https://evil.example", f"{ISSUER}/", "", ISSUER.upper()])
def test_a_callback_from_another_issuer_is_refused_without_acting_on_its_error(
    required: bool, iss: str
) -> None:
    login = secrets(ISSUER, required=required)
    for outcome in (
        judge(login, code="c", iss=iss),
        judge(login, error="access_denied", error_description="go away", iss=iss),
    ):
        assert isinstance(outcome, Refused)
        assert outcome.status == 400
        assert "RFC 9207" in outcome.reason


def test_a_missing_iss_is_refused_when_the_server_advertises_it() -> None:
    login = secrets(ISSUER, required=True)
    for outcome in (judge(login, code="c"), judge(login, error="access_denied")):
        assert isinstance(outcome, Refused)
        assert "RFC 9207" in outcome.reason


def test_a_missing_iss_is_accepted_when_the_server_does_not_advertise_it() -> None:
    login = secrets(ISSUER)
    assert judge(login, code="c") == Granted("c")
    assert judge(login, error="access_denied") == Denied("access_denied", None)


def test_without_a_discovered_issuer_iss_is_not_checked() -> None:
    assert judge(secrets(None), code="c", iss="https://anything.example") == Granted("c")


def test_a_wrong_state_is_refused_before_the_issuer_is_looked_at() -> None:
    login = secrets(ISSUER, required=True)
    outcome = judge_callback(
        method="GET",
        target=f"/callback?{urlencode({'state': 'other', 'code': 'c', 'iss': ISSUER})}",
        host_header=HOST,
        expected_host=HOST,
        expected_path="/callback",
        secrets=login,
    )
    assert isinstance(outcome, Refused)
    assert "state" in outcome.reason


@pytest.mark.parametrize(
    ("supported", "method", "style"),
    [
        (None, "none", "body"),
        (("none", "client_secret_basic"), "none", "body"),
        (("client_secret_basic", "client_secret_post"), "client_secret_post", "body"),
        (("client_secret_basic",), "client_secret_basic", "header"),
    ],
)
def test_registration_follows_the_servers_auth_methods(
    supported: tuple[str, ...] | None, method: str, style: str
) -> None:
    assert (
        registration_request("http://127.0.0.1:1/cb", None, supported)["token_endpoint_auth_method"]
        == method
    )
    client = read_registration(
        201,
        {"client_id": "c", "client_secret": "s", "token_endpoint_auth_method": method},
        issuer="https://as",
        redirect_uri="http://127.0.0.1:1/cb",
        url="https://as/register",
    )
    assert client.auth_style == style


def test_offline_access_only_when_asked_for() -> None:
    server = ServerMetadata(issuer="https://as", scopes_supported=["mcp", "offline_access"])
    assert choose_scope("mcp", None, server) == "mcp offline_access"
    assert choose_scope("mcp", None, server, offline=False) == "mcp"
