"""Which settings each grant cannot do without, checked before the first token request.

Checked after the merge and again after discovery has filled in what it found, so a missing
client id is reported at startup with the names to set, not as an IdP error later. Before
discovery, what discovery can find (the token endpoint, a registered client id) may be unset.
"""

from __future__ import annotations

from .config_merge import LoadedConfig
from .errors import ConfigError, ConfigProblem
from .settings import SETTINGS_BY_PATH

_ALWAYS = ("oauth2.clientId", "oauth2.tokenUrl")
_BY_GRANT: dict[str, tuple[str, ...]] = {
    "client_credentials": ("oauth2.clientSecret",),
    "refresh_token": ("oauth2.refreshToken",),
    "password": ("oauth2.username", "oauth2.password"),
    "authorization_code": (),
    "device_code": ("oauth2.deviceAuthorizationUrl",),
}
# Only the endpoints: a device client may be public, and discovery registers none for it.
_FOUND_BY_DISCOVERY = frozenset({"oauth2.tokenUrl", "oauth2.deviceAuthorizationUrl"})


def check_grant_requirements(loaded: LoadedConfig, *, discovery_pending: bool = False) -> None:
    """Raise one ConfigError naming every setting the configured grant still lacks."""
    oauth = loaded.config.oauth2
    if oauth.token_command is not None:
        return  # the command is the whole token source: no OAuth setting is used
    problems: list[ConfigProblem] = []
    pending = discovery_pending and loaded.config.discovery.enabled
    required = [*_ALWAYS, *_BY_GRANT[oauth.grant]]
    if oauth.auth_style == "private_key_jwt":
        # The signed assertion takes the secret's place.
        required = [path for path in required if path != "oauth2.clientSecret"]
        required.append("oauth2.clientAssertionKeyFile")
    for path in required:
        if pending and (path in _ALWAYS or path in _FOUND_BY_DISCOVERY):
            continue
        if loaded.config.value(path) is None:
            setting = SETTINGS_BY_PATH[path]
            not_found = (
                ""
                if discovery_pending or not loaded.config.discovery.enabled
                else ", and discovery did not find it"
            )
            problems.append(
                ConfigProblem(
                    setting.names(),
                    "",
                    f"required for grant {oauth.grant}{not_found}; {setting.how_to_set()}",
                )
            )
    # authorization_code with interactive=false and no refresh token or code is no error
    # here: a login cached by `mcp-oauth2-proxy login` is a start; without one, the first
    # token request says to log in.
    if problems:
        raise ConfigError(problems)
