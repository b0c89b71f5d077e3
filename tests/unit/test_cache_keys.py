"""The cache key in the keychain (keyring's API, with in-memory and failing backends, never
the machine's own): store, load, fallback to the file, and moving an existing file key."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

from mcp_oauth2_proxy.adapters.cache_keys import (
    KEY_BYTES,
    KEYRING_SERVICE,
    FileCacheKey,
    KeyringCacheKey,
    cache_key,
    key_location,
)
from mcp_oauth2_proxy.domain.errors import ConfigError


class MemoryKeyring(KeyringBackend):
    """A keyring backend that keeps its secrets in a dict."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.secrets[(service, username)]


class BrokenKeyring(MemoryKeyring):
    """Answers the probe, then fails: a keychain locked after the proxy started."""

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("the keychain is locked")


@pytest.fixture
def memory() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_auto_keeps_the_key_in_the_keychain_and_no_file(
    tmp_path: Path, memory: MemoryKeyring
) -> None:
    source = cache_key(tmp_path, "auto")
    assert isinstance(source, KeyringCacheKey)
    key = source.key()
    assert len(key) == KEY_BYTES
    stored = memory.secrets[(KEYRING_SERVICE, str(tmp_path.resolve()))]
    assert base64.b64decode(stored) == key
    assert not (tmp_path / "key").exists()
    assert cache_key(tmp_path, "auto").key() == key  # the next process finds the same key


def test_an_existing_file_key_is_moved_into_the_keychain(
    tmp_path: Path, memory: MemoryKeyring
) -> None:
    old = FileCacheKey(tmp_path).key()
    assert (tmp_path / "key").exists()
    assert cache_key(tmp_path, "keyring").key() == old  # logins encrypted with it still open
    assert not (tmp_path / "key").exists()
    assert base64.b64decode(memory.secrets[(KEYRING_SERVICE, str(tmp_path.resolve()))]) == old


def test_file_mode_never_touches_the_keychain(tmp_path: Path, memory: MemoryKeyring) -> None:
    source = cache_key(tmp_path, "file")
    assert isinstance(source, FileCacheKey)
    source.key()
    assert memory.secrets == {}
    assert (tmp_path / "key").exists()


def test_without_a_usable_backend_the_file_key_is_used(tmp_path: Path) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    try:
        source = cache_key(tmp_path, "keyring")
    finally:
        keyring.set_keyring(previous)
    assert isinstance(source, FileCacheKey)


def test_a_keychain_that_fails_later_falls_back_to_the_file(tmp_path: Path) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(BrokenKeyring())
    try:
        source = cache_key(tmp_path, "auto")
        key = source.key()
    finally:
        keyring.set_keyring(previous)
    assert (tmp_path / "key").read_bytes() == key
    assert source.key() == key


def test_a_malformed_keychain_entry_is_replaced(tmp_path: Path, memory: MemoryKeyring) -> None:
    memory.secrets[(KEYRING_SERVICE, str(tmp_path.resolve()))] = "not base64 !"
    key = cache_key(tmp_path, "auto").key()
    assert len(key) == KEY_BYTES
    assert base64.b64decode(memory.secrets[(KEYRING_SERVICE, str(tmp_path.resolve()))]) == key


class LockedKeyring(MemoryKeyring):
    """Held the key once; now every call fails, as a locked keychain does."""

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringLocked("the keychain is locked")


def test_once_the_key_is_in_the_keychain_no_process_makes_a_file_key(
    tmp_path: Path, memory: MemoryKeyring
) -> None:
    old = FileCacheKey(tmp_path).key()
    assert cache_key(tmp_path, "auto").key() == old
    with pytest.raises(ConfigError, match="moved into the operating system's keychain") as raised:
        cache_key(tmp_path, "file").key()
    assert "OAUTH2_TOKEN_STORE" in str(raised.value)
    assert not (tmp_path / "key").exists()
    locked = KeyringCacheKey(tmp_path, LockedKeyring())
    with pytest.raises(ConfigError, match="cannot use"):
        locked.key()
    assert not (tmp_path / "key").exists()
    assert cache_key(tmp_path, "auto").key() == old  # the logins are still readable


def test_where_the_key_is_can_be_told_without_asking_the_keychain(
    tmp_path: Path, memory: MemoryKeyring
) -> None:
    assert key_location(tmp_path) == "nowhere yet"
    FileCacheKey(tmp_path).key()
    assert key_location(tmp_path) == "a key file beside it"
    cache_key(tmp_path, "keyring").key()
    assert key_location(tmp_path) == "the operating system's keychain"
