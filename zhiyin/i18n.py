"""Translations of user-facing text: gettext catalogs, domain ``zhiyin``, in ``zhiyin/locale``.

Mark a message with ``_("...")`` where it is shown, or with ``N_("...")`` where it is defined
and shown later (error classes); ``translate_error`` turns an error into one translated line.
Only the stdlib runs here: the compiled ``.mo`` files are committed, Babel is a build tool
(``scripts/update_catalogs.py``).

The locale comes from, in order: ``use_locale`` (a chat client's language, for the task serving
it), ``set_locale`` (the LSP client's ``initialize.locale``),
``ZHIYIN_LANG``, then the variables gettext reads: ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``,
``LANG``. Any ``zh*`` locale gets ``zh_CN``; everything else gets ``en``.
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Mapping
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Protocol

from engine.errors import N_, Msg

__all__ = ["N_", "_", "current_locale", "ngettext", "set_locale", "translate", "translate_error", "use_locale"]

DOMAIN = "zhiyin"
LOCALE_DIR = Path(__file__).parent / "locale"
DEFAULT_LOCALE = "en"
ENV_VARS = ("ZHIYIN_LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")

_override: str | None = None
_scoped: ContextVar[str | None] = ContextVar("zhiyin_locale", default=None)


class Translatable(Protocol):
    """What ``translate_error`` needs: an English msgid and the values for its placeholders."""

    message: str
    params: Mapping[str, object]


def normalize_locale(code: str) -> str:
    """Supported locale for a POSIX or BCP 47 name: 'zh_TW.UTF-8', 'zh-cn' -> 'zh_CN'; else 'en'."""
    return "zh_CN" if code.strip().lower().startswith("zh") else DEFAULT_LOCALE


def set_locale(code: str | None) -> None:
    """Use ``code`` over the environment from now on; ``None`` goes back to the environment."""
    global _override
    _override = normalize_locale(code) if code else None


def use_locale(code: str | None) -> None:
    """Use ``code`` in the current context only: this asyncio task and what it starts (one chat
    client's language, beside others in the same process)."""
    _scoped.set(normalize_locale(code) if code else None)


def current_locale() -> str:
    """'en' or 'zh_CN', read afresh on each call (cheap: a few environment look-ups)."""
    if scoped := _scoped.get():
        return scoped
    if _override:
        return _override
    for name in ENV_VARS:
        value = os.environ.get(name)
        if value:  # LANGUAGE is a list ("zh_CN:en"); its first entry decides
            return normalize_locale(value.split(":")[0])
    return DEFAULT_LOCALE


@cache
def _translations(locale: str) -> gettext.NullTranslations:
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[locale], fallback=True)


def _(message: str) -> str:
    """``message`` (an English msgid) in the current locale."""
    return _translations(current_locale()).gettext(message)


def translate(message: str, locale: str) -> str:
    """``message`` in ``locale`` ('en', 'zh-CN', …), whatever the current one is."""
    return _translations(normalize_locale(locale)).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of ``singular``/``plural`` for ``n`` in the current locale (not yet formatted)."""
    return _translations(current_locale()).ngettext(singular, plural, n)


def translate_error(err: Translatable) -> str:
    """One line for the user: ``err.message`` translated and formatted with ``err.params``.

    Parameters that are themselves marked messages (``Msg``, from ``N_``) are translated too.
    Works on any exception with ``message`` and ``params``: ``EngineError`` and the app core's own.
    """
    params = {name: _(value) if isinstance(value, Msg) else value
              for name, value in err.params.items()}
    return _(err.message).format(**params)
