"""The redaction gate: no secret reaches Engram's store, its embeddings or its logs.

Engram learns from chats, diffs, rule files and git history, and people paste keys into all
four. `redact` replaces every secret span with `[REDACTED:<kind>]`; the placeholder keeps the
kind (useful memory: "this service needs a Stripe key") and no character of the secret.

Two detectors, merged:
- detect-secrets' plugins, run line by line as its own scanner does, with its default
  heuristic filters. Its two high-entropy plugins stay off: on tests/engram's corpus they
  changed 28 of 462 harmless texts (base64 fixtures, lockfile checksums) and found 28 of 270
  planted secrets, all of which the other rules find too.
- our own precompiled rules for formats detect-secrets does not know (sk-proj-, sk-ant-,
  github_pat_, hf_, LTAI…, AKID…, connection URLs, whole PEM blocks, …) and for secret-named
  assignments in code, config, .env files and (Chinese or English) chat.

Not secrets, by decision: placeholders and indirections (`<your password>`, `${DB_PASSWORD}`,
`{{ token }}`, `$TOKEN`, `os.environ["X"]`, `changeme`, `xxxx`, `your-api-key-here`),
identifiers that merely contain a secret word (`password_field`, `token_count`,
`api_key_header`), and public material (certificates, public keys, hashes, UUIDs).
Any literal password, including `postgres:postgres@localhost`, is redacted.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters import heuristic
from detect_secrets.plugins.base import BasePlugin
from detect_secrets.plugins.keyword import KeywordDetector

PLACEHOLDER = "[REDACTED:{kind}]"

# When spans overlap and share one placeholder, it names the strongest: a specific format, then
# a detect-secrets plugin or a generic shape (bearer, URL password), then a keyword guess.
FORMAT, PLUGIN, KEYWORD = 3, 2, 1

MAX_PLUGIN_LINE = 4096  # detect-secrets' keyword regexes backtrack on long minified lines


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Redaction:
    text: str
    findings: tuple[Finding, ...]

    @property
    def redacted(self) -> bool:
        return bool(self.findings)


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    group: str | int
    check: Callable[[str], bool] | None
    is_token: bool
    priority: int


def redact(text: str) -> Redaction:
    findings = _merge([*_format_findings(text), *_assignment_findings(text), *_chat_findings(text),
                       *_plugin_findings(text)])
    parts, pos = [], 0
    for finding in findings:
        parts += [text[pos:finding.start], PLACEHOLDER.format(kind=finding.kind)]
        pos = finding.end
    parts.append(text[pos:])
    return Redaction("".join(parts), tuple(findings))


# --- value heuristics -------------------------------------------------------------------

_REPEATED_CHAR = re.compile(r"(.)\1{5,}")


def _looks_random(value: str) -> bool:
    """A generated token mixes character classes and does not repeat itself."""
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value),
                   any(c.isdigit() for c in value)))
    return (classes >= 2 and len(set(value)) >= min(10, len(value) // 2)
            and not _REPEATED_CHAR.search(value) and not heuristic.is_sequential_string(value))


# `[...]` also covers our own placeholder, which keeps redact idempotent.
_PLACEHOLDER_SHAPE = re.compile(
    r"""^(?: <[^<>]*> | \$\{[^}]*\} | \$\(?[A-Za-z_]\w*\)? | \{\{.*\}\} | \{[^{}]*\}
          | %\(?\w*\)?[sd] | \[[^\[\]]*\] | [*xX.#_\-•]{3,} )$""",
    re.VERBOSE | re.ASCII)
# Names written as strings ("cond_frame_outputs") and CSS colours are not secrets either.
_NAME_OR_COLOUR = re.compile(r"[a-z]+(?:_[a-z]+)+|#[0-9a-fA-F]{3,8}", re.ASCII)
_PLACEHOLDER_WORDS = frozenset({
    "changeme", "changeit", "password", "passwd", "passphrase", "secret", "secrets", "token", "apikey",
    "none", "null", "nil", "undefined", "true", "false", "empty", "todo", "tbd", "fixme", "required",
    "optional", "default", "string", "str", "bytes", "bool", "int", "integer", "number", "any", "object",
    "unknown", "mysecret", "mypassword", "mytoken", "secretkey", "redacted", "example", "sample", "dummy",
    "placeholder", "test", "testing", "notasecret", "credential", "credentials"})
_PLACEHOLDER_PARTS = ("example", "changeme", "change_me", "change-me", "placeholder", "redacted",
                      "xxxx", "****", "dummy", "fake", "${", "{{", "<", "os.environ", "getenv",
                      "process.env", "env(", "env[", "secretsmanager", "vault:", "...", "…")
_NOT_ALNUM = re.compile(r"[\W_]")
_PLACEHOLDER_AFFIXES = re.compile(r"^(?:your|my|insert|enter|replace|paste|put)[\W_]|[\W_]here$",
                                  re.IGNORECASE)


def _is_placeholder(value: str) -> bool:
    """True for a value that stands in for a secret instead of being one."""
    lowered = value.lower()
    return bool(_PLACEHOLDER_SHAPE.match(value)
                or _NOT_ALNUM.sub("", lowered) in _PLACEHOLDER_WORDS
                or any(part in lowered for part in _PLACEHOLDER_PARTS)
                or _PLACEHOLDER_AFFIXES.search(value))


def _is_stand_in(value: str, kind: str) -> bool:
    # A URL's password is free text like an assignment's; a token format needs only the shape
    # test, as its random tail may spell "fake" or "here".
    return _is_placeholder(value) if kind == "url-password" else bool(_PLACEHOLDER_SHAPE.match(value))


# --- format rules -----------------------------------------------------------------------

def _rule(kind: str, pattern: str, group: str | int = 0, check: Callable[[str], bool] | None = None,
          *, token: bool = False, priority: int = FORMAT) -> _Rule:
    # A token ends where ASCII word characters stop (Chinese text may touch it); its start is
    # checked in _format_findings, as a leading look-behind would cost re its literal-prefix scan.
    if token:
        pattern += r"(?![A-Za-z0-9_\-])"
    return _Rule(kind, re.compile(pattern, re.ASCII), group, check, token, priority)


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_FORMAT_RULES = (
    # The whole block. The body stops at the first "-----", so a key cut off before its END
    # line still goes, and text full of BEGIN lines is scanned once.
    _rule("private-key",
          r"-----BEGIN (?P<label>[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?)-----"
          r"(?:[A-Za-z0-9+/=:,\\ \t\r\n\"']|-(?!----))*(?:-----END (?P=label)-----)?"),
    _rule("gcp-service-account-key", r'"private_key_id"\s*:\s*"(?P<v>[0-9a-f]{40})"', "v"),
    _rule("anthropic-api-key", r"sk-ant-[A-Za-z0-9_\-]{20,300}", token=True),
    _rule("openai-api-key", r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,300}", 0, _looks_random,
          token=True),
    _rule("github-token", r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{40,251})", token=True),
    _rule("gitlab-token", r"gl(?:pat|dt|rt|ptt|ft|cbt|oas|soat)-[A-Za-z0-9_\-]{20,64}", token=True),
    _rule("slack-token", r"xox[abposre]-[A-Za-z0-9\-]{10,250}", token=True),
    _rule("slack-token", r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9_/]{20,120}"),
    _rule("stripe-key", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,247}|whsec_[A-Za-z0-9]{24,64}", token=True),
    _rule("aws-access-key", r"(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|AGPA)[A-Z0-9]{16}",
          token=True),
    _rule("aws-secret-key", r"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?\s*(?:=|:|=>)\s*"
          r"[\"']?(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])", "v"),
    _rule("google-api-key", r"AIza[A-Za-z0-9_\-]{35}", token=True),
    _rule("azure-storage-key", r"(?:AccountKey|SharedAccessKey)=(?P<v>[A-Za-z0-9+/]{20,120}={0,2})", "v"),
    _rule("azure-sas-token", r"[?&]sig=(?P<v>[A-Za-z0-9%+/]{30,120}(?:%3D|=){0,2})", "v"),
    _rule("jwt", r"ey[A-Za-z0-9_\-]{10,}\.ey[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{16,}", token=True),
    _rule("alibaba-access-key", r"LTAI[A-Za-z0-9]{12,30}", 0, _looks_random, token=True),
    _rule("tencent-secret-id", r"AKID[A-Za-z0-9]{13,40}", 0, _looks_random, token=True),
    _rule("npm-token", r"npm_[A-Za-z0-9]{36}", token=True),
    _rule("pypi-token", r"pypi-AgE[A-Za-z0-9_\-]{50,300}", token=True),
    _rule("huggingface-token", r"hf_[A-Za-z0-9]{30,40}", 0, _looks_random, token=True),
    _rule("twilio-key", r"(?:SK|AC)[0-9a-f]{32}", token=True),
    _rule("sendgrid-key", r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}", token=True),
    _rule("discord-bot-token", r"[MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,38}", 0,
          _looks_random, token=True),
    _rule("telegram-bot-token", r"[0-9]{8,10}:AA[A-Za-z0-9_\-]{33}", token=True),
    _rule("bearer-token", r"(?i:\b(?:bearer|token|basic))[ \t]+(?P<v>[A-Za-z0-9\-._~+/]{20,}=*)", "v",
          _looks_random, priority=PLUGIN),
    # The password of any scheme://user:password@host; the user and the host stay.
    _rule("url-password", r"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:/@'\"<>]{0,64}:(?P<v>[^\s@/'\"<>]{1,128})@"
          r"[A-Za-z0-9\-._\[\]]", "v", priority=PLUGIN),
)


def _format_findings(text: str) -> Iterator[tuple[int, int, str, int]]:
    for rule in _FORMAT_RULES:
        for match in rule.pattern.finditer(text):
            if rule.is_token and match.start() and text[match.start() - 1] in _TOKEN_CHARS:
                continue
            value = match.group(rule.group)
            if _is_stand_in(value, rule.kind) or (rule.check is not None and not rule.check(value)):
                continue
            yield match.start(rule.group), match.end(rule.group), rule.kind, rule.priority


# --- secret-named assignments -------------------------------------------------------------

# The key is read whole and judged by its last word, so `db_password` counts and
# `password_field` does not.
_ASSIGNMENT = re.compile(
    r"""(?<![\w.\-$@])
        (?P<key>[\w.\-]{0,40}?(?i:pass|pwd|secret|token|key|credential)[\w.\-]{0,40})
        (?P<close>["'`\]]{0,3})
        (?P<op>[ \t]*(?::[ \t]*[A-Za-z_][\w.\[\]| ]{0,30}?[ \t]+=(?!=)|:=|=>|=(?!=)|:(?![:/]))[ \t]*)
        (?:"(?P<dq>[^"\r\n]{1,512})"|'(?P<sq>[^'\r\n]{1,512})'|`(?P<bq>[^`\r\n]{1,512})`
           |(?P<bare>[^\s"'`,;&()\[\]{}<>]{1,512}))""",
    re.VERBOSE | re.ASCII)
# Chat: "我的密码是 …", "token 为 …", "the password is …".
_CHAT_ASSIGNMENT = re.compile(
    r"(?P<key>密码|口令|密钥|秘钥|私钥|令牌"
    r"|(?<![A-Za-z0-9_])(?i:password|passwd|token|secret|api[ _\-]?key))"
    r"[ \t]*(?:是|为|：|(?i:\s+is))[ \t]*[“\"'「`]?(?P<bare>[!-~]{6,256})")

_PASSWORD_WORDS = frozenset({"password", "passwd", "pwd", "pass", "passphrase", "passcode", "密码", "口令"})
_KIND_BY_WORD = {**dict.fromkeys(_PASSWORD_WORDS, "password"), "token": "token", "令牌": "token",
                 "secret": "secret", "密钥": "secret", "秘钥": "secret", "私钥": "private-key",
                 "apikey": "api-key", "credential": "credential", "credentials": "credential"}
_KEY_QUALIFIERS = {"api": "api-key", "access": "api-key", "auth": "api-key", "client": "api-key",
                   "app": "api-key", "service": "api-key", "account": "api-key", "master": "api-key",
                   "license": "api-key", "subscription": "api-key", "consumer": "api-key",
                   "secret": "secret", "private": "private-key", "signing": "private-key",
                   "encryption": "private-key", "ssh": "private-key", "webhook": "secret",
                   "hmac": "secret", "jwt": "secret", "session": "secret"}
_TRAILING_NOISE = frozenset({"base", "value", "val", "str", "string", "raw", "plain", "b64", "base64"})
_SPECIAL_TOKENS = frozenset({"bos", "eos", "pad", "unk", "sep", "cls", "mask", "start", "end", "special"})
_KEY_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[^\x00-\x7f]+")
_IDENTIFIER_CHAIN = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*", re.ASCII)
_PROSE_AFTER = re.compile(r"[ \t]+[^\W\d_]")
_TYPE_NAME = re.compile(r"(?:[A-Z][a-z]+)+", re.ASCII)
_PATH = re.compile(r"(?:~|\.{1,2})?/[\w.\-/]*/[\w.\-]*|https?://[^@\s]*", re.ASCII)


def _secret_kind(key: str) -> str | None:
    """The kind a key names (`db_password` → password), or None for `password_field`."""
    words = [w.lower() for w in _KEY_WORDS.findall(key)]
    while words and words[-1] in _TRAILING_NOISE:
        words.pop()
    if not words:
        return None
    last, previous = words[-1], words[-2] if len(words) > 1 else ""
    if last == "key":
        return _KEY_QUALIFIERS.get(previous)
    if last == "token" and previous in _SPECIAL_TOKENS:
        return None
    return _KIND_BY_WORD.get(last)


def _is_secret_value(value: str, *, bare: bool = False, key: str = "", is_expression: bool = False) -> bool:
    if len(value) < 6 or _is_placeholder(value) or _PATH.fullmatch(value) or _NAME_OR_COLOUR.fullmatch(value):
        return False
    if not bare:
        return True
    if value[0] in "!&*|>" or not any(c.isalpha() for c in value):
        return False  # YAML tags, anchors and block scalars; numbers
    if _IDENTIFIER_CHAIN.fullmatch(value):
        # An unquoted name is a reference in code; in .env and YAML it is the value itself.
        return not is_expression and "." not in value and (key.isupper() or "_" not in value)
    return True


def _is_expression(match: re.Match[str], text: str) -> bool:
    """True where an unquoted value is code or prose, not a literal from a .env or YAML file."""
    op = match["op"].strip(" \t")
    after = text[match.end():match.end() + 3]
    if after.lstrip(" \t")[:1] in (",", ")", "}", ";", "(", "[", "."):
        return True
    if op == ":":
        # "access_token: Access token from the OAuth flow" (a docstring), "Token: expired" (prose),
        # "token: TextGenerationOutputToken" (an annotation)
        return (_PROSE_AFTER.match(after) is not None or match["key"].istitle()
                or _TYPE_NAME.fullmatch(match["bare"]) is not None)
    return op != "=" or match["op"] != "=" or bool(match["close"])


def _is_quoted_label(match: re.Match[str], text: str) -> bool:
    """The key is the last words of a quoted label, as in {"GitHub Token": "github-token"}."""
    before = text[match.start() - 1:match.start()]
    return match["close"][:1] in ("\"", "'", "`") and before not in ("", "\"", "'", "`")


def _assignment_findings(text: str) -> Iterator[tuple[int, int, str, int]]:
    for match in _ASSIGNMENT.finditer(text):
        kind = _secret_kind(match["key"])
        if kind is None or _is_quoted_label(match, text):
            continue
        group = next(g for g in ("dq", "sq", "bq", "bare") if match[g] is not None)
        if group == "bare":
            is_secret = _is_secret_value(match[group], bare=True, key=match["key"],
                                         is_expression=_is_expression(match, text))
        else:
            is_secret = _is_secret_value(match[group])
        if is_secret:
            yield match.start(group), match.end(group), kind, KEYWORD


def _chat_findings(text: str) -> Iterator[tuple[int, int, str, int]]:
    for match in _CHAT_ASSIGNMENT.finditer(text):
        value = match["bare"].rstrip(".,;:!?)]}\"'`”」")
        # "if token is Token.Name.Builtin:" is code, not someone sharing a token
        is_dotted_name = "." in value and _IDENTIFIER_CHAIN.fullmatch(value) is not None
        if _looks_random(value) and _is_secret_value(value) and not is_dotted_name:
            kind = _secret_kind(match["key"]) or "secret"
            yield match.start("bare"), match.start("bare") + len(value), kind, KEYWORD


# --- detect-secrets ---------------------------------------------------------------------

_PLUGIN_KINDS = {
    "AWS Access Key": "aws-access-key", "Azure Storage Account access key": "azure-storage-key",
    "Basic Auth Credentials": "url-password", "Discord Bot Token": "discord-bot-token",
    "GitHub Token": "github-token", "GitLab Token": "gitlab-token", "JSON Web Token": "jwt",
    "NPM tokens": "npm-token", "OpenAI Token": "openai-api-key", "Private Key": "private-key",
    "PyPI Token": "pypi-token", "SendGrid API Key": "sendgrid-key", "Slack Token": "slack-token",
    "Stripe Access Key": "stripe-key", "Telegram Bot Token": "telegram-bot-token",
    "Twilio API Key": "twilio-key",
}
# High entropy: see the module docstring. Public IPs are not secrets, and detect-secrets' own
# default filters (no letter, no secret) drop every one of them anyway.
_SKIPPED_PLUGINS = ("Base64 High Entropy String", "Hex High Entropy String", "Public IP (ipv4)")
# Every word of KeywordDetector's denylist contains one of these: lines without any are skipped.
_KEYWORD_HINT = re.compile(r"(?i:key|pass|pwd|secret|contrase)")
_KEY_BEFORE = re.compile(r"([\w.\-]+)[\"'`\]\[ \t]*(?:[:=!]=?=?|=>)[ \t@]*[\"'`]?$")
_HASH_LENGTHS = frozenset({7, 8, 12, 32, 40, 64, 128})


def _load_plugins() -> tuple[tuple[BasePlugin, str], ...]:
    plugins = []
    for secret_type, plugin_class in get_mapping_from_secret_type_to_class().items():
        if secret_type not in _SKIPPED_PLUGINS:
            kind = _PLUGIN_KINDS.get(secret_type) or re.sub(r"[^a-z0-9]+", "-", secret_type.lower()).strip("-")
            plugins.append((plugin_class(), kind))
    return tuple(plugins)


_PLUGINS = _load_plugins()


def _plugin_findings(text: str) -> Iterator[tuple[int, int, str, int]]:
    offset = 0
    for raw_line in text.split("\n"):
        line = raw_line.rstrip("\r")
        if 8 <= len(line) <= MAX_PLUGIN_LINE:
            has_keyword = _KEYWORD_HINT.search(line) is not None
            for plugin, kind in _PLUGINS:
                if has_keyword or not isinstance(plugin, KeywordDetector):
                    for value in set(plugin.analyze_string(line)):
                        yield from _locate(value, line, offset, plugin, kind)
        offset += len(raw_line) + 1


def _locate(value: str, line: str, offset: int, plugin: BasePlugin,
            kind: str) -> Iterator[tuple[int, int, str, int]]:
    """Every place `value` occurs in the line, unless detect-secrets' default filters or ours drop it."""
    if (not value or heuristic.is_sequential_string(value) or heuristic.is_potential_uuid(value)
            or heuristic.is_templated_secret(value) or heuristic.is_prefixed_with_dollar_sign(value)
            or heuristic.is_not_alphanumeric_string(value) or _is_stand_in(value, kind)):
        return
    is_keyword = isinstance(plugin, KeywordDetector)
    if is_keyword and (heuristic.is_indirect_reference(line) or heuristic.is_likely_id_string(value, line)):
        return
    if kind == "aws-access-key" and len(value) in _HASH_LENGTHS and all(c in "0123456789abcdef" for c in value):
        return  # the plugin's "aws … key … <40 chars>" rule also matches sha1 hashes
    start = line.find(value)
    while start != -1:
        end = start + len(value)
        if not is_keyword:
            yield offset + start, offset + end, kind, PLUGIN
        else:
            key = _KEY_BEFORE.search(line, max(0, start - 200), start)
            found = _secret_kind(key[1]) if key else "secret"
            if found and _is_secret_value(value):
                yield offset + start, offset + end, found, KEYWORD
        start = line.find(value, end)


# --- merging ----------------------------------------------------------------------------

def _merge(spans: list[tuple[int, int, str, int]]) -> list[Finding]:
    """One finding per run of overlapping or touching spans, named by its strongest member."""
    groups: list[list[tuple[int, int, str, int]]] = []
    group_end = -1
    for span in sorted(spans):
        if groups and span[0] <= group_end:
            groups[-1].append(span)
            group_end = max(group_end, span[1])
        else:
            groups.append([span])
            group_end = span[1]
    findings = []
    for group in groups:
        strongest = max(group, key=lambda s: (s[3], s[1] - s[0]))
        findings.append(Finding(strongest[2], group[0][0], max(s[1] for s in group)))
    return findings
