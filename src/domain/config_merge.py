"""Merge defaults < config file < environment into one validated `ProxyConfig`.

The rules live here, apart from reading the file or the process environment, so they can be
tested with plain dictionaries. Every value remembers where it came from, so an error (and the
`config` command) can say "oauth2.callbackPort (env OAUTH2_CALLBACK_PORT)" rather than just
"invalid port".

Choices made here, documented in docs/configuration.md:
- an environment variable that is empty or only white space counts as unset (MCP hosts' config
  editors often leave `"OAUTH2_CLIENT_SECRET": ""` behind);
- unknown keys in the file are errors, so a misspelt `clientSecert` is not silently ignored;
- every problem is reported at once, each naming its field and source.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .config import ProxyConfig
from .errors import ConfigError, ConfigProblem
from .settings import SETTINGS, SETTINGS_BY_PATH, Kind, Setting

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SECTIONS = tuple(ProxyConfig.model_fields)


@dataclass(frozen=True)
class Source:
    """Where one value came from: the default, a config file, an environment variable, or
    discovery from the upstream."""

    kind: Literal["default", "file", "env", "discovery"]
    where: str = ""

    def describe(self, path: str) -> str:
        if self.kind == "env":
            return f"env {self.where}"
        if self.kind == "discovery":
            return f"discovered from {self.where}"
        if self.kind == "file":
            return f"{self.where}, key {path}"
        return "default"


DEFAULT = Source("default")


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration and the source of every value that was set explicitly."""

    config: ProxyConfig
    sources: Mapping[str, Source] = field(default_factory=dict)

    def source_of(self, path: str) -> Source:
        return self.sources.get(path, DEFAULT)


def merge_config(
    env: Mapping[str, str],
    file_document: object = None,
    file_path: str | None = None,
) -> LoadedConfig:
    """Validate the file document (already parsed JSON, or None) overlaid with `env`.

    Raises:
        ConfigError: listing every problem, each with its field and source.
    """
    problems: list[ConfigProblem] = []
    document: dict[str, Any] = {}
    sources: dict[str, Source] = {}

    if file_document is not None:
        file_source = Source("file", file_path or "config file")
        document = _file_sections(file_document, file_source, problems, sources)

    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is None or not raw.strip():
            continue
        source = Source("env", setting.env)
        try:
            value = _parse_env(setting, raw)
        except ValueError as exc:
            problems.append(ConfigProblem(setting.path, source.describe(setting.path), str(exc)))
            continue
        section = document.setdefault(setting.section, {})
        if isinstance(section, dict):
            section[setting.key] = value
            sources[setting.path] = source

    for name in _SECTIONS:
        # An absent section validates as an empty one, so a missing `upstream` is reported
        # as its missing `url`, with the variable to set.
        document.setdefault(name, {})
    reported = {problem.field for problem in problems}
    try:
        config = ProxyConfig.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as exc:
        for error in exc.errors():
            problem = _describe(error, sources)
            if problem.field not in reported:
                problems.append(problem)
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(config=config, sources=sources)


def _file_sections(
    document: object,
    source: Source,
    problems: list[ConfigProblem],
    sources: dict[str, Source],
) -> dict[str, Any]:
    if not isinstance(document, dict):
        problems.append(
            ConfigProblem("(top level)", source.where, "expected a JSON object of sections")
        )
        return {}
    sections: dict[str, Any] = {}
    for name, section in document.items():
        sources[name] = source
        if isinstance(section, dict):
            sections[name] = dict(section)
            for key in section:
                sources[f"{name}.{key}"] = source
        else:
            sections[name] = section
    return sections


def _parse_env(setting: Setting, raw: str) -> object:
    if setting.kind is Kind.BOOLEAN:
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"expected true/false, 1/0, yes/no or on/off, got {json.dumps(raw)}")
    if setting.kind is Kind.INTEGER:
        text = raw.strip()
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"expected an integer, got {json.dumps(raw)}")
        return int(text)
    if setting.kind is Kind.JSON_OBJECT:
        return _parse_json_object(raw)
    if setting.kind is Kind.CHOICE:
        return raw.strip().lower()
    if setting.kind is Kind.URL:
        return raw.strip()
    return raw


def _parse_json_object(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected a JSON object of strings, but it is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(
            f'expected a JSON object of strings such as {{"prompt": "consent"}}, '
            f"got a JSON {json_type(value)}"
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise ValueError(
                f"expected a string for key {json.dumps(key)}, got a JSON {json_type(item)}"
            )
    return value


def _as_json(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages about a JSON file."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names = {dict: "object", list: "array", str: "string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _describe(error: ErrorDetails, sources: Mapping[str, Source]) -> ConfigProblem:
    loc = [str(part) for part in error["loc"]]
    path = ".".join(loc)
    setting_path = ".".join(loc[:2])
    setting = SETTINGS_BY_PATH.get(setting_path)
    source = sources.get(setting_path) or sources.get(loc[0]) if loc else None
    where = source.describe(setting_path if len(loc) > 1 else loc[0]) if source else "not set"
    return ConfigProblem(path, where, _message(error, loc, setting))


def _message(error: ErrorDetails, loc: list[str], setting: Setting | None) -> str:
    kind = error["type"]
    shown = "" if setting is None or setting.secret else f", got {_as_json(error['input'])}"
    if kind == "missing":
        if setting is not None:
            return f'required but not set: set {setting.env} or "{setting.path}" in the config file'
        return "required but not set"
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return f"unknown section; known sections are {', '.join(_SECTIONS)}"
        known = sorted(s.key for s in SETTINGS if s.section == loc[0])
        return f"unknown key (check its spelling); known keys are {', '.join(known)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer{shown}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false{shown}"
    if kind in ("string_type",):
        return f"expected a string, got a JSON {json_type(error['input'])}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "expected a JSON object"
    if kind == "literal_error":
        expected = str((error.get("ctx") or {}).get("expected", "")).replace("'", "")
        return f"expected one of {expected}{shown}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{message[:1].lower()}{message[1:]}"
