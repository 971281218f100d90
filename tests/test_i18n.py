"""The catalogs are complete and compiled, and the app picks and applies the right locale."""

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path
from string import Formatter

import pytest
from babel.messages.mofile import read_mo, write_mo

from engine.errors import EngineError, ModelNotFoundError, N_, PromptTooLongError
from zhiyin import i18n

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("catalogs", ROOT / "scripts/update_catalogs.py")
catalogs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(catalogs)


@pytest.fixture(scope="module")
def template():
    return catalogs.extract()


@pytest.fixture
def clean_env(monkeypatch):
    for name in i18n.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    i18n.set_locale(None)
    yield monkeypatch
    i18n.set_locale(None)


def placeholders(text: str) -> set[tuple[str, str | None, str]]:
    return {(field, conversion, spec) for _, field, spec, conversion in Formatter().parse(text)
            if field is not None}


def test_every_message_is_translated_to_chinese(template):
    assert len(template) > 1, "extraction found nothing: check babel.cfg and the keywords"
    left = catalogs.todo(template, catalogs.read_catalog("zh_CN"))
    assert not left, (
        "missing, empty or fuzzy in zh_CN.po; run scripts/update_catalogs.py, translate, rerun:\n"
        + "\n".join(left))


def test_chinese_keeps_the_placeholders():
    wrong = []
    for message in catalogs.read_catalog("zh_CN"):
        ids, strings = catalogs.as_tuple(message.id), catalogs.as_tuple(message.string)
        expected = set().union(*map(placeholders, ids))
        wrong += [f"{ids[0]!r} -> {s!r}" for s in strings if s and placeholders(s) != expected]
    assert not wrong, "placeholders differ from the msgid:\n" + "\n".join(wrong)


@pytest.mark.parametrize("locale", catalogs.LOCALES)
def test_committed_mo_matches_po(locale):
    compiled = io.BytesIO()
    write_mo(compiled, catalogs.read_catalog(locale))
    compiled.seek(0)
    with open(catalogs.po_path(locale).with_suffix(".mo"), "rb") as f:
        committed = read_mo(f)

    def entries(catalog):
        return {(m.id, m.context): m.string for m in catalog if m.id}

    assert entries(committed) == entries(read_mo(compiled)), (
        f"{locale}/LC_MESSAGES/zhiyin.mo is stale: run scripts/update_catalogs.py")


@pytest.mark.parametrize(("env", "expected"), [
    ({"LANG": "zh_CN.UTF-8"}, "zh_CN"),
    ({"LANG": "zh_TW.UTF-8"}, "zh_CN"),
    ({"LANG": "en_US.UTF-8"}, "en"),
    ({"LANG": "C"}, "en"),
    ({"LANG": "POSIX"}, "en"),
    ({"LANG": "fr_FR.UTF-8"}, "en"),
    ({}, "en"),
    ({"ZHIYIN_LANG": "zh_CN", "LANG": "en_US.UTF-8"}, "zh_CN"),
    ({"ZHIYIN_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"ZHIYIN_LANG": "en", "LC_ALL": "zh_CN.UTF-8"}, "en"),
    ({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LC_MESSAGES": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, "zh_CN"),
    ({"LANGUAGE": "zh_CN:en", "LANG": "en_US.UTF-8"}, "zh_CN"),
])
def test_locale_from_environment(clean_env, env, expected):
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert i18n.current_locale() == expected


def test_set_locale_beats_environment(clean_env):
    clean_env.setenv("ZHIYIN_LANG", "en")
    i18n.set_locale("zh-cn")  # an LSP client sends BCP 47 tags
    assert i18n.current_locale() == "zh_CN"
    i18n.set_locale("en-US")
    assert i18n.current_locale() == "en"
    i18n.set_locale(None)
    clean_env.setenv("ZHIYIN_LANG", "zh_CN")
    assert i18n.current_locale() == "zh_CN"


def test_translate_error(clean_env):
    err = ModelNotFoundError(path="/x.gguf")
    i18n.set_locale("en")
    assert i18n.translate_error(err) == str(err)
    i18n.set_locale("zh_CN")
    text = i18n.translate_error(err)
    assert text.startswith("找不到模型：/x.gguf") and "`zhiyin model list`" in text
    assert i18n.translate_error(PromptTooLongError(num_tokens=9000, max_tokens=8192)).startswith(
        "提示词共 9000 个 token")


def test_translate_error_translates_marked_params(clean_env):
    err = ModelNotFoundError(path=N_(EngineError.message))  # any extracted msgid will do
    i18n.set_locale("zh_CN")
    assert "推理引擎运行出错" in i18n.translate_error(err)


def test_runs_from_mo_without_babel():
    code = ("import sys; from engine.errors import ModelNotFoundError; from zhiyin import i18n; "
            "print(i18n.translate_error(ModelNotFoundError(path='/x.gguf'))); "
            "print('babel' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in i18n.ENV_VARS}
    env["ZHIYIN_LANG"] = "zh_CN.UTF-8"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0].startswith("找不到模型") and out[1] == "False"
