"""Text as SQLite FTS5 sees it: identifiers split on snake_case/camelCase, Chinese as bigrams.

Shared by the indexer and the project memory (both search code-flavoured text in two languages).

FTS5's unicode61 tokenizer keeps `load_config` whole and a run of Chinese characters as one token,
so neither `config` nor `配置` would match. Documents and queries both pass through `terms`.
"""

import re

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z]|[0-9]|$)|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_CJK_START = "\u3400"
# Words that carry no meaning in a natural-language query; kept in documents.
_QUERY_STOPWORDS = frozenset(
    "a an and are as at be by for from how i if in is it of on or that the this to what when where which "
    "with do does can should return returns".split()
)


def split_identifier(word: str) -> list[str]:
    """`parseHTTPResponse_v2` → ["parse", "http", "response", "v", "2"]; a plain word → [word]."""
    parts = [p.lower() for piece in word.split("_") for p in _CAMEL.findall(piece)]
    return parts or [word.lower()]


def _cjk_bigrams(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def terms(text: str) -> list[str]:
    """Searchable terms of `text`: each identifier, its parts, numbers, and Chinese bigrams."""
    out: list[str] = []
    for word in _WORD.findall(text):
        if word[0] >= _CJK_START:
            out.extend(_cjk_bigrams(word))
            continue
        lower = word.lower()
        out.append(lower)
        parts = split_identifier(word)
        if len(parts) > 1 or parts[0] != lower:
            out.extend(parts)
    return out


def document(text: str) -> str:
    """What goes into the FTS5 column for `text`."""
    return " ".join(terms(text))


def match_query(query: str) -> str | None:
    """An FTS5 MATCH expression that ranks chunks by how many of the query's terms they hold."""
    words = [t for t in dict.fromkeys(terms(query)) if t not in _QUERY_STOPWORDS]
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)
