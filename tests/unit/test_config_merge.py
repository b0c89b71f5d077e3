"""Merging defaults < config file < environment, and the problems a bad value produces."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from mcp_oauth2_proxy.domain.config import RESERVED_PARAMS, ProxyConfig
from mcp_oauth2_proxy.domain.config_merge import LoadedConfig, Source, merge_config
from mcp_oauth2_proxy.domain.errors import ConfigError, ConfigProblem
from mcp_oauth2_proxy.domain.settings import SETTINGS, SETTINGS_BY_PATH, Kind, Setting

FILE = "/home/me/.config/proxy.json"
UPSTREAM = "https://mcp.example.com/mcp"
BASE_ENV = {"UPSTREAM_URL": UPSTREAM}

# Where each environment variable lands, written out from DESIGN §3.3 rather than derived from
# the settings table, so a mapping that drifts from the design fails here.
FIELD_OF_ENV: dict[str, tuple[str, str]] = {
    "UPSTREAM_URL": ("upstream", "url"),
    "UPSTREAM_TIMEOUT_MS": ("upstream", "timeout_ms"),
    "UPSTREAM_MAX_IN_FLIGHT": ("upstream", "max_in_flight"),
    "UPSTREAM_MAX_MESSAGE_BYTES": ("upstream", "max_message_bytes"),
    "UPSTREAM_OPEN_SERVER_STREAM": ("upstream", "open_server_stream"),
    "UPSTREAM_PROTOCOL_VERSION": ("upstream", "protocol_version"),
    "UPSTREAM_TRANSPORT": ("upstream", "transport"),
    "OAUTH2_GRANT": ("oauth2", "grant"),
    "OAUTH2_TOKEN_URL": ("oauth2", "token_url"),
    "OAUTH2_CLIENT_ID": ("oauth2", "client_id"),
    "OAUTH2_CLIENT_SECRET": ("oauth2", "client_secret"),
    "OAUTH2_SCOPE": ("oauth2", "scope"),
    "OAUTH2_AUDIENCE": ("oauth2", "audience"),
    "OAUTH2_RESOURCE": ("oauth2", "resource"),
    "OAUTH2_AUTH_STYLE": ("oauth2", "auth_style"),
    "OAUTH2_REFRESH_SKEW_SECONDS": ("oauth2", "refresh_skew_seconds"),
    "OAUTH2_EXTRA_PARAMS": ("oauth2", "extra_params"),
    "OAUTH2_REFRESH_TOKEN": ("oauth2", "refresh_token"),
    "OAUTH2_AUTHORIZATION_CODE": ("oauth2", "authorization_code"),
    "OAUTH2_AUTHORIZATION_URL": ("oauth2", "authorization_url"),
    "OAUTH2_CODE_VERIFIER": ("oauth2", "code_verifier"),
    "OAUTH2_REDIRECT_URI": ("oauth2", "redirect_uri"),
    "OAUTH2_INTERACTIVE": ("oauth2", "interactive"),
    "OAUTH2_CALLBACK_HOST": ("oauth2", "callback_host"),
    "OAUTH2_CALLBACK_PORT": ("oauth2", "callback_port"),
    "OAUTH2_CALLBACK_TIMEOUT_SECONDS": ("oauth2", "callback_timeout_seconds"),
    "OAUTH2_TOKEN_CACHE_DIR": ("oauth2", "token_cache_dir"),
    "OAUTH2_USERNAME": ("oauth2", "username"),
    "OAUTH2_PASSWORD": ("oauth2", "password"),
    "OAUTH2_ASSUME_PKCE": ("oauth2", "assume_pkce"),
    "OAUTH2_CLIENT_METADATA_URL": ("oauth2", "client_metadata_url"),
    "OAUTH2_DEVICE_AUTHORIZATION_URL": ("oauth2", "device_authorization_url"),
    "OAUTH2_CLIENT_ASSERTION_KEY_FILE": ("oauth2", "client_assertion_key_file"),
    "OAUTH2_CLIENT_ASSERTION_ALG": ("oauth2", "client_assertion_alg"),
    "OAUTH2_CLIENT_ASSERTION_KID": ("oauth2", "client_assertion_kid"),
    "OAUTH2_TOKEN_COMMAND": ("oauth2", "token_command"),
    "OAUTH2_TOKEN_STORE": ("oauth2", "token_store"),
    "DISCOVERY_ENABLED": ("discovery", "enabled"),
    "LOG_LEVEL": ("log", "level"),
    "ALLOW_INSECURE_HTTP": ("security", "allow_insecure_http"),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "oauth2.grant": (
        "client_credentials",
        "refresh_token",
        "authorization_code",
        "device_code",
        "password",
    ),
    "oauth2.authStyle": ("body", "header", "private_key_jwt"),
    "oauth2.clientAssertionAlg": ("RS256", "ES256"),
    "oauth2.tokenStore": ("auto", "file", "keyring"),
    "upstream.transport": ("auto", "streamable-http", "sse"),
    "log.level": ("trace", "debug", "info", "warn", "error", "fatal"),
}

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
BOOLEAN_SETTINGS = [s for s in SETTINGS if s.kind is Kind.BOOLEAN]
INTEGER_SETTINGS = [s for s in SETTINGS if s.kind is Kind.INTEGER]
SECRET_SETTINGS = [s for s in SETTINGS if s.kind is Kind.SECRET]


@dataclass(frozen=True)
class Sample:
    """One valid value of a setting, as the file holds it, as the environment spells it, and
    as it lands in the ProxyConfig (secrets unwrapped)."""

    file_value: object
    env_text: str
    expected: object


def _ids(setting: Setting) -> str:
    return setting.env


def field_value(config: ProxyConfig, setting: Setting) -> object:
    section, attribute = FIELD_OF_ENV[setting.env]
    value: object = getattr(getattr(config, section), attribute)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def sample_pair(setting: Setting) -> tuple[Sample, Sample]:
    """Two different valid values of `setting`, chosen by its kind."""
    if setting.kind is Kind.URL:
        file_url, env_url = "https://file.example.com/a", "https://env.example.com/b"
        return Sample(file_url, file_url, file_url), Sample(env_url, env_url, env_url)
    if setting.kind is Kind.INTEGER:
        return Sample(2048, "2048", 2048), Sample(4242, "4242", 4242)
    if setting.kind is Kind.BOOLEAN:
        return Sample(False, "false", False), Sample(True, "true", True)
    if setting.kind is Kind.CHOICE:
        first, second = CHOICES[setting.path][:2]
        return Sample(first, first, first), Sample(second, second, second)
    if setting.kind is Kind.JSON_OBJECT:
        return (
            Sample({"prompt": "login"}, '{"prompt": "login"}', {"prompt": "login"}),
            Sample({"prompt": "consent"}, '{"prompt": "consent"}', {"prompt": "consent"}),
        )
    return Sample("from-file", "from-file", "from-file"), Sample("from-env", "from-env", "from-env")


def file_with(setting: Setting, value: object) -> dict[str, dict[str, object]]:
    document: dict[str, dict[str, object]] = {"upstream": {"url": UPSTREAM}}
    document.setdefault(setting.section, {})[setting.key] = value
    return document


def problems_of(caught: pytest.ExceptionInfo[ConfigError]) -> dict[str, ConfigProblem]:
    """The problems by dotted key: a known setting's field is `key / VARIABLE`."""
    return {problem.field.split(" / ")[0]: problem for problem in caught.value.problems}


def names(path: str) -> str:
    """How a problem names the setting at `path`: both spellings when it is a known one."""
    setting = SETTINGS_BY_PATH.get(path)
    return setting.names() if setting is not None else path


# --- the mapping table itself ------------------------------------------------------------


def test_every_setting_has_an_expected_field_and_a_sample() -> None:
    assert set(FIELD_OF_ENV) == {setting.env for setting in SETTINGS}
    assert {s.path for s in SETTINGS if s.kind is Kind.CHOICE} == set(CHOICES)
    for setting in SETTINGS:
        file_sample, env_sample = sample_pair(setting)
        assert file_sample.env_text != env_sample.env_text


# --- defaults ------------------------------------------------------------------------------


def test_defaults_from_design() -> None:
    loaded = merge_config(BASE_ENV)
    config = loaded.config

    assert config.upstream.timeout_ms == 300_000
    assert config.upstream.open_server_stream is True
    assert config.upstream.protocol_version is None
    assert config.oauth2.grant == "authorization_code"
    assert config.oauth2.auth_style == "body"
    assert config.oauth2.refresh_skew_seconds == 30
    assert config.oauth2.extra_params == {}
    assert config.oauth2.interactive is True
    assert config.oauth2.callback_host == "127.0.0.1"
    assert config.oauth2.callback_port == 53682
    assert config.oauth2.callback_timeout_seconds == 300
    assert config.oauth2.client_secret is None
    assert config.discovery.enabled is True
    assert config.log.level == "info"
    assert config.security.allow_insecure_http is False


def test_unset_values_have_the_default_source() -> None:
    loaded = merge_config(BASE_ENV)

    assert dict(loaded.sources) == {"upstream.url": Source("env", "UPSTREAM_URL")}
    assert loaded.source_of("upstream.timeoutMs") == Source("default")
    assert loaded.source_of("upstream.timeoutMs").describe() == "default"


def test_missing_upstream_url_names_both_spellings() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({})

    (problem,) = caught.value.problems
    assert problem.field == "upstream.url / UPSTREAM_URL"
    assert problem.source == ""
    assert str(problem) == (
        "upstream.url / UPSTREAM_URL: required but not set; set UPSTREAM_URL, or "
        '"upstream.url" in the JSON file MCP_PROXY_CONFIG names'
    )


def test_file_values_replace_defaults_and_remember_the_file() -> None:
    document = {
        "upstream": {"url": UPSTREAM, "timeoutMs": 1000, "openServerStream": False},
        "oauth2": {"callbackPort": 8000, "authStyle": "header"},
        "log": {"level": "debug"},
    }

    loaded = merge_config({}, document, FILE)

    assert loaded.config.upstream.timeout_ms == 1000
    assert loaded.config.upstream.open_server_stream is False
    assert loaded.config.oauth2.callback_port == 8000
    assert loaded.config.oauth2.auth_style == "header"
    assert loaded.config.log.level == "debug"
    assert loaded.config.oauth2.callback_host == "127.0.0.1"
    assert loaded.source_of("oauth2.callbackPort") == Source("file", FILE)
    assert loaded.source_of("oauth2.callbackPort").describe() == f"file {FILE}"
    assert loaded.source_of("oauth2.callbackHost") == Source("default")


def test_file_without_a_path_still_has_a_source() -> None:
    loaded = merge_config({}, {"upstream": {"url": UPSTREAM}})

    assert loaded.source_of("upstream.url").kind == "file"
    assert loaded.source_of("upstream.url").where != ""


# --- precedence, per setting -----------------------------------------------------------------


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_file_beats_default(setting: Setting) -> None:
    file_sample = sample_pair(setting)[0]

    loaded = merge_config({}, file_with(setting, file_sample.file_value), FILE)

    assert field_value(loaded.config, setting) == file_sample.expected
    assert loaded.source_of(setting.path) == Source("file", FILE)


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_env_beats_file(setting: Setting) -> None:
    file_sample, env_sample = sample_pair(setting)
    env = {**BASE_ENV, setting.env: env_sample.env_text}

    loaded = merge_config(env, file_with(setting, file_sample.file_value), FILE)

    assert field_value(loaded.config, setting) == env_sample.expected
    assert field_value(loaded.config, setting) != file_sample.expected
    assert loaded.source_of(setting.path) == Source("env", setting.env)


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_empty_env_counts_as_unset(setting: Setting) -> None:
    file_sample = sample_pair(setting)[0]
    env = {**BASE_ENV, setting.env: ""}

    loaded = merge_config(env, file_with(setting, file_sample.file_value), FILE)

    assert field_value(loaded.config, setting) == file_sample.expected
    assert loaded.source_of(setting.path) == Source("file", FILE)


# --- every env var's mapping -----------------------------------------------------------------


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_env_var_lands_at_its_field(setting: Setting) -> None:
    env_sample = sample_pair(setting)[1]
    env = {**BASE_ENV, setting.env: env_sample.env_text}

    loaded = merge_config(env)

    assert field_value(loaded.config, setting) == env_sample.expected
    assert loaded.source_of(setting.path) == Source("env", setting.env)
    assert loaded.source_of(setting.path).describe() == f"env {setting.env}"
    assert set(loaded.sources) == {"upstream.url", setting.path}


@pytest.mark.parametrize("setting", SECRET_SETTINGS, ids=_ids)
def test_secret_env_vars_become_secret_strings(setting: Setting) -> None:
    loaded = merge_config({**BASE_ENV, setting.env: "s3cr3t-value"})

    section, attribute = FIELD_OF_ENV[setting.env]
    value = getattr(getattr(loaded.config, section), attribute)
    assert isinstance(value, SecretStr)
    assert "s3cr3t-value" not in repr(loaded.config)
    assert "s3cr3t-value" in loaded.config.secrets()


@pytest.mark.parametrize(
    ("env", "path", "expected"),
    [
        ({"UPSTREAM_URL": "  https://mcp.example.com/mcp \n"}, "upstream.url", UPSTREAM),
        ({"OAUTH2_GRANT": " Client_Credentials "}, "oauth2.grant", "client_credentials"),
        ({"OAUTH2_AUTH_STYLE": "HEADER"}, "oauth2.authStyle", "header"),
        ({"LOG_LEVEL": "Warn"}, "log.level", "warn"),
    ],
)
def test_urls_and_choices_from_env_are_normalised(
    env: dict[str, str], path: str, expected: str
) -> None:
    loaded = merge_config({**BASE_ENV, **env})

    assert field_value(loaded.config, SETTINGS_BY_PATH[path]) == expected


def test_invalid_choice_from_env_names_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({**BASE_ENV, "OAUTH2_GRANT": "implicit"})

    problem = problems_of(caught)["oauth2.grant"]
    assert problem.source == "env OAUTH2_GRANT"
    assert '"implicit"' in problem.message
    assert "client_credentials" in problem.message


# --- strict booleans ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spell", [str.lower, str.upper, str.title], ids=["lower", "upper", "title"]
)
@pytest.mark.parametrize(
    ("word", "expected"),
    [(w, True) for w in TRUE_WORDS] + [(w, False) for w in FALSE_WORDS],
)
def test_boolean_words_are_accepted_in_any_case(
    word: str, expected: bool, spell: Callable[[str], str]
) -> None:
    text = spell(word)
    for setting in BOOLEAN_SETTINGS:
        loaded = merge_config({**BASE_ENV, setting.env: text})
        assert field_value(loaded.config, setting) is expected, (setting.env, text)


def test_boolean_surrounding_whitespace_is_ignored() -> None:
    loaded = merge_config({**BASE_ENV, "DISCOVERY_ENABLED": " off\n"})

    assert loaded.config.discovery.enabled is False


@pytest.mark.parametrize("text", ["maybe", "2", "-1", "tru", "y", "n"])
@pytest.mark.parametrize("setting", BOOLEAN_SETTINGS, ids=_ids)
def test_other_boolean_text_is_an_error_not_false(setting: Setting, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({**BASE_ENV, setting.env: text})

    (problem,) = caught.value.problems
    assert problem.field == setting.names()
    assert problem.source == f"env {setting.env}"
    assert json.dumps(text) in problem.message
    assert "yes/no" in problem.message


@pytest.mark.parametrize("setting", BOOLEAN_SETTINGS, ids=_ids)
def test_empty_boolean_env_keeps_the_default(setting: Setting) -> None:
    with_empty = merge_config({**BASE_ENV, setting.env: ""})
    without = merge_config(BASE_ENV)

    assert field_value(with_empty.config, setting) == field_value(without.config, setting)
    assert with_empty.source_of(setting.path) == Source("default")


# --- strict integers ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["abc", "1.5", "1e3", "0x10", "4_2", "", "42abc", "--1"])
@pytest.mark.parametrize("setting", INTEGER_SETTINGS, ids=_ids)
def test_non_integer_text_is_rejected(setting: Setting, text: str) -> None:
    env = {**BASE_ENV, setting.env: text}
    if text == "":
        # The empty string is "unset", not a malformed integer.
        assert merge_config(env).source_of(setting.path) == Source("default")
        return

    with pytest.raises(ConfigError) as caught:
        merge_config(env)

    (problem,) = caught.value.problems
    assert problem.field == setting.names()
    assert problem.source == f"env {setting.env}"
    assert "expected an integer" in problem.message
    assert json.dumps(text) in problem.message


@pytest.mark.parametrize("setting", INTEGER_SETTINGS, ids=_ids)
def test_integer_with_surrounding_whitespace_is_accepted(setting: Setting) -> None:
    loaded = merge_config({**BASE_ENV, setting.env: " 4242 "})

    assert field_value(loaded.config, setting) == 4242


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"UPSTREAM_TIMEOUT_MS": "0"}, "upstream.timeoutMs"),
        ({"UPSTREAM_MAX_IN_FLIGHT": "0"}, "upstream.maxInFlight"),
        ({"UPSTREAM_MAX_MESSAGE_BYTES": "1023"}, "upstream.maxMessageBytes"),
        ({"OAUTH2_CALLBACK_PORT": "65536"}, "oauth2.callbackPort"),
        ({"OAUTH2_REFRESH_SKEW_SECONDS": "-1"}, "oauth2.refreshSkewSeconds"),
        ({"OAUTH2_CALLBACK_TIMEOUT_SECONDS": "-5"}, "oauth2.callbackTimeoutSeconds"),
    ],
)
def test_out_of_range_integers_name_field_and_env(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({**BASE_ENV, **env})

    (problem,) = caught.value.problems
    assert problem.field == names(field)
    assert problem.source == f"env {next(iter(env))}"


# --- OAUTH2_EXTRA_PARAMS --------------------------------------------------------------------


def test_extra_params_valid_object() -> None:
    loaded = merge_config(
        {**BASE_ENV, "OAUTH2_EXTRA_PARAMS": '{"prompt": "consent", "access_type": "offline"}'}
    )

    assert loaded.config.oauth2.extra_params == {"prompt": "consent", "access_type": "offline"}
    assert loaded.source_of("oauth2.extraParams") == Source("env", "OAUTH2_EXTRA_PARAMS")


def test_extra_params_empty_object() -> None:
    loaded = merge_config({**BASE_ENV, "OAUTH2_EXTRA_PARAMS": "{}"})

    assert loaded.config.oauth2.extra_params == {}
    assert loaded.source_of("oauth2.extraParams").kind == "env"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{prompt: consent}", "not JSON"),
        ('{"prompt": "consent"', "not JSON"),
        ("prompt=consent", "not JSON"),
        ('["prompt", "consent"]', "JSON object"),
        ('"prompt"', "JSON object"),
        ("42", "JSON object"),
        ("null", "JSON object"),
        ('{"max_age": 5}', '"max_age"'),
        ('{"prompt": null}', '"prompt"'),
        ('{"nested": {"a": "b"}}', '"nested"'),
    ],
)
def test_extra_params_rejects_anything_but_an_object_of_strings(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({**BASE_ENV, "OAUTH2_EXTRA_PARAMS": text})

    (problem,) = caught.value.problems
    assert problem.field == "oauth2.extraParams / OAUTH2_EXTRA_PARAMS"
    assert problem.source == "env OAUTH2_EXTRA_PARAMS"
    assert needle in problem.message


def test_extra_params_array_says_what_it_got() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({**BASE_ENV, "OAUTH2_EXTRA_PARAMS": '["a"]'})

    message = caught.value.problems[0].message
    assert "array" in message or "list" in message


def test_extra_params_non_string_value_in_the_file() -> None:
    document = {"upstream": {"url": UPSTREAM}, "oauth2": {"extraParams": {"max_age": 5}}}

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    (problem,) = caught.value.problems
    assert problem.field == "oauth2.extraParams / OAUTH2_EXTRA_PARAMS"
    assert problem.source == f"file {FILE}"
    assert problem.message == 'expected a string for key "max_age", got a JSON number'


# --- file errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("document", [[], ["upstream"], "upstream", 42, True])
def test_file_top_level_must_be_an_object(document: object) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config(BASE_ENV, document, FILE)

    (problem,) = caught.value.problems
    assert problem.field == "MCP_PROXY_CONFIG"
    assert problem.source == f"file {FILE}"
    assert "JSON object" in problem.message


def test_file_top_level_problem_is_reported_with_the_others() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({}, [1, 2], FILE)

    assert set(problems_of(caught)) == {"MCP_PROXY_CONFIG", "upstream.url"}


@pytest.mark.parametrize("value", ["https://x", 1, [], None, True])
@pytest.mark.parametrize("section", ["upstream", "oauth2", "discovery", "log", "security"])
def test_file_section_must_be_an_object(section: str, value: object) -> None:
    document: dict[str, object] = {"upstream": {"url": UPSTREAM}, section: value}

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    problem = problems_of(caught)[section]
    assert problem.source == f"file {FILE}"
    assert "JSON object" in problem.message


def test_unknown_section_is_an_error() -> None:
    document = {"upstream": {"url": UPSTREAM}, "oauth": {"clientId": "abc"}}

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    problem = problems_of(caught)["oauth"]
    assert "unknown section" in problem.message
    assert "oauth2" in problem.message


def test_unknown_scalar_section_names_the_file() -> None:
    document = {"upstream": {"url": UPSTREAM}, "verbose": True}

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    problem = problems_of(caught)["verbose"]
    assert problem.source == f"file {FILE}"
    assert "unknown section" in problem.message


@pytest.mark.parametrize("section_value", [{}, {"clientId": "abc"}])
def test_unknown_object_section_names_the_file(section_value: dict[str, str]) -> None:
    document = {"upstream": {"url": UPSTREAM}, "oauth": section_value}

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    assert FILE in problems_of(caught)["oauth"].source


@pytest.mark.parametrize(
    ("section", "key", "suggestion"),
    [
        ("oauth2", "clientSecert", "clientSecret"),
        ("upstream", "timeout", "timeoutMs"),
        ("upstream", "URL", "url"),
        ("log", "lvl", "level"),
        ("security", "allowInsecureHTTP", "allowInsecureHttp"),
        ("oauth2", "client_id", "clientId"),
    ],
)
def test_unknown_key_is_an_error_listing_known_keys(
    section: str, key: str, suggestion: str
) -> None:
    document: dict[str, dict[str, object]] = {"upstream": {"url": UPSTREAM}}
    document.setdefault(section, {})[key] = "x"

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    problem = problems_of(caught)[f"{section}.{key}"]
    assert problem.field == f"{section}.{key}"
    assert problem.source == f"file {FILE}"
    assert "unknown key" in problem.message
    assert suggestion in problem.message


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("upstream.timeoutMs", "300", 'expected an integer, got "300"'),
        ("upstream.timeoutMs", 300.0, "expected an integer"),
        ("upstream.timeoutMs", True, "expected an integer"),
        ("upstream.openServerStream", "yes", 'expected true or false, got "yes"'),
        ("upstream.openServerStream", 1, "expected true or false"),
        ("upstream.protocolVersion", 20250618, "expected a string"),
        ("oauth2.callbackPort", "8080", "expected an integer"),
        ("oauth2.clientId", 1234, "expected a string"),
        ("oauth2.grant", "implicit", "expected one of"),
        ("oauth2.extraParams", "prompt=consent", "expected a JSON object"),
        ("oauth2.tokenUrl", "idp.example.com/token", "absolute URL"),
        ("discovery.enabled", "false", "expected true or false"),
        ("log.level", "loud", "expected one of"),
        ("security.allowInsecureHttp", "true", "expected true or false"),
    ],
)
def test_wrong_json_types_in_the_file(key: str, value: object, needle: str) -> None:
    setting = SETTINGS_BY_PATH[key]
    document = file_with(setting, value)

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    (problem,) = caught.value.problems
    assert problem.field == setting.names()
    assert problem.source == f"file {FILE}"
    assert needle in problem.message


def test_a_quoted_number_or_boolean_in_the_file_says_to_drop_the_quotes() -> None:
    document = {
        "upstream": {"url": UPSTREAM, "openServerStream": "yes"},
        "oauth2": {"callbackPort": "8080", "interactive": " False"},
    }

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    problems = problems_of(caught)
    assert str(problems["oauth2.callbackPort"]) == (
        f"oauth2.callbackPort / OAUTH2_CALLBACK_PORT (file {FILE}): expected an integer, "
        'got "8080"; write it without quotes: 8080'
    )
    assert problems["oauth2.interactive"].message.endswith("; write it without quotes: false")
    # Not a boolean in quotes, so no hint that would make it one.
    assert "without quotes" not in problems["upstream.openServerStream"].message


def test_a_good_env_value_hides_a_bad_file_value() -> None:
    document = {"upstream": {"url": UPSTREAM, "timeoutMs": "300"}}

    loaded = merge_config({"UPSTREAM_TIMEOUT_MS": "300"}, document, FILE)

    assert loaded.config.upstream.timeout_ms == 300
    assert loaded.source_of("upstream.timeoutMs") == Source("env", "UPSTREAM_TIMEOUT_MS")


# --- many problems at once, each naming field and source ------------------------------------

BAD_ENV = {
    "UPSTREAM_TIMEOUT_MS": "five minutes",
    "OAUTH2_INTERACTIVE": "maybe",
    "OAUTH2_EXTRA_PARAMS": "[1]",
    "OAUTH2_CALLBACK_PORT": "99999",
    "LOG_LEVEL": "loud",
}
BAD_FILE = {
    "upstream": {"url": UPSTREAM, "openServerStream": "yes"},
    "oauth2": {"clientSecert": "x", "refreshSkewSeconds": "30", "tokenUrl": "not a url"},
    "discovery": "on",
}
EXPECTED_SOURCES = {
    "upstream.timeoutMs": "UPSTREAM_TIMEOUT_MS",
    "oauth2.interactive": "OAUTH2_INTERACTIVE",
    "oauth2.extraParams": "OAUTH2_EXTRA_PARAMS",
    "oauth2.callbackPort": "OAUTH2_CALLBACK_PORT",
    "log.level": "LOG_LEVEL",
    "upstream.openServerStream": f"file {FILE}",
    "oauth2.clientSecert": f"file {FILE}",
    "oauth2.refreshSkewSeconds": f"file {FILE}",
    "oauth2.tokenUrl": f"file {FILE}",
    "discovery": f"file {FILE}",
}


def test_every_problem_is_reported_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config(BAD_ENV, BAD_FILE, FILE)

    fields = [problem.field for problem in caught.value.problems]
    assert sorted(fields) == sorted(names(path) for path in EXPECTED_SOURCES)
    assert len(fields) == len(set(fields))
    assert len(str(caught.value).splitlines()) == len(EXPECTED_SOURCES)


def test_every_problem_names_its_field_and_source() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config(BAD_ENV, BAD_FILE, FILE)

    for problem in caught.value.problems:
        where = EXPECTED_SOURCES[problem.field.split(" / ")[0]]
        assert where in problem.source, problem
        line = f"configuration error: {problem.field} ({problem.source}): "
        assert line in str(caught.value)


# --- secrets never echoed -------------------------------------------------------------------

SECRET_VALUES: dict[str, object] = {
    "clientSecret": 918273645,
    "refreshToken": ["rt-leaked-7c1d"],
    "authorizationCode": {"code": "code-leaked-9f2e"},
    "codeVerifier": 5551234.5,
    "password": True,
}


def test_non_string_secrets_in_the_file_are_not_echoed() -> None:
    document = {"upstream": {"url": UPSTREAM}, "oauth2": dict(SECRET_VALUES)}

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    text = str(caught.value)
    assert set(problems_of(caught)) == {f"oauth2.{key}" for key in SECRET_VALUES}
    for value in ("918273645", "rt-leaked-7c1d", "code-leaked-9f2e", "5551234", "True"):
        assert value not in text
    for problem in caught.value.problems:
        assert "expected a string" in problem.message
        assert FILE in problem.source


def test_secret_under_a_misspelt_key_is_not_echoed() -> None:
    document = {
        "upstream": {"url": UPSTREAM},
        "oauth2": {"clientSecert": "cs-leaked-41ab", "pasword": "pw-leaked-0d0d"},
    }

    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)

    assert "cs-leaked-41ab" not in str(caught.value)
    assert "pw-leaked-0d0d" not in str(caught.value)
    assert set(problems_of(caught)) == {"oauth2.clientSecert", "oauth2.pasword"}


def test_secret_env_values_are_not_echoed_next_to_other_problems() -> None:
    env = {
        **BASE_ENV,
        "OAUTH2_CLIENT_SECRET": "env-secret-5e5e",
        "OAUTH2_PASSWORD": "env-password-6f6f",
        "OAUTH2_CALLBACK_PORT": "nope",
    }

    with pytest.raises(ConfigError) as caught:
        merge_config(env)

    assert "env-secret-5e5e" not in str(caught.value)
    assert "env-password-6f6f" not in str(caught.value)
    assert set(problems_of(caught)) == {"oauth2.callbackPort"}


# --- property: the environment always wins --------------------------------------------------

# White-space-only text from the environment counts as unset, so it is no sample of a value.
_texts = st.text(min_size=1, max_size=12).filter(str.strip)
_hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}\.[a-z]{2,5}", fullmatch=True)


def _urls(*, document: bool = False) -> st.SearchStrategy[str]:
    """Absolute URLs; with `document`, ones a client id metadata document may have
    (https, a path)."""
    return st.builds(
        lambda scheme, host, path: f"{scheme}://{host}/{path}",
        st.sampled_from(["https"] if document else ["https", "http"]),
        _hosts,
        st.from_regex(r"[a-z0-9]{1,10}" if document else r"[a-z0-9/]{0,10}", fullmatch=True),
    )


def _booleans() -> st.SearchStrategy[Sample]:
    def spell(value: bool, word_index: int, upper: bool) -> Sample:
        words = TRUE_WORDS if value else FALSE_WORDS
        word = words[word_index % len(words)]
        return Sample(value, word.upper() if upper else word, value)

    return st.builds(spell, st.booleans(), st.integers(0, 3), st.booleans())


def samples(setting: Setting) -> st.SearchStrategy[Sample]:
    """Valid values of `setting`, chosen by its kind."""
    if setting.kind is Kind.URL:
        document = setting.path == "oauth2.clientMetadataUrl"
        return _urls(document=document).map(lambda url: Sample(url, url, url))
    if setting.kind is Kind.INTEGER:
        # 1024..65535 is inside every integer setting's range (ports, timeouts, sizes).
        return st.integers(1024, 65535).map(lambda n: Sample(n, str(n), n))
    if setting.kind is Kind.BOOLEAN:
        return _booleans()
    if setting.kind is Kind.CHOICE:
        return st.sampled_from(CHOICES[setting.path]).map(lambda c: Sample(c, c, c))
    if setting.kind is Kind.JSON_OBJECT:
        keys = st.text(max_size=6).filter(lambda key: key not in RESERVED_PARAMS)
        objects = st.dictionaries(keys, st.text(max_size=6), max_size=3)
        return objects.map(lambda d: Sample(d, json.dumps(d), d))
    if setting.path == "oauth2.tokenCommand":
        # A command's words: any text a POSIX shell would split (so no stray quote or `[`).
        words = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3)
        return words.map(shlex.join).map(lambda t: Sample(t, t, t))
    return _texts.map(lambda t: Sample(t, t, t))


@given(data=st.data(), setting=st.sampled_from(SETTINGS))
def test_env_value_always_wins_over_the_file(data: st.DataObject, setting: Setting) -> None:
    file_sample = data.draw(samples(setting), label="file")
    env_sample = data.draw(samples(setting), label="env")
    env = {**BASE_ENV, setting.env: env_sample.env_text}

    loaded: LoadedConfig = merge_config(env, file_with(setting, file_sample.file_value), FILE)

    assert field_value(loaded.config, setting) == env_sample.expected
    assert loaded.source_of(setting.path) == Source("env", setting.env)


@pytest.mark.parametrize("key", ["clientSecret", "refreshToken", "password"])
def test_an_empty_secret_in_the_file_is_an_error_not_a_value(key: str) -> None:
    document = {"upstream": {"url": UPSTREAM}, "oauth2": {key: ""}}
    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)
    problem = problems_of(caught)[f"oauth2.{key}"]
    assert "is empty" in problem.message
    assert FILE in problem.source


def test_json_types_are_named_the_json_way() -> None:
    document = {"upstream": {"url": UPSTREAM, "protocolVersion": {"a": 1}}}
    with pytest.raises(ConfigError) as caught:
        merge_config({}, document, FILE)
    assert "got a JSON object" in problems_of(caught)["upstream.protocolVersion"].message
    with pytest.raises(ConfigError, match="got a JSON array"):
        merge_config({"OAUTH2_EXTRA_PARAMS": "[1]"})
    with pytest.raises(ConfigError, match="got a JSON number"):
        merge_config({"OAUTH2_EXTRA_PARAMS": '{"a": 1}'})


@pytest.mark.parametrize("setting", BOOLEAN_SETTINGS, ids=_ids)
def test_white_space_only_env_counts_as_unset(setting: Setting) -> None:
    loaded = merge_config({**BASE_ENV, setting.env: "   "})
    assert loaded.source_of(setting.path).kind == "default"


def test_choices_are_case_insensitive_in_the_file_too() -> None:
    document = {
        "upstream": {"url": UPSTREAM},
        "log": {"level": "DEBUG"},
        "oauth2": {"grant": "Client_Credentials", "authStyle": "HEADER"},
    }
    config = merge_config({}, document, FILE).config
    assert (config.log.level, config.oauth2.grant, config.oauth2.auth_style) == (
        "debug",
        "client_credentials",
        "header",
    )


def test_null_is_shown_as_json() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({}, {"upstream": {"url": UPSTREAM, "timeoutMs": None}}, FILE)
    assert "got null" in problems_of(caught)["upstream.timeoutMs"].message


@pytest.mark.parametrize("name", ["client_id", "grant_type", "scope", "code_verifier"])
def test_extra_params_may_not_set_the_grants_own_fields(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({**BASE_ENV, "OAUTH2_EXTRA_PARAMS": json.dumps({name: "x"})})
    problem = problems_of(caught)["oauth2.extraParams"]
    assert f"may not set {name}" in problem.message
    assert problem.source == "env OAUTH2_EXTRA_PARAMS"


@pytest.mark.parametrize("env", ["UPSTREAM_URL", "OAUTH2_TOKEN_URL", "OAUTH2_AUTHORIZATION_URL"])
def test_credentials_in_a_url_are_refused(env: str) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config({**BASE_ENV, env: "https://user:hunter22@host.example/x"})
    message = str(caught.value)
    assert "must not contain user:password@" in message
    assert "hunter22" not in message
