"""Completions already made for a document, answered again as the user types into them.

Forward matching: when the text before the cursor is an earlier request's plus what the user has
typed since, the text after the cursor is unchanged, and the earlier completion begins with what
was typed, the rest of that completion is the answer: no model run.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from zhiyin.completion import Completion, absorbed_suffix

MAX_ENTRIES = 64  # all documents together
MAX_CHARS = 16_000_000  # an entry holds its whole document (the text before and after the cursor)


@dataclass(frozen=True)
class _Entry:
    prefix: str
    suffix: str
    completion: Completion | None  # None: the model had nothing to offer here


def forward(completion: Completion | None, typed: str, suffix: str) -> Completion | None:
    """What is left of `completion` once `typed` (its beginning) is in the document before `suffix`;
    None when the user typed something else or all of it."""
    if completion is None or not completion.text.startswith(typed) or len(completion.text) == len(typed):
        return None
    rest = completion.text[len(typed):]
    return Completion(rest, completion.multiline, replaces=absorbed_suffix(rest, suffix) if completion.replaces else 0)


class CompletionCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_chars: int = MAX_CHARS) -> None:
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()  # (uri, serial) -> entry
        self._serial = 0
        self._chars = 0
        self.max_entries, self.max_chars = max_entries, max_chars

    def store(self, uri: str, prefix: str, suffix: str, completion: Completion | None) -> None:
        size = len(prefix) + len(suffix)
        if size > self.max_chars // 4:  # a huge document would push out every other entry
            return
        self._serial += 1
        self._entries[(uri, self._serial)] = _Entry(prefix, suffix, completion)
        self._chars += size
        while len(self._entries) > self.max_entries or self._chars > self.max_chars:
            _key, old = self._entries.popitem(last=False)
            self._chars -= len(old.prefix) + len(old.suffix)

    def lookup(self, uri: str, prefix: str, suffix: str) -> tuple[bool, Completion | None]:
        """(found, completion): the answer for this cursor from an earlier completion, newest first.
        A miss is (False, None); (True, None) means the model had nothing here before."""
        for (entry_uri, serial), entry in reversed(self._entries.items()):
            if entry_uri != uri or entry.suffix != suffix or not prefix.startswith(entry.prefix):
                continue
            typed = prefix[len(entry.prefix):]
            if not typed:
                self._entries.move_to_end((entry_uri, serial))
                return True, entry.completion
            if (rest := forward(entry.completion, typed, suffix)) is not None:
                self._entries.move_to_end((entry_uri, serial))
                return True, rest
        return False, None

    def forget(self, uri: str) -> None:
        """Drops a closed document's entries."""
        for key in [key for key in self._entries if key[0] == uri]:
            old = self._entries.pop(key)
            self._chars -= len(old.prefix) + len(old.suffix)
