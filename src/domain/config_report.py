"""The effective configuration as a user reads it: every setting, its value, where the value
came from. Secrets are shown only as "set", so the report can be pasted into an issue."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import SecretStr
from pydantic.alias_generators import to_snake

from .config_merge import LoadedConfig
from .redaction import Redactor
from .settings import SETTINGS, Setting

NOT_SET = "not set"
IS_SET = "set"


@dataclass(frozen=True)
class ReportLine:
    """One setting: its file key and variable, its value as text, and its source."""

    path: str
    env: str
    value: str
    source: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.path, "env": self.env, "value": self.value, "source": self.source}


def config_report(loaded: LoadedConfig) -> list[ReportLine]:
    """Every setting of the table, in its order, whether set or defaulted."""
    return [
        ReportLine(
            setting.path,
            setting.env,
            _shown(_value(loaded, setting)),
            loaded.source_of(setting.path).describe(),
        )
        for setting in SETTINGS
    ]


def render_report(lines: list[ReportLine]) -> str:
    """Aligned columns: `key  value  (source)`."""
    key_width = max(len(line.path) for line in lines)
    value_width = min(48, max(len(line.value) for line in lines))
    return "\n".join(
        f"{line.path.ljust(key_width)}  {line.value.ljust(value_width)}  ({line.source})"
        for line in lines
    )


def _value(loaded: LoadedConfig, setting: Setting) -> object:
    # File keys are the fields' camelCase aliases (config.py); tests keep the two in step.
    return getattr(getattr(loaded.config, setting.section), to_snake(setting.key))


def _shown(value: object) -> str:
    """Secrets as "set"; anything else through the log's shape-based masking too, so a URL
    with `user:password@` or a token pasted into a text setting does not show."""
    if isinstance(value, SecretStr):
        return IS_SET if value.get_secret_value() else NOT_SET
    if value is None:
        return NOT_SET
    if isinstance(value, bool):
        return str(value).lower()
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
    return Redactor().redact(text)
