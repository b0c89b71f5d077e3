"""The credential helper: an access token from a command the user names
(`oauth2.tokenCommand` / OAUTH2_TOKEN_COMMAND), for companies whose tokens come from their own
CLI (`gcloud auth print-access-token`, `az account get-access-token`, a vault client).

The command is an argv, never a shell line: from the environment its text is split into
words as a POSIX shell would split them (quotes kept together), from the config file it may
also be a JSON array of words. What it prints is read here: the token alone, or a JSON object
with `access_token` (and optionally `expires_in` seconds, `token_type`).
"""

from __future__ import annotations

import json
import shlex

from .errors import OAuthError

COMMAND_SETTING_NAMES = "oauth2.tokenCommand / OAUTH2_TOKEN_COMMAND"
MAX_OUTPUT_BYTES = 64 * 1024


def command_words(value: str | list[str]) -> list[str]:
    """The argv of the setting's value.

    Raises:
        ValueError: no words, or unbalanced quotes; the message says which.
    """
    if isinstance(value, str) and value.lstrip().startswith("["):
        # The JSON form, given in the environment: read as JSON, never split as words.
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("starts with [ but is not a JSON array of words") from None
        if not isinstance(value, list) or not all(isinstance(word, str) for word in value):
            raise ValueError("must be a JSON array of strings when it starts with [")
    try:
        words = list(value) if isinstance(value, list) else shlex.split(value)
    except ValueError as error:  # shlex: "No closing quotation"
        raise ValueError(f"cannot be split into words: {str(error).lower()}") from None
    if not words or not words[0]:
        raise ValueError("names no command")
    return words


def read_command_output(stdout: bytes, program: str) -> tuple[str, float | None, str]:
    """(access token, expires_in or None, token type) from what the command printed.

    Raises:
        OAuthError: the output holds no token; the message says what it held, never the
            output itself (it may be a secret in the wrong shape).
    """
    text = stdout.decode("utf-8", "replace").strip()
    if not text:
        raise OAuthError(
            f"the token command {program} printed nothing on stdout; it must print the access "
            f"token, or JSON with access_token; check {COMMAND_SETTING_NAMES}"
        )
    if not text.startswith("{"):
        if any(char.isspace() for char in text):
            raise OAuthError(
                f"the token command {program} printed more than one word on stdout; it must "
                f"print only the access token, or JSON with access_token; check "
                f"{COMMAND_SETTING_NAMES}"
            )
        return text, None, "Bearer"
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    token = document.get("access_token") if isinstance(document, dict) else None
    if not isinstance(document, dict) or not isinstance(token, str) or not token:
        raise OAuthError(
            f"the token command {program} printed JSON without a string access_token; check "
            f"{COMMAND_SETTING_NAMES}"
        )
    return token, _seconds(document.get("expires_in")), _token_type(document.get("token_type"))


def _seconds(value: object) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _token_type(value: object) -> str:
    return value if isinstance(value, str) and value else "Bearer"
