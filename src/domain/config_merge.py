"""Merge defaults < config file < environment into one validated `ProxyConfig`.

The rules live here, apart from reading the file or the process environment, so they can be
tested with plain dictionaries. Every value remembers where it came from, so an error (and the
`config` command) can say "oauth2.callbackPort / OAUTH2_CALLBACK_PORT (env OAUTH2_CALLBACK_PORT)"
rather than just "invalid port".

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
from .settings import CONFIG_FILE_ENV, SETTINGS, SETTINGS_BY_PATH, Kind, Setting

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

    def describe(self) -> str:
        """`env OAUTH2_SCOPE`, `file /etc/proxy.json`, `discovered from <issuer>` or
        `default`; the setting itself is named beside it, so the key is not repeated."""
        if self.kind == "env":
            return f"env {self.where}"
        if self.kind == "discovery":
            return f"discovered from {self.where}"
        if self.kind == "file":
            return f"file {self.where}"
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
            problems.append(ConfigProblem(setting.names(), source.describe(), str(exc)))
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
            ConfigProblem(
                CONFIG_FILE_ENV,
                source.describe(),
                "expected a JSON object of sections such as "
                f'{{"upstream": {{"url": "https://host/mcp"}}}}, got a JSON {json_type(document)}',
            )
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


def _unquoted(value: object, kind: Kind) -> str:
    """The hint for a number or a boolean written as a JSON string in the file ("8080")."""
    if not isinstance(value, str):
        return ""
    word = value.strip().lower()
    if kind is Kind.INTEGER and _INTEGER.fullmatch(word):
        return f"; write it without quotes: {int(word)}"
    if kind is Kind.BOOLEAN and word in ("true", "false"):
        return f"; write it without quotes: {word}"
    return ""


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
    setting_path = ".".join(loc[:2])
    setting = SETTINGS_BY_PATH.get(setting_path)
    source = (sources.get(setting_path) or sources.get(loc[0])) if loc else None
    label = setting.names() if setting is not None else ".".join(loc)
    message = _message(error, loc, setting)
    if setting is not None and len(loc) > 2 and error["type"] != "string_type":
        message = f"key {json.dumps('.'.join(loc[2:]))}: {message}"
    return ConfigProblem(label, source.describe() if source else "", message)


def _message(error: ErrorDetails, loc: list[str], setting: Setting | None) -> str:
    kind = error["type"]
    shown = "" if setting is None or setting.secret else f", got {_as_json(error['input'])}"
    if kind == "missing":
        if setting is not None:
            return f"required but not set; {setting.how_to_set()}"
        return "required but not set"
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return f"unknown section; known sections are {', '.join(_SECTIONS)}"
        known = sorted(s.key for s in SETTINGS if s.section == loc[0])
        return f"unknown key (check its spelling); known keys are {', '.join(known)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        hint = _unquoted(error["input"], Kind.INTEGER) if shown else ""
        return f"expected an integer{shown}{hint}"
    if kind in ("bool_type", "bool_parsing"):
        hint = _unquoted(error["input"], Kind.BOOLEAN) if shown else ""
        return f"expected true or false{shown}{hint}"
    if kind in ("string_type",):
        key = f" for key {json.dumps(loc[2])}" if len(loc) > 2 else ""
        return f"expected a string{key}, got a JSON {json_type(error['input'])}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "expected a JSON object"
    if kind == "literal_error":
        expected = str((error.get("ctx") or {}).get("expected", "")).replace("'", "")
        return f"expected one of {expected}{shown}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{message[:1].lower()}{message[1:]}"
