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
                f"the file {path} does not exist; fix the path or unset {_SETTING}"
            ) from None
        except IsADirectoryError:
            raise self._problem(
                f"{path} is a directory, not a JSON file; point {_SETTING} at the JSON file"
            ) from None
        except UnicodeDecodeError:
            raise self._problem(f"the file {path} is not UTF-8 text; save it as UTF-8") from None
        except OSError as exc:
            raise self._problem(
                f"the file {path} cannot be read: {exc.strerror}; fix its permissions, or "
                f"point {_SETTING} at a file you can read"
            ) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._problem(
                f"the file {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno}; fix it there"
            ) from None

    @staticmethod
    def _problem(message: str) -> ConfigError:
        # The variable is both the setting and the source: `MCP_PROXY_CONFIG: the file ...`.
        return ConfigError([ConfigProblem(_SETTING, "", message)])
