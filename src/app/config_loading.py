"""Loading the configuration a proxy process runs with: file, then environment, then checks."""

from __future__ import annotations

from collections.abc import Mapping

from ..domain.config_merge import LoadedConfig, merge_config
from ..domain.errors import ConfigError
from ..domain.grant_requirements import check_grant_requirements
from ..domain.ports import ConfigFileReader
from ..domain.settings import CONFIG_FILE_ENV
from ..domain.url_guard import check_config_urls


def load_config(env: Mapping[str, str], reader: ConfigFileReader) -> LoadedConfig:
    """Merge MCP_PROXY_CONFIG's file (if set) with `env` and check the result is usable.

    Raises:
        ConfigError: naming every offending field and where its value came from.
    """
    path = env.get(CONFIG_FILE_ENV) or None
    document = reader.read(path) if path is not None else None
    loaded = merge_config(env, document, path)
    check_config(loaded)
    return loaded


def check_config(loaded: LoadedConfig, *, discovery_pending: bool = True) -> None:
    """The checks every configuration passes before use, however it was built; while
    discovery is still to run, what it can find may be missing.

    Raises:
        InsecureUrlError: a URL setting would carry secrets in cleartext off loopback.
        ConfigError: the grant lacks a setting it needs; or both kinds of problem, listed
            together so one run shows everything to fix.
    """
    errors: list[ConfigError] = []
    for check in (
        check_config_urls,
        lambda config: check_grant_requirements(config, discovery_pending=discovery_pending),
    ):
        try:
            check(loaded)
        except ConfigError as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigError([problem for error in errors for problem in error.problems])
