"""Reads the JSON configuration file (MCP_PROXY_CONFIG) for the ConfigFileReader port."""

from __future__ import annotations

import json
from pathlib import Path

from ..domain.errors import ConfigError, ConfigProblem

_SETTING = "MCP_PROXY_CONFIG"


class JsonConfigFile:
    """Parses one JSON file; every failure names the file and what to do about it."""

    def read(self, path: str) -> object:
        file = Path(path).expanduser()
        try:
            text = file.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise self._problem(
                path, f"the file does not exist; fix the path or unset {_SETTING}"
            ) from None
        except IsADirectoryError:
            raise self._problem(path, "is a directory, not a JSON file") from None
        except UnicodeDecodeError:
            raise self._problem(path, "is not UTF-8 text") from None
        except OSError as exc:
            raise self._problem(path, f"cannot be read: {exc.strerror}") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._problem(
                path, f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None

    @staticmethod
    def _problem(path: str, message: str) -> ConfigError:
        return ConfigError([ConfigProblem(_SETTING, f"env {_SETTING}", f"{path} {message}")])
