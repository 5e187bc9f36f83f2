"""Turning study specs and trial configs into MLflow params without leaking secrets.

MLflow params are flat strings, so nested dicts become dotted keys and long values are
cut to :data:`MAX_PARAM_LEN`. Anything that looks like a credential is replaced by
:data:`REDACTED`: by key name (``api_key``, ``secret``, ``password``, ``hf_token``, ...,
but not token *counts* such as ``token_limit`` or ``max_tokens``) and by value (the value
of any secret-looking environment variable, e.g. ``OPENAI_API_KEY``, wherever it appears).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

MAX_PARAM_LEN = 500
REDACTED = "***REDACTED***"

_SECRET_ANYWHERE = re.compile(
    r"secret|passw(or)?d|passwd|credential|api[_-]?key|private[_-]?key|access[_-]?key|"
    r"authorization|bearer|session[_-]?key"
)
# a whole word at the end of the name: "key", "hf_token", "api-key", "auth"
_SECRET_WORD = re.compile(r"(^|[_.\-])(key|token|pat|auth)$")
# names of the variable that holds a secret are not secret: "api_key_env"
_NAME_OF_VAR = re.compile(r"[_.\-]env(_var)?$")


def is_secret_key(key: str) -> bool:
    """True if a param/env name looks like it holds a credential."""
    last = key.lower().rsplit(".", 1)[-1]
    if _NAME_OF_VAR.search(last):
        return False
    return bool(_SECRET_ANYWHERE.search(last) or _SECRET_WORD.search(last))


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables (at least 6 characters long)."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if is_secret_key(k) and len(v) >= 6]


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are kept as leaves."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _to_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    try:
        return json.dumps(v, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(v)


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of a known secret value in ``text``."""
    for s in secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A deep copy of ``obj`` with secret-named entries and secret values replaced."""
    secrets = secret_env_values() if secrets is None else secrets
    if isinstance(obj, Mapping):
        return {k: REDACTED if is_secret_key(str(k)) else redact(v, secrets)
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        return scrub(obj, secrets)
    return obj


def to_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten, redact and truncate ``d`` into MLflow-ready ``{key: str}`` params."""
    secrets = secret_env_values()
    out: dict[str, str] = {}
    for k, v in flatten(d, prefix).items():
        s = REDACTED if is_secret_key(k) else scrub(_to_str(v), secrets)
        out[k] = s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 3] + "..."
    return out
