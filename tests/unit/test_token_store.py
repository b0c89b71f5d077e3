"""The refresh-token cache: one contract run against the fake and the encrypted file store,
then what only the file store promises (permissions, encryption, corruption, two processes)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_oauth2_proxy.adapters.token_store import (
    MAGIC,
    NONCE_BYTES,
    EncryptedFileTokenStore,
    default_cache_dir,
)
from mcp_oauth2_proxy.domain.cached_login import CachedLogin, cache_key
from mcp_oauth2_proxy.domain.errors import ConfigError
from mcp_oauth2_proxy.domain.ports import TokenStore

from ..conftest import warnings
from ..fakes import FakeTokenStore

SECONDS = 5

ALICE = CachedLogin("app", "https://idp.example/token", "refresh-token-alice-0123456789", 1.5e9)
BOB = CachedLogin("other-app", "https://idp.example/token", "refresh-token-bob-9876543210", 1.6e9)


# --- the contract, against both stores ---------------------------------------------------


@pytest.fixture(params=["fake", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TokenStore:
    if request.param == "fake":
        return FakeTokenStore()
    return EncryptedFileTokenStore(tmp_path / "cache")


def test_save_then_load_round_trips(store: TokenStore) -> None:
    store.save(ALICE)
    assert store.load(ALICE.key) == ALICE


def test_save_replaces_the_entry(store: TokenStore) -> None:
    store.save(ALICE)
    rotated = CachedLogin(ALICE.client_id, ALICE.token_url, "rotated-refresh-token", 1.7e9)
    store.save(rotated)
    assert store.load(ALICE.key) == rotated


def test_load_of_a_missing_key_is_none(store: TokenStore) -> None:
    assert store.load(cache_key("nobody", "https://idp.example/token")) is None


def test_delete_is_true_once_then_false(store: TokenStore) -> None:
    store.save(ALICE)
    assert store.delete(ALICE.key) is True
    assert store.load(ALICE.key) is None
    assert store.delete(ALICE.key) is False


def test_delete_of_a_key_never_saved_is_false(store: TokenStore) -> None:
    assert store.delete(ALICE.key) is False


def test_two_keys_are_independent(store: TokenStore) -> None:
    assert ALICE.key != BOB.key
    store.save(ALICE)
    store.save(BOB)
    assert store.load(ALICE.key) == ALICE
    assert store.load(BOB.key) == BOB
    assert store.delete(ALICE.key) is True
    assert store.load(ALICE.key) is None
    assert store.load(BOB.key) == BOB


async def assert_lock_excludes(first: TokenStore, second: TokenStore, key: str) -> None:
    """While `first` holds the lock on `key`, `second` cannot take it; once released it can."""
    events: list[str] = []
    first_holds = anyio.Event()
    release = anyio.Event()

    async def hold() -> None:
        async with first.locked(key):
            events.append("first in")
            first_holds.set()
            await release.wait()
            events.append("first out")

    async def wait_then_take() -> None:
        await first_holds.wait()
        events.append("second waiting")
        async with second.locked(key):
            events.append("second in")

    with anyio.fail_after(SECONDS):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hold)
            tasks.start_soon(wait_then_take)
            await first_holds.wait()
            # Every task is now parked: the second one inside its acquire.
            await anyio.wait_all_tasks_blocked()
            assert events == ["first in", "second waiting"]
            release.set()
    assert events == ["first in", "second waiting", "first out", "second in"]


@pytest.mark.anyio
async def test_locked_excludes_a_second_holder_of_the_same_key(store: TokenStore) -> None:
    await assert_lock_excludes(store, store, ALICE.key)


@pytest.mark.anyio
async def test_locked_can_be_taken_again_after_release(store: TokenStore) -> None:
    with anyio.fail_after(SECONDS):
        async with store.locked(ALICE.key):
            pass
        async with store.locked(ALICE.key):
            store.save(ALICE)
    assert store.load(ALICE.key) == ALICE


@pytest.mark.anyio
async def test_locked_is_released_when_the_holder_fails(store: TokenStore) -> None:
    with pytest.raises(RuntimeError, match="login failed"):
        await fail_while_holding(store, ALICE.key)
    with anyio.fail_after(SECONDS):
        async with store.locked(ALICE.key):
            store.save(ALICE)
    assert store.load(ALICE.key) == ALICE


async def fail_while_holding(store: TokenStore, key: str) -> None:
    async with store.locked(key):
        raise RuntimeError("login failed")


@pytest.mark.anyio
async def test_different_keys_do_not_block_each_other(store: TokenStore) -> None:
    second_took_its_lock = anyio.Event()

    async def hold_alice_until_bob_is_taken() -> None:
        async with store.locked(ALICE.key):
            await second_took_its_lock.wait()

    async def take_bob() -> None:
        async with store.locked(BOB.key):
            second_took_its_lock.set()

    # If the locks were shared, the first task would wait forever: fail_after turns that
    # deadlock into a failure.
    with anyio.fail_after(SECONDS):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hold_alice_until_bob_is_taken)
            tasks.start_soon(take_bob)
    assert second_took_its_lock.is_set()


# --- the file store only -----------------------------------------------------------------


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "cache"


@pytest.fixture
def file_store(directory: Path) -> EncryptedFileTokenStore:
    return EncryptedFileTokenStore(directory)


def entry(directory: Path, login: CachedLogin) -> Path:
    return directory / f"{login.key}.token"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_directory_is_0700_and_files_are_0600(
    file_store: EncryptedFileTokenStore, directory: Path
) -> None:
    file_store.save(ALICE)
    assert mode(directory) == 0o700
    assert mode(directory / "key") == 0o600
    assert mode(entry(directory, ALICE)) == 0o600


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_rewritten_entry_stays_0600(file_store: EncryptedFileTokenStore, directory: Path) -> None:
    file_store.save(ALICE)
    file_store.save(CachedLogin(ALICE.client_id, ALICE.token_url, "rotated", 1.7e9))
    assert mode(entry(directory, ALICE)) == 0o600


def test_entry_file_is_one_per_configuration_named_by_the_key(
    file_store: EncryptedFileTokenStore, directory: Path
) -> None:
    file_store.save(ALICE)
    file_store.save(BOB)
    assert entry(directory, ALICE).is_file()
    assert entry(directory, BOB).is_file()
    assert ALICE.key == cache_key("app", "https://idp.example/token")


def test_entry_does_not_hold_the_refresh_token_in_clear(
    file_store: EncryptedFileTokenStore, directory: Path
) -> None:
    file_store.save(ALICE)
    data = entry(directory, ALICE).read_bytes()
    assert data.startswith(MAGIC)
    assert ALICE.refresh_token.encode() not in data
    assert b"refresh" not in data
    assert ALICE.client_id.encode() not in data
    assert ALICE.refresh_token.encode() not in (directory / "key").read_bytes()


def test_every_save_uses_a_fresh_nonce(
    file_store: EncryptedFileTokenStore, directory: Path
) -> None:
    file_store.save(ALICE)
    first = entry(directory, ALICE).read_bytes()
    file_store.save(ALICE)
    second = entry(directory, ALICE).read_bytes()
    assert (
        first[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        != second[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    )
    assert file_store.load(ALICE.key) == ALICE


def test_no_temporary_files_are_left_after_save(
    file_store: EncryptedFileTokenStore, directory: Path
) -> None:
    file_store.save(ALICE)
    file_store.save(BOB)
    file_store.save(ALICE)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["key", f"{ALICE.key}.token", f"{BOB.key}.token"]
    )


def truncate_inside_the_ciphertext(data: bytes) -> bytes:
    return data[:-1]


def truncate_inside_the_nonce(data: bytes) -> bytes:
    return data[: len(MAGIC) + 5]


def keep_only_the_magic(data: bytes) -> bytes:
    return MAGIC


def wrong_magic(data: bytes) -> bytes:
    return b"XXXX" + data[len(MAGIC) :]


def flip_a_ciphertext_bit(data: bytes) -> bytes:
    return data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:]


def random_garbage(data: bytes) -> bytes:
    return os.urandom(len(data))


def empty(data: bytes) -> bytes:
    return b""


def plain_json(data: bytes) -> bytes:
    return ALICE.to_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        truncate_inside_the_ciphertext,
        truncate_inside_the_nonce,
        keep_only_the_magic,
        wrong_magic,
        flip_a_ciphertext_bit,
        random_garbage,
        empty,
        plain_json,
    ],
)
def test_damaged_entry_is_ignored_with_a_warning(
    file_store: EncryptedFileTokenStore,
    directory: Path,
    caplog_warnings: pytest.LogCaptureFixture,
    damage: Callable[[bytes], bytes],
) -> None:
    file_store.save(ALICE)
    path = entry(directory, ALICE)
    path.write_bytes(damage(path.read_bytes()))
    assert file_store.load(ALICE.key) is None
    assert len(warnings(caplog_warnings)) == 1
    assert ALICE.refresh_token not in caplog_warnings.text


def test_entry_under_a_different_key_file_is_ignored_with_a_warning(
    file_store: EncryptedFileTokenStore,
    directory: Path,
    caplog_warnings: pytest.LogCaptureFixture,
) -> None:
    file_store.save(ALICE)
    (directory / "key").write_bytes(os.urandom(32))
    assert file_store.load(ALICE.key) is None
    assert len(warnings(caplog_warnings)) == 1


def test_entry_copied_to_another_keys_file_is_ignored_with_a_warning(
    file_store: EncryptedFileTokenStore,
    directory: Path,
    caplog_warnings: pytest.LogCaptureFixture,
) -> None:
    file_store.save(ALICE)
    entry(directory, BOB).write_bytes(entry(directory, ALICE).read_bytes())
    assert file_store.load(BOB.key) is None
    assert len(warnings(caplog_warnings)) == 1
    assert file_store.load(ALICE.key) == ALICE  # the original is untouched


def test_entry_sealed_for_another_configuration_is_ignored_with_a_warning(
    file_store: EncryptedFileTokenStore,
    directory: Path,
    caplog_warnings: pytest.LogCaptureFixture,
) -> None:
    # Correctly sealed under BOB's name (so it decrypts), but it holds ALICE's login.
    file_store.save(BOB)
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM((directory / "key").read_bytes()).encrypt(
        nonce, ALICE.to_bytes(), BOB.key.encode()
    )
    entry(directory, BOB).write_bytes(MAGIC + nonce + sealed)
    assert file_store.load(BOB.key) is None
    assert len(warnings(caplog_warnings)) == 1


def test_unreadable_entry_is_ignored_with_a_warning(
    file_store: EncryptedFileTokenStore,
    directory: Path,
    caplog_warnings: pytest.LogCaptureFixture,
) -> None:
    # A directory where the file should be: reading it fails with an OSError.
    directory.mkdir(parents=True)
    entry(directory, ALICE).mkdir()
    assert file_store.load(ALICE.key) is None
    assert len(warnings(caplog_warnings)) == 1


def test_a_damaged_entry_is_replaced_by_the_next_save(
    file_store: EncryptedFileTokenStore, directory: Path
) -> None:
    file_store.save(ALICE)
    entry(directory, ALICE).write_bytes(b"garbage")
    file_store.save(ALICE)
    assert file_store.load(ALICE.key) == ALICE


def test_two_stores_on_one_directory_share_entries(directory: Path) -> None:
    one, two = EncryptedFileTokenStore(directory), EncryptedFileTokenStore(directory)
    one.save(ALICE)
    assert two.load(ALICE.key) == ALICE
    two.save(BOB)
    assert one.load(BOB.key) == BOB


def test_two_stores_creating_the_key_at_once_agree_on_one(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As two processes would: the second creates and links its key while the first is
    between writing its candidate key and linking it into place."""
    one, two = EncryptedFileTokenStore(directory), EncryptedFileTokenStore(directory)
    real_link = os.link
    interleaved: list[bool] = []

    def link_after_the_other_process(source: str | Path, target: str | Path) -> None:
        if not interleaved:
            interleaved.append(True)
            two.save(BOB)  # the other process creates its key (and an entry) first
        real_link(source, target)

    monkeypatch.setattr(os, "link", link_after_the_other_process)
    one.save(ALICE)
    monkeypatch.undo()

    assert interleaved == [True]
    key = (directory / "key").read_bytes()
    assert len(key) == 32
    for store in (one, two, EncryptedFileTokenStore(directory)):
        assert store.load(ALICE.key) == ALICE
        assert store.load(BOB.key) == BOB
    assert (directory / "key").read_bytes() == key
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["key", f"{ALICE.key}.token", f"{BOB.key}.token"]
    )


@pytest.mark.anyio
async def test_lock_excludes_across_two_stores_on_one_directory(directory: Path) -> None:
    one, two = EncryptedFileTokenStore(directory), EncryptedFileTokenStore(directory)
    await assert_lock_excludes(one, two, ALICE.key)


@pytest.mark.anyio
async def test_lock_on_another_key_is_free_across_two_stores(directory: Path) -> None:
    one, two = EncryptedFileTokenStore(directory), EncryptedFileTokenStore(directory)
    with anyio.fail_after(SECONDS):
        async with one.locked(ALICE.key), two.locked(BOB.key):
            two.save(BOB)
    assert one.load(BOB.key) == BOB


def test_cached_login_repr_hides_the_refresh_token() -> None:
    assert ALICE.refresh_token not in repr(ALICE)
    assert ALICE.refresh_token not in str(ALICE)


# --- where the cache lives ---------------------------------------------------------------


def test_default_cache_dir_is_named_after_the_proxy() -> None:
    assert default_cache_dir().name == "mcp-oauth2-proxy"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG is the Linux rule")
def test_default_cache_dir_honours_xdg_config_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mcp-oauth2-proxy"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG is the Linux rule")
def test_default_cache_dir_falls_back_to_dot_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".config" / "mcp-oauth2-proxy"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_an_existing_open_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    EncryptedFileTokenStore(directory).save(CachedLogin("app", "https://i/t", "rt", 1.0))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


# --- a directory that cannot be used ----------------------------------------------------


def unusable_directory(tmp_path: Path) -> Path:
    """Below a regular file: no user, root included, can create it."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    return blocker / "cache"


@pytest.mark.anyio
async def test_an_unusable_directory_is_a_config_error_naming_the_setting(
    tmp_path: Path,
) -> None:
    directory = unusable_directory(tmp_path)
    store = EncryptedFileTokenStore(directory, source="env OAUTH2_TOKEN_CACHE_DIR")

    with pytest.raises(ConfigError) as saving:
        store.save(ALICE)
    with pytest.raises(ConfigError) as locking:
        async with store.locked(ALICE.key):
            pass

    for caught in (saving, locking):
        (problem,) = caught.value.problems
        assert str(problem) == (
            "oauth2.tokenCacheDir / OAUTH2_TOKEN_CACHE_DIR (env OAUTH2_TOKEN_CACHE_DIR): "
            f"cannot use the token cache directory {directory}: Not a directory; set it to a "
            "directory you can write, or fix its permissions"
        )
    assert store.load(ALICE.key) is None  # reading finds nothing, and says so by returning


def test_the_default_directory_says_it_is_the_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        EncryptedFileTokenStore(unusable_directory(tmp_path)).save(ALICE)
    assert caught.value.problems[0].source == "default"
    assert ALICE.refresh_token not in str(caught.value)
