"""The chat page's files (`zhiyin/page/`: plain HTML, CSS and JS, with vendored markdown-it and
highlight.js; nothing from a CDN) and its words, from the same gettext catalogs as the rest of
Zhiyin: the page asks for `/strings.json?lang=…` and shows those."""

from __future__ import annotations

import json
import mimetypes
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from zhiyin.i18n import N_, normalize_locale, translate

PAGE_DIR = Path(__file__).parent / "page"

# Keys are what page/chat.js looks up.
STRINGS = {
    "title": N_("Zhiyin chat"),
    "newChat": N_("New chat"),
    "conversations": N_("Conversations"),
    "noConversations": N_("No conversations yet."),
    "delete": N_("Delete"),
    "placeholder": N_("Ask about this repository. @file.py or @file.py:10-20 attaches a file, @name a symbol, "
                      "#changes your uncommitted changes; /edit … proposes a change, /remember … keeps a note."),
    "send": N_("Send"),
    "stop": N_("Stop"),
    "you": N_("You"),
    "assistant": N_("Zhiyin"),
    "sources": N_("Sources"),
    "stopped": N_("(stopped)"),
    "proposedEdit": N_("Proposed edit"),
    "apply": N_("Apply"),
    "reject": N_("Reject"),
    "rejected": N_("Rejected."),
    "noEdit": N_("No edit could be proposed."),
    "remember": N_("Remember"),
    "rememberTitle": N_("Keep this message in the project memory"),
    "statusConnecting": N_("Connecting…"),
    "statusDisconnected": N_("Disconnected. Reload the page to reconnect."),
    "statusRefused": N_("The server refused this page: open the address `zhiyin serve` printed, with its token."),
    "statusLoadingModel": N_("Loading the model…"),
    "statusIndexing": N_("Indexing…"),
    "statusReady": N_("Ready"),
    "queued": N_("Waiting for the model ({count} ahead)…"),
    "language": N_("Language"),
    "theme": N_("Theme"),
    "themeAuto": N_("Auto"),
    "themeLight": N_("Light"),
    "themeDark": N_("Dark"),
    "copy": N_("Copy"),
    "copied": N_("Copied"),
    "close": N_("Close"),
}


@cache
def _files() -> dict[str, Path]:
    """URL path -> file: only what is in the page folder (no `..` can reach anything else)."""
    files = {"/" + p.relative_to(PAGE_DIR).as_posix(): p for p in PAGE_DIR.rglob("*") if p.is_file()}
    files["/"] = PAGE_DIR / "index.html"
    return files


def strings(locale: str) -> dict[str, str]:
    return {key: translate(message, locale) for key, message in STRINGS.items()}


def asset(path: str, raw_path: str) -> tuple[bytes, str] | None:
    """The body and content type for the page's URL `path` (`raw_path` with its query), or None."""
    if path == "/strings.json":
        lang = parse_qs(urlsplit(raw_path).query).get("lang", ["en"])[0]
        locale = normalize_locale(lang)
        return json.dumps({"locale": locale, "strings": strings(locale)}, ensure_ascii=False).encode(), \
            "application/json; charset=utf-8"
    file = _files().get(path)
    if file is None:
        return None
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type in ("application/javascript", "text/javascript"):
        content_type += "; charset=utf-8"
    return file.read_bytes(), content_type
