"""The redaction gate against a seeded corpus of planted secrets and harmless look-alikes."""
import re
import time
from collections import defaultdict
from functools import cache

import pytest

from engram.redaction import Finding, Redaction, redact
from tests.engram.secret_corpus import harmless_corpus, planted_corpus

PLANTED = planted_corpus()
HARMLESS = harmless_corpus()
KINDS = sorted({kind for case in PLANTED for kind, _ in case.secrets})
WINDOW = 8
MAX_CHANGED_FRACTION = 0.02


@cache
def redacted(text: str) -> Redaction:
    return redact(text)


def leaks(secret: str, text: str) -> list[str]:
    """The substrings of `secret` of WINDOW characters (or all of it, if shorter) still in `text`."""
    n = min(WINDOW, len(secret))
    return sorted({secret[i:i + n] for i in range(len(secret) - n + 1) if secret[i:i + n] in text})


def test_corpus_is_big_and_varied():
    secrets = [secret for case in PLANTED for _, secret in case.secrets]
    assert len(secrets) >= 200 and len(KINDS) >= 15, (len(secrets), len(KINDS))
    assert {case.carrier for case in PLANTED} == {"chat-en", "chat-zh", "diff", "rules"}
    assert len(HARMLESS) >= 300
    assert all(secret in case.text for case in PLANTED for _, secret in case.secrets)
    assert planted_corpus() == PLANTED, "the corpus must be the same on every run"


@pytest.mark.parametrize("kind", KINDS)
def test_every_planted_secret_is_gone(kind):
    failures = []
    for case in PLANTED:
        out = redacted(case.text).text
        for secret_kind, secret in case.secrets:
            if secret_kind == kind and leaks(secret, out):
                failures.append(f"{case.carrier}: {leaks(secret, out)[:3]} survive in\n{out[:600]}")
    assert not failures, "\n\n".join(failures[:5])


def test_detection_summary(capsys):
    planted = recovered = 0
    by_kind = defaultdict(int)
    for case in PLANTED:
        out = redacted(case.text).text
        for kind, secret in case.secrets:
            planted += 1
            if leaks(secret, out):
                recovered += 1
                by_kind[kind] += 1
    with capsys.disabled():
        print(f"\nplanted {planted} secrets of {len(KINDS)} kinds -> {recovered} recoverable {dict(by_kind)}")
    assert recovered == 0


def test_harmless_texts_stay_as_they_are(capsys):
    changed = []
    for label, text in HARMLESS:
        result = redact(text)
        if result.text != text:
            changed.append(f"{label} {[(f.kind, text[f.start:f.end]) for f in result.findings]}")
    with capsys.disabled():
        print(f"\nharmless {len(HARMLESS)} texts -> {len(changed)} changed" + "".join(f"\n  {c}" for c in changed))
    assert len(changed) < MAX_CHANGED_FRACTION * len(HARMLESS), "\n".join(changed)


@pytest.mark.parametrize("kind", KINDS)
def test_placeholders_name_the_kind(kind):
    missing = []
    for case in PLANTED:
        if any(k == kind for k, _ in case.secrets):
            result = redacted(case.text)
            if f"[REDACTED:{kind}]" not in result.text or kind not in {f.kind for f in result.findings}:
                missing.append(f"{case.carrier}: {[f.kind for f in result.findings]}")
    assert not missing, "\n".join(missing[:5])


def test_findings_point_into_the_original_text():
    for case in PLANTED:
        result = redact(case.text)
        rebuilt, pos = [], 0
        for finding in result.findings:
            assert pos <= finding.start < finding.end <= len(case.text)
            rebuilt += [case.text[pos:finding.start], f"[REDACTED:{finding.kind}]"]
            pos = finding.end
        assert "".join(rebuilt) + case.text[pos:] == result.text
        for _, secret in case.secrets:
            start = case.text.find(secret)
            assert any(f.start <= start and start + len(secret) <= f.end for f in result.findings), secret[:20]


def test_a_clean_text_is_returned_as_is():
    result = redact("把超时从 30 秒改成 60 秒，然后重跑 make test。")
    assert result == Redaction("把超时从 30 秒改成 60 秒，然后重跑 make test。", ())
    assert not result.redacted
    assert redact("") == Redaction("", ())


def test_a_private_key_block_goes_whole():
    body = ["MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
            "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
            "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo"]
    text = ("Before the key.\n-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(body)
            + "\n-----END RSA PRIVATE KEY-----\nAfter the key.")
    for variant in (text, text.replace("\n", "\r\n")):
        result = redact(variant)
        assert [f.kind for f in result.findings] == ["private-key"]
        assert result.text.replace("\r\n", "\n") == "Before the key.\n[REDACTED:private-key]\nAfter the key."
    # Cut off before its END line, it still goes.
    result = redact(text.split("-----END")[0])
    assert all(not leaks(line, result.text) for line in body)


def test_public_key_material_stays():
    text = "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ\n-----END CERTIFICATE-----"
    assert redact(text).text == text


def test_crlf_text():
    for case in PLANTED:
        text = case.text.replace("\n", "\r\n")
        out = redact(text).text
        for _, secret in case.secrets:
            for part in secret.split("\n"):
                assert not leaks(part, out), (case.carrier, part[:20])
        assert re.search(r"(?<!\r)\n|\r(?!\n)", out) is None, "a CRLF line ending was split"
    changed = [label for label, text in HARMLESS if redact(text.replace("\n", "\r\n")).text != text.replace("\n", "\r\n")]
    assert len(changed) < MAX_CHANGED_FRACTION * len(HARMLESS), changed


@pytest.mark.parametrize("secret,kind", [
    ("sk-proj-Q2hpbmVzZVRleHRBcm91bmRLZXlzMTIzNDU2Nzg5MGFiY2RlZg", "openai-api-key"),
    ("ghp_9fK2mQ7xLp3RtV8wZ1nB4cH6jD0sA5eYuG2i", "github-token"),
    ("LTAI5tQx8Zr2Mk9Wp4Vn7Bc3", "alibaba-access-key"),
    ("AKIDz8krbsJ5yKBZQpn74WFkmLPx3Rq9Tc2Hw6", "tencent-secret-id"),
    ("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", "huggingface-token"),
])
def test_secrets_touching_chinese_text(secret, kind):
    for text in (f"密钥{secret}，谢谢", f"我的 key 是 {secret} 帮我看看为什么报错", f"「{secret}」。"):
        result = redact(text)
        assert not leaks(secret, result.text), result.text
        assert result.text == text.replace(secret, f"[REDACTED:{kind}]")


@pytest.mark.parametrize("url,expected", [
    ("postgres://app:Xk9mQ2vLp7@db.internal:5432/app", "postgres://app:[REDACTED:url-password]@db.internal:5432/app"),
    ("mongodb+srv://svc:Tz8-pQ4~wN1@cluster0.ab12c.mongodb.net/prod",
     "mongodb+srv://svc:[REDACTED:url-password]@cluster0.ab12c.mongodb.net/prod"),
    ("redis://:Rq7vKp2mXz@cache:6379/0", "redis://:[REDACTED:url-password]@cache:6379/0"),
    ("postgres://app:${DB_PASSWORD}@db:5432/app", "postgres://app:${DB_PASSWORD}@db:5432/app"),
    ("https://li.wei@git.acme.cn/infra/deploy.git", "https://li.wei@git.acme.cn/infra/deploy.git"),
])
def test_a_url_keeps_its_user_and_host(url, expected):
    assert redact(url).text == expected


def test_chinese_password_sentence():
    result = redact("数据库密码是 Zq7!mK2vLp9x，帮我看看为什么连不上")
    assert result.text == "数据库密码是 [REDACTED:password]，帮我看看为什么连不上"


@pytest.mark.parametrize("text", [case.text for case in PLANTED] + [text for _, text in HARMLESS])
def test_redaction_is_idempotent(text):
    once = redact(text)
    twice = redact(once.text)
    assert twice.text == once.text and twice.findings == ()


def test_a_two_megabyte_diff(capsys):
    parts, size, cases = [], 0, []
    harmless = [text for _, text in HARMLESS]
    i = 0
    while size < 2_000_000:
        case = PLANTED[i % len(PLANTED)]
        filler = "\n".join("+" + line for line in harmless[i % len(harmless)].split("\n"))
        chunk = f"{case.text}\n{filler}\n"
        parts.append(chunk)
        cases.append(case)
        size += len(chunk.encode())
        i += 1
    diff = "".join(parts)
    start = time.perf_counter()
    result = redact(diff)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n{len(diff.encode()) / 1e6:.1f} MB diff, {len(result.findings)} findings, redacted in {elapsed:.2f} s")
    # leaks() per secret would rescan 2 MB a hundred thousand times: look the windows up instead.
    windows = {secret[i:i + WINDOW] for case in cases for _, secret in case.secrets
               for i in range(len(secret) - WINDOW + 1)}
    out = result.text
    survivors = {out[i:i + WINDOW] for i in range(len(out) - WINDOW + 1)} & windows
    assert not survivors, sorted(survivors)[:5]
    assert result.text.count("\n") <= diff.count("\n")


def test_redaction_types_are_frozen():
    result = redact("token = 'Zq7mK2vLp9xW3'")
    assert result.redacted and isinstance(result.findings[0], Finding)
    with pytest.raises(AttributeError):
        result.text = ""  # type: ignore[misc]
