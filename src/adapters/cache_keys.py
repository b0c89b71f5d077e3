"""Where the token cache's encryption key lives: a `key` file beside the cache, or the
operating system's keychain (macOS Keychain, Windows Credential Locker, the Secret Service on
Linux) through the optional `keyring` package.

In the keychain, copying the cache directory (a backup, a synced folder) is no longer enough
to read the tokens: the key stays with the user's login session. `OAUTH2_TOKEN_STORE` picks
(`auto`, the default, uses the keychain when a real backend answers); an existing file key
is moved into the keychain the first time, so cached logins survive the move.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from pathlib import Path
from typing import Protocol

import filelock

from ..domain.config import TokenStore as TokenStoreMode
from ..domain.errors import ConfigError, ConfigProblem
from .atomic_file import write_atomically, write_temporary
from .stderr_log import package_logger

log = package_logger()

KEY_BYTES = 32
# Beside the cache once the key is in the keychain, so no process makes a file key instead.
MARKER = "key-in-keychain"
KEYRING_SERVICE = "mcp-oauth2-proxy"
STORE_SETTING = "oauth2.tokenStore / OAUTH2_TOKEN_STORE"


class CacheKey(Protocol):
    """The 32-byte key of one cache directory, created on first use."""

    where: str

    def key(self) -> bytes: ...


class Keychain(Protocol):
    """What is used of a keyring backend."""

    def get_password(self, service: str, username: str) -> str | None: ...

    def set_password(self, service: str, username: str, password: str) -> None: ...


class FileCacheKey:
    """`key` (0600) beside the cache. Two processes creating it at once agree: the key is
    linked into place only if none exists, and the loser reads the winner's."""

    where = "file"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "key"
        self.marker = directory / MARKER

    def existing(self) -> bytes | None:
        try:
            key = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return key if len(key) == KEY_BYTES else None

    def key(self) -> bytes:
        if self.marker.exists():
            # A new file key would make every cached login unreadable, and the next process
            # with the keychain would take the logins saved meanwhile: refuse instead.
            raise ConfigError(
                [
                    ConfigProblem(
                        STORE_SETTING,
                        "",
                        f"the token cache key of {self.path.parent} was moved into the "
                        "operating system's keychain, which this process cannot use; run "
                        "where the keychain works (with the keyring extra: pip install "
                        "'mcp-oauth2-proxy[keyring]'), or delete "
                        f"{self.marker} and log in again (the cached logins are then lost)",
                    )
                ]
            )
        for _ in range(3):
            try:
                key = self.path.read_bytes()
            except FileNotFoundError:
                candidate = write_temporary(self.path.parent, secrets.token_bytes(KEY_BYTES))
                try:
                    os.link(candidate, self.path)
                except FileExistsError:
                    pass
                finally:
                    candidate.unlink()
                continue
            if len(key) == KEY_BYTES:
                return key
            log.warning(
                "replacing a malformed token cache key; cached logins are lost",
                extra={"path": str(self.path)},
            )
            write_atomically(self.path, secrets.token_bytes(KEY_BYTES))
        return self.path.read_bytes()


class KeyringCacheKey:
    """The key in the keychain, one entry per cache directory (the account is its path).

    The key is read from the keychain once per process. A keychain that fails before it
    ever held the key falls back to a file key, with a warning; once it holds the key (the
    MARKER file says so), a failing keychain is an error that says so, since a new file key
    would lose every cached login."""

    where = "keyring"

    def __init__(self, directory: Path, backend: Keychain) -> None:
        self._directory = directory
        self._account = str(directory.resolve())
        self._backend = backend
        self._file = FileCacheKey(directory)
        self._fallen_back = False
        self._known: bytes | None = None

    def key(self) -> bytes:
        if self._known is not None:
            return self._known
        if self._fallen_back:
            return self._file.key()
        try:
            with filelock.FileLock(self._directory / "key.lock"):
                self._known = self._from_keychain()
                return self._known
        except Exception as error:  # keyring's backends raise their own kinds
            self._fallen_back = True
            log.warning(
                "the keychain failed; keeping the token cache key in a file beside the cache",
                extra={"reason": repr(error), "setting": STORE_SETTING},
            )
            return self._file.key()

    def _from_keychain(self) -> bytes:
        stored = self._backend.get_password(KEYRING_SERVICE, self._account)
        if stored is not None:
            try:
                key = base64.b64decode(stored, validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) == KEY_BYTES:
                return key
            log.warning("replacing a malformed token cache key in the keychain")
        key = self._file.existing() or secrets.token_bytes(KEY_BYTES)
        moved = self._file.existing() is not None
        encoded = base64.b64encode(key).decode("ascii")
        self._backend.set_password(KEYRING_SERVICE, self._account, encoded)
        if self._backend.get_password(KEYRING_SERVICE, self._account) != encoded:
            raise RuntimeError("the keychain did not keep the key it was given")
        self._file.marker.write_text(
            "The encryption key of this token cache is in the operating system's keychain.\n"
        )
        if moved:
            log.info(
                "moved the token cache key into the keychain; cached logins are kept",
                extra={"directory": str(self._directory)},
            )
            self._forget_file_key()
        return key

    def _forget_file_key(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file.path.unlink()


def key_location(directory: Path) -> str:
    """Where this cache's key is, seen from the directory alone (asking the keychain could
    bring up an unlock prompt; `doctor` only looks)."""
    if (directory / MARKER).exists():
        return "the operating system's keychain"
    if (directory / "key").exists():
        return "a key file beside it"
    return "nowhere yet"


def usable_keyring() -> Keychain | None:
    """The keyring backend to use, or None: not installed, or only a backend that cannot
    keep secrets (keyring's fail and null backends, or nothing with a positive priority)."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 0) <= 0:
            return None
        if type(backend).__module__.startswith("keyrings.alt"):
            return None  # plaintext or password-prompting files, not a keychain
        backend.get_password(KEYRING_SERVICE, "probe")
    except Exception as error:  # a backend that cannot even answer is no backend
        log.info("no usable keychain", extra={"reason": repr(error)})
        return None
    return backend


def cache_key(directory: Path, mode: TokenStoreMode) -> CacheKey:
    """The key source OAUTH2_TOKEN_STORE asks for; `keyring` without a usable keychain
    falls back to the file with a warning, `auto` with an info line."""
    if mode == "file":
        return FileCacheKey(directory)
    backend = usable_keyring()
    if backend is not None:
        return KeyringCacheKey(directory, backend)
    say = log.warning if mode == "keyring" else log.debug
    say(
        "no usable keychain (install the keyring extra: pip install 'mcp-oauth2-proxy[keyring]'"
        ", and on Linux run a Secret Service such as GNOME Keyring); the token cache key stays "
        "in a file beside the cache",
        extra={"setting": STORE_SETTING, "mode": mode},
    )
    return FileCacheKey(directory)
