"""Files written so that a reader sees the old content or the new, never half: the token
cache and the client registry both keep small files that several proxies may read at once."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_temporary(directory: Path, data: bytes) -> Path:
    """A new file in `directory` holding `data`, readable by its owner only (0600)."""
    descriptor, name = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:  # mkstemp creates the file readable by its owner only (0600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Path(name)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new, never half."""
    os.replace(write_temporary(path.parent, data), path)
