"""The server's settings, parsed once from `initialize.initializationOptions`.

Keys are camelCase as LSP clients send them (`maxTokens`); the snake_case spelling is accepted too.
An invalid value never stops the server: it is reported in a translated message and that
setting keeps its default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from zhiyin.i18n import N_, _


@dataclass(frozen=True)
class Settings:
    max_tokens: int = 48  # most tokens one completion may generate
    context_budget: int = 1024  # tokens of repository context in a completion prompt; 0: none
    embeddings: bool = True  # vectors in the index (slower to build, finds code by meaning)
    debounce_min_ms: int = 50  # a completion request waits at least this long for the next keystroke
    debounce_max_ms: int = 1000  # and at most this long, however slowly the user types


# name -> inclusive bounds of the integer settings
_INT_BOUNDS = {"max_tokens": (1, 1024), "context_budget": (0, 32768),
               "debounce_min_ms": (0, 5000), "debounce_max_ms": (0, 5000)}

MSG_NOT_AN_OBJECT = N_("Zhiyin: initializationOptions must be a JSON object; using the default settings.")
MSG_UNKNOWN = N_("Zhiyin: unknown setting \"{name}\"; it is ignored.")
MSG_INVALID = N_("Zhiyin: the setting \"{name}\" = {value} is invalid ({reason}); using {default} instead.")
REASON_INT = N_("expected a whole number from {low} to {high}")
REASON_BOOL = N_("expected true or false")


def parse_settings(options: Any) -> tuple[Settings, list[str]]:
    """The settings in `options`, and one translated message per problem found."""
    if options is None:
        return Settings(), []
    if not isinstance(options, dict):
        return Settings(), [_(MSG_NOT_AN_OBJECT)]
    defaults = Settings()
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in options.items():
        name = _snake_case(key)
        if name not in known:
            problems.append(_(MSG_UNKNOWN).format(name=key))
            continue
        reason = _check(name, value)
        if reason:
            problems.append(_(MSG_INVALID).format(name=key, value=_json(value), reason=reason,
                                                  default=_json(getattr(defaults, name))))
        else:
            values[name] = value
    return Settings(**values), problems


def _check(name: str, value: Any) -> str | None:
    """Why `value` does not fit the setting `name`, translated; None when it fits."""
    if name in _INT_BOUNDS:
        low, high = _INT_BOUNDS[name]
        # bool is an int in Python, but `true` is not a number in JSON
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return _(REASON_INT).format(low=low, high=high)
        return None
    return None if isinstance(value, bool) else _(REASON_BOOL)


def _snake_case(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _json(value: Any) -> str:
    """`value` as the client wrote it (true, not True)."""
    return json.dumps(value, ensure_ascii=False)
