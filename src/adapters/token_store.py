"""The refresh-token cache on disk: AES-256-GCM files beside a random key file.

Layout of the directory (0700): `key` (32 random bytes, 0600) and one `<sha256>.token` per
configuration (0600), each `MOP1 | 12-byte nonce | ciphertext`, with the entry's key as the
associated data so a file copied under another name does not decrypt. Writes go to a
temporary file that is renamed into place, so a reader never sees half a file.

The key lives beside the tokens so a relaunch needs no password: this keeps tokens from
casual reads (backups, a shared screen, a grep), not from another program running as the same
OS user. docs/token-cache.md says so too.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import filelock
import platformdirs

from ..domain.cached_login import CachedLogin
from ..domain.errors import ConfigError, ConfigProblem
from ..domain.settings import SETTINGS_BY_PATH
from .atomic_file import write_atomically
from .cache_keys import CacheKey, FileCacheKey
from .stderr_log import package_logger

log = package_logger()

APP_NAME = "mcp-oauth2-proxy"
MAGIC = b"MOP1"
NONCE_BYTES = 12
LOCK_POLL_SECONDS = 0.05


def default_cache_dir() -> Path:
    """%APPDATA%\\mcp-oauth2-proxy, ~/Library/Application Support/mcp-oauth2-proxy, or
    ${XDG_CONFIG_HOME:-~/.config}/mcp-oauth2-proxy."""
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False, roaming=True))


class EncryptedFileTokenStore:
    """The TokenStore port on the local disk, with filelock for the cross-process lock.

    `source` says where the directory came from (`env OAUTH2_TOKEN_CACHE_DIR`, a file, or
    `default`), for the message when it cannot be used.
    """

    def __init__(
        self, directory: Path, *, source: str = "default", keys: CacheKey | None = None
    ) -> None:
        self.directory = directory
        self.source = source
        self._keys = keys if keys is not None else FileCacheKey(directory)

    @asynccontextmanager
    async def locked(self, key: str) -> AsyncIterator[None]:
        self._ensure_directory()
        lock = filelock.FileLock(self.directory / f"{key}.lock")
        # Polled, not blocking: a blocking acquire in a thread could not be cancelled, and
        # the holder may be another process's browser login that takes minutes.
        while True:
            try:
                with self._usable_directory():
                    lock.acquire(timeout=0)
                break
            except filelock.Timeout:
                await anyio.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            lock.release()

    def load(self, key: str) -> CachedLogin | None:
        path = self._entry(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning(
                "ignoring an unreadable token cache file",
                extra={"path": str(path), "reason": error.strerror},
            )
            return None
        # Imported here: a proxy that never reads or writes a login (client credentials, the
        # 2026 demo) does not pay for loading cryptography at startup (docs/performance.md).
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            if not data.startswith(MAGIC) or len(data) <= len(MAGIC) + NONCE_BYTES:
                raise ValueError("not a token cache file")
            nonce = data[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
            plain = AESGCM(self._key()).decrypt(
                nonce, data[len(MAGIC) + NONCE_BYTES :], key.encode()
            )
            login = CachedLogin.from_bytes(plain)
        except (InvalidTag, ValueError) as error:
            reason = "wrong key or tampered" if isinstance(error, InvalidTag) else str(error)
            log.warning(
                "ignoring a corrupt token cache file; the next login will replace it",
                extra={"path": str(path), "reason": reason},
            )
            return None
        if login.key != key:
            log.warning(
                "ignoring a token cache file saved for another configuration",
                extra={"path": str(path)},
            )
            return None
        return login

    def save(self, login: CachedLogin) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._ensure_directory()
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self._key()).encrypt(nonce, login.to_bytes(), login.key.encode())
        with self._usable_directory():
            write_atomically(self._entry(login.key), MAGIC + nonce + sealed)

    def delete(self, key: str) -> bool:
        try:
            self._entry(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def _entry(self, key: str) -> Path:
        return self.directory / f"{key}.token"

    def _ensure_directory(self) -> None:
        with self._usable_directory():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.name != "nt" and stat.S_IMODE(self.directory.stat().st_mode) & 0o077:
                # An existing directory (OAUTH2_TOKEN_CACHE_DIR) readable by others: tighten it.
                self.directory.chmod(0o700)

    @contextmanager
    def _usable_directory(self) -> Iterator[None]:
        """A directory that cannot be created or written (a path under /proc, a read-only
        mount, another user's directory) is a setting to fix, not a crash: ConfigError."""
        try:
            yield
        except filelock.Timeout:
            raise  # an OSError too, but only another holder of the lock
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(
                [
                    ConfigProblem(
                        SETTINGS_BY_PATH["oauth2.tokenCacheDir"].names(),
                        self.source,
                        f"cannot use the token cache directory {self.directory}: {reason}; "
                        "set it to a directory you can write, or fix its permissions",
                    )
                ]
            ) from error

    def _key(self) -> bytes:
        """The cache key, from the file beside the cache or the keychain (`cache_keys`),
        created on first use."""
        self._ensure_directory()
        with self._usable_directory():
            return self._keys.key()
