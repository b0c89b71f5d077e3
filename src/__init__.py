"""mcp-oauth2-proxy: a local stdio MCP server in front of a remote, OAuth2-protected one.

Public API: `Proxy`, the configuration models, the error types and `__version__`.
"""

from ._version import __version__
from .app.proxy import Proxy
from .domain.config import (
    DiscoveryConfig,
    LogConfig,
    OAuth2Config,
    ProxyConfig,
    SecurityConfig,
    UpstreamConfig,
)
from .domain.config_merge import LoadedConfig
from .domain.errors import (
    ClientGone,
    ConfigError,
    ConfigProblem,
    IdpUnreachableError,
    InsecureUrlError,
    OAuthError,
    ProxyError,
    TokenEndpointError,
    UpstreamError,
)
from .domain.token_lifecycle import AccessToken

__all__ = [
    "AccessToken",
    "ClientGone",
    "ConfigError",
    "ConfigProblem",
    "DiscoveryConfig",
    "IdpUnreachableError",
    "InsecureUrlError",
    "LoadedConfig",
    "LogConfig",
    "OAuth2Config",
    "OAuthError",
    "Proxy",
    "ProxyConfig",
    "ProxyError",
    "SecurityConfig",
    "TokenEndpointError",
    "UpstreamConfig",
    "UpstreamError",
    "__version__",
]
