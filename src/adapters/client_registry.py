"""Dynamically registered clients on disk: one JSON file per issuer in the cache directory.

A registered public client holds no secret worth hiding (its id is sent in every browser
URL), so the file is plain JSON; it is still private to the user (0600) and written
atomically, like the token cache beside it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..domain.client_registration import RegisteredClient
from .atomic_file import write_atomically
from .stderr_log import package_logger

log = package_logger()


class FileClientRegistry:
    """The ClientRegistry port as `client-<sha256(issuer)>.json` files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self, issuer: str) -> RegisteredClient | None:
        path = self._path(issuer)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            client = RegisteredClient(
                document["issuer"],
                document["client_id"],
                document.get("client_secret"),
                document["redirect_uri"],
                document.get("auth_method", "none"),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning(
                "ignoring an unreadable client registration; registering again",
                extra={"path": str(path)},
            )
            return None
        return client if client.issuer == issuer else None

    def save(self, client: RegisteredClient) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        document = {
            "issuer": client.issuer,
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "redirect_uri": client.redirect_uri,
            "auth_method": client.auth_method,
        }
        write_atomically(self._path(client.issuer), json.dumps(document).encode())

    def forget(self, issuer: str) -> None:
        self._path(issuer).unlink(missing_ok=True)

    def _path(self, issuer: str) -> Path:
        return self.directory / f"client-{hashlib.sha256(issuer.encode()).hexdigest()}.json"
