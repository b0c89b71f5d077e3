"""The `mcp-oauth2-proxy` command: parse arguments, load the configuration, run.

Exit status: 0 done, 2 configuration error, 3 no token could be obtained, 1 anything else
(for `doctor`: 1 when any check failed).
Nothing but JSON-RPC ever goes to stdout while the proxy runs; `--help` and `--version` are
the only output of their own there.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from types import SimpleNamespace
from typing import TYPE_CHECKING

import anyio

from .._version import __version__
from ..adapters.stderr_log import log_to_stderr, package_logger
from ..domain.config import OAuth2Config
from ..domain.config_merge import LoadedConfig
from ..domain.errors import ConfigError, OAuthError, ProxyError
from ..domain.settings import CONFIG_FILE_ENV, SETTINGS
from .container import cache_directory, caches_logins
from .proxy import Proxy

if TYPE_CHECKING:
    import argparse

log = package_logger()

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3


def exit_code(error: ProxyError) -> int:
    """Map the error tree to exit statuses (the module docstring lists them)."""
    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, OAuthError):
        return EXIT_AUTH
    return EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    import argparse  # only when there are arguments: see main()

    width = max(len(setting.env) for setting in SETTINGS)
    lines = [f"  {s.env.ljust(width)}  {s.summary}" for s in SETTINGS]
    parser = argparse.ArgumentParser(
        prog="mcp-oauth2-proxy",
        description=(
            "A local stdio MCP server that forwards every message to a remote, "
            "OAuth2-protected MCP server, obtaining and renewing the token itself."
        ),
        epilog=(
            f"Configuration: the JSON file named by {CONFIG_FILE_ENV} (optional), then these "
            "environment variables, which win:\n"
            + "\n".join(lines)
            + "\n\nDocs: docs/configuration.md lists defaults and the file's keys."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the proxy on stdin/stdout (the default)")
    commands.add_parser("login", help="log in with the browser now and cache the login, then exit")
    commands.add_parser("logout", help="forget the cached login of this configuration")
    commands.add_parser(
        "status", help="say whether a login is cached for this configuration (exit 1 if not)"
    )
    shown = commands.add_parser(
        "config",
        help="print the effective configuration: each setting, its value and where it came "
        "from (secrets only as 'set')",
    )
    shown.add_argument("--json", action="store_true", help="one JSON object per setting")
    doctor = commands.add_parser(
        "doctor",
        help="check each step the proxy needs (configuration, discovery, token, clock, "
        "upstream, callback port), with the fix for each failure (exit 1 if any failed)",
    )
    doctor.add_argument("--json", action="store_true", help="the results as one JSON document")
    demo = commands.add_parser(
        "demo",
        help="see the whole path work against a local IdP and MCP server (needs the demo extra)",
    )
    demo.add_argument(
        "--interactive",
        action="store_true",
        help="log in through your browser on the demo IdP's page instead of client credentials",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m mcp_oauth2_proxy`."""
    given = sys.argv[1:] if argv is None else argv
    # An MCP host starts the proxy with no arguments, which mean `run`: argparse and the
    # parser, whose help lists every setting, cost its cold start only when there is
    # something to parse.
    arguments = build_parser().parse_args(given) if given else SimpleNamespace(command=None)
    if arguments.command == "demo":
        return _demo(interactive=arguments.interactive)
    if arguments.command == "doctor":
        return _doctor(as_json=arguments.json)
    try:
        loaded = Proxy.load_config()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_CONFIG
    log_to_stderr(loaded.config.log.level)
    commands: dict[str, Callable[[LoadedConfig], Awaitable[int]]] = {
        "login": _login,
        "logout": _logout,
        "status": _status,
        "config": partial(_config, as_json=arguments.command == "config" and arguments.json),
    }
    command = commands.get(arguments.command or "run", _run)
    try:
        return anyio.run(command, loaded, backend_options=_event_loop())
    except KeyboardInterrupt:
        return EXIT_OK


def _event_loop() -> dict[str, object]:
    """uvloop's event loop where it is installed: at 64 calls in flight the proxy carries
    14-19 % more calls on it for about a tenth less CPU (docs/performance.md). It has no
    Windows build; asyncio's own loop runs there. `doctor` and `demo` run on the same loop,
    so that what they check is what the proxy runs."""
    try:
        import uvloop
    except ImportError:
        return {}
    return {"loop_factory": uvloop.new_event_loop}


async def _login(loaded: LoadedConfig) -> int:
    # `login` is the browser login even where the proxy itself may not open one
    # (oauth2.interactive=false relies on exactly this cached login).
    oauth = loaded.config.oauth2.model_copy(update={"interactive": True})
    loaded = LoadedConfig(loaded.config.model_copy(update={"oauth2": oauth}), loaded.sources)
    try:
        async with Proxy(loaded) as proxy:
            try:
                await proxy.login()
            except ProxyError as error:  # reported inside the scope of the proxy's redaction
                log.critical("login failed: %s", error)
                return exit_code(error)
    except ProxyError as error:
        log.critical("login failed: %s", error)
        return exit_code(error)
    oauth = proxy.config.oauth2
    print(
        f"Logged in as client {oauth.client_id} at {oauth.token_url}; the login is cached in "
        f"{cache_directory(oauth)} and later launches will not ask you again."
    )
    return EXIT_OK


async def _logout(loaded: LoadedConfig) -> int:
    if not caches_logins(loaded.config.oauth2):
        print(f"{_token_source(loaded.config.oauth2)} keeps no cached login; nothing to forget.")
        return EXIT_OK
    try:
        async with Proxy(loaded) as proxy:  # discovery may be needed to name the login
            forgot = proxy.logout()
            oauth = proxy.config.oauth2
    except ProxyError as error:
        log.critical("logout failed: %s", error)
        return exit_code(error)
    if forgot:
        print(
            f"Logged out: forgot the cached login of client {oauth.client_id} at {oauth.token_url}."
        )
    else:
        print(
            f"No cached login for client {oauth.client_id} at {oauth.token_url}; nothing to forget."
        )
    return EXIT_OK


def _token_source(oauth: OAuth2Config) -> str:
    if oauth.token_command is not None:
        return "The token command (oauth2.tokenCommand / OAUTH2_TOKEN_COMMAND)"
    return f"Grant {oauth.grant}"


async def _status(loaded: LoadedConfig) -> int:
    if not caches_logins(loaded.config.oauth2):
        source = _token_source(loaded.config.oauth2)
        print(f"{source} keeps no cached login: it gets a token again at every start.")
        return EXIT_FAILURE
    try:
        async with Proxy(loaded) as proxy:  # discovery may be needed to name the login
            cached = proxy.cached_login()
            oauth = proxy.config.oauth2
    except ProxyError as error:
        log.critical("status failed: %s", error)
        return exit_code(error)
    if cached is None:
        # `login` is the browser or device login, which grant refresh_token refuses: it
        # starts from the refresh token it is given.
        what_to_do = (
            "Run `mcp-oauth2-proxy login`."
            if oauth.grant in ("authorization_code", "device_code")
            else "Set a new oauth2.refreshToken / OAUTH2_REFRESH_TOKEN."
        )
        print(
            f"Not logged in: no cached login for client {oauth.client_id} at "
            f"{oauth.token_url} in {cache_directory(oauth)}. {what_to_do}"
        )
        return EXIT_FAILURE
    saved = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(cached.saved_at))
    print(
        f"Logged in: client {cached.client_id} at {cached.token_url}, saved {saved}, "
        f"in {cache_directory(oauth)}."
    )
    return EXIT_OK


async def _config(loaded: LoadedConfig, *, as_json: bool) -> int:
    """What the proxy would run with, discovery included (as at its start): the report goes
    to stdout, a discovery failure to stderr after it. The report's code is imported here:
    the proxy's own start does not pay for it."""
    from ..domain.config_report import config_report, render_report

    failure: ProxyError | None = None
    try:
        async with Proxy(loaded) as proxy:
            loaded = proxy.container.loaded_config()
    except ProxyError as error:
        failure = error
    lines = config_report(loaded)
    if as_json:
        print(json.dumps([line.as_dict() for line in lines], indent=2))
    else:
        print(render_report(lines))
    if failure is not None:
        log.critical("discovery failed, so the values it would fill in are missing: %s", failure)
        return exit_code(failure)
    return EXIT_OK


def _doctor(*, as_json: bool) -> int:
    """Runs before (and without) the configuration check the other commands make: a broken
    configuration is the doctor's first finding, not a reason to stop. Imported here: the
    proxy's own start does not pay for it."""
    from ..domain.diagnosis import all_passed, render_checks, render_json
    from .doctor import diagnose

    log_to_stderr("warn")
    if not as_json:
        print("mcp-oauth2-proxy doctor: each step the proxy takes at its start, in order.\n")
    try:
        checks = anyio.run(diagnose, dict(os.environ), backend_options=_event_loop())
    except KeyboardInterrupt:
        return EXIT_FAILURE
    print(render_json(checks) if as_json else render_checks(checks))
    return EXIT_OK if all_passed(checks) else EXIT_FAILURE


async def _run(loaded: LoadedConfig) -> int:
    try:
        async with Proxy(loaded) as proxy:
            try:
                # Prefetch: a wrong secret fails now, with the IdP's words, not at the first
                # call. Reported inside the proxy's scope, so its redaction covers the message.
                await proxy.access_token()
            except ProxyError as error:
                log.critical("cannot start: %s", error)
                return exit_code(error)
            log.info("ready", extra={"upstream": proxy.config.upstream.url})
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_stop_on_signal, proxy)
                await proxy.serve_stdio()
                tasks.cancel_scope.cancel()
    except ProxyError as error:  # the proxy could not start: configuration or discovery
        log.critical("cannot start: %s", error)
        return exit_code(error)
    return EXIT_OK


async def _stop_on_signal(proxy: Proxy) -> None:
    """SIGINT and SIGTERM end the proxy like the end of stdin: in-flight requests get their
    grace, the session is deleted, the exit status is 0."""
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for received in signals:
                log.info("stopping on a signal", extra={"signal": signal.Signals(received).name})
                proxy.stop()
    except NotImplementedError:
        return  # Windows: Ctrl+C arrives as KeyboardInterrupt, handled in main()


def _demo(*, interactive: bool) -> int:
    try:
        from .demo import DemoContainer, run_demo
    except ImportError as missing:
        print(
            f"the demo needs the MCP SDK ({missing.name} is missing): "
            "pip install 'mcp-oauth2-proxy[demo]'",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print("mcp-oauth2-proxy demo: an MCP client, the proxy, an IdP and an OAuth-protected")
    print("MCP server, all on 127.0.0.1, with nothing to configure.\n")
    if interactive:
        print("Your browser opens the demo IdP's login page: click Approve. If it does not")
        print("open, open the URL the proxy prints below.\n")

    def report(step: str, detail: str) -> None:
        print(f"  \N{CHECK MARK} {step:<12} {detail}", flush=True)

    container = DemoContainer()
    try:
        with tempfile.TemporaryDirectory(prefix="mcp-oauth2-proxy-demo-") as cache_dir:
            anyio.run(
                partial(
                    run_demo,
                    container.servers(),
                    container.client(),
                    report,
                    interactive=interactive,
                    cache_dir=cache_dir,
                ),
                backend_options=_event_loop(),
            )
    except Exception as error:  # the demo reports any failure rather than a traceback
        print(f"\n  \N{BALLOT X} the demo failed: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print("\nThe token never left the proxy: the client spoke plain stdio MCP. To use a real")
    print("server, set UPSTREAM_URL and the OAUTH2_* settings (docs/getting-started.md).")
    return EXIT_OK
