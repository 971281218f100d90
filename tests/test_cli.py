"""The `zhiyin` command as a user runs it: real process, real model, both languages."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ZHIYIN = str(Path(sys.executable).parent / "zhiyin")
CJK = re.compile(r"[\u4e00-\u9fff]")


def zhiyin(*args: str, lang: str = "en", stdin: str | None = None, env: dict | None = None, tmp_home: Path | None = None):
    full_env = {**os.environ, "ZHIYIN_LANG": lang, **(env or {})}
    if tmp_home is not None:  # keep the user's real config out of the test
        full_env["XDG_CONFIG_HOME"] = str(tmp_home)
    return subprocess.run([ZHIYIN, *args], input=stdin, capture_output=True, text=True, env=full_env, timeout=600)


def assert_one_line_error(result, lang: str, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert bool(CJK.search(lines[0])) == (lang == "zh_CN"), lines[0]


@pytest.mark.slow
def test_generate_streams_a_completion(tmp_path):
    result = zhiyin("generate", "def fibonacci(n):", "--max-tokens", "24", tmp_home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("def fibonacci(n):") and len(result.stdout) > len("def fibonacci(n):") + 10
    assert "tokens/s" in result.stderr


@pytest.mark.slow
def test_generate_chat_answers_in_chinese_locale(tmp_path):
    result = zhiyin("generate", "--chat", "用 Python 写一个快速排序", "--max-tokens", "48", lang="zh_CN", tmp_home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert CJK.search(result.stderr)  # the statistics line is translated


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_missing_model_file(tmp_path, lang):
    missing = str(tmp_path / "nope.gguf")
    assert_one_line_error(zhiyin("generate", "x", "--model", missing, lang=lang, tmp_home=tmp_path), lang, missing)


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_truncated_model_file(tmp_path, default_model, lang):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(default_model.read_bytes()[: 40 << 20])
    assert_one_line_error(zhiyin("generate", "x", "--model", str(truncated), lang=lang, tmp_home=tmp_path), lang, str(truncated))


def test_corrupt_model_file(tmp_path):
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(4096))
    assert_one_line_error(zhiyin("generate", "x", "--model", str(corrupt), tmp_home=tmp_path), "en", str(corrupt))


def test_file_that_is_no_model(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_one_line_error(zhiyin("generate", "x", "--model", str(text), tmp_home=tmp_path), "en", str(text))


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_unknown_architecture(tmp_path, tiny_tokenizer, lang):
    from tests.tiny_checkpoints import build_hf_model, save_gguf

    path = save_gguf(build_hf_model("llama"), tiny_tokenizer, tmp_path / "mamba.gguf", arch_name="mamba")
    assert_one_line_error(zhiyin("generate", "x", "--model", str(path), lang=lang, tmp_home=tmp_path), lang, "mamba")


def test_tokenizer_that_does_not_fit_the_model(tmp_path):
    from tests.tiny_checkpoints import build_hf_model, save_hf_folder, train_tokenizer

    tokenizer = train_tokenizer(vocab_size=400)  # the model has 300 embedding rows
    assert tokenizer.get_vocab_size() > 300
    folder = save_hf_folder(build_hf_model("llama"), tokenizer, tmp_path / "mismatch")
    result = zhiyin("generate", "x", "--model", str(folder), tmp_home=tmp_path)
    assert_one_line_error(result, "en", str(tokenizer.get_vocab_size()), "300")


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_prompt_longer_than_the_context(tmp_path, tiny_models, lang):
    _, folder, _ = tiny_models["llama"]  # a 1,024-token context
    result = zhiyin("generate", "--model", str(folder), lang=lang, stdin="def f(): pass\n" * 400, tmp_home=tmp_path)
    assert_one_line_error(result, lang, "1024")


def test_broken_config_file(tmp_path):
    (tmp_path / "zhiyin").mkdir()
    (tmp_path / "zhiyin" / "config.toml").write_text("model = [unclosed")
    assert_one_line_error(zhiyin("generate", "x", tmp_home=tmp_path), "en", "config.toml")


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_device_and_host_tier_budgets_need_sparse_attention_and_enough_room(tmp_path, lang):
    (tmp_path / "zhiyin").mkdir()
    config = tmp_path / "zhiyin" / "config.toml"
    config.write_text("[engine]\nkv_device_mib = 512\n")  # dense attention reads every block in full precision
    assert_one_line_error(zhiyin("generate", "x", lang=lang, tmp_home=tmp_path), lang, "kv_device_mib", "sparse-fp8")
    config.write_text('[engine]\nattention = "sparse-fp8"\nmax_context = 65536\nkv_device_mib = 8\n')
    assert_one_line_error(zhiyin("generate", "x", lang=lang, tmp_home=tmp_path), lang, "kv_device_mib = 8")
    config.write_text('[engine]\nattention = "sparse-fp8"\nmax_context = 65536\nkv_host_mib = 8\n')
    assert_one_line_error(zhiyin("generate", "x", lang=lang, tmp_home=tmp_path), lang, "kv_host_mib = 8")


def test_model_from_config_and_model_list(tmp_path, tiny_models):
    _, folder, gguf_file = tiny_models["qwen2"]
    (tmp_path / "zhiyin").mkdir()
    (tmp_path / "zhiyin" / "config.toml").write_text(f'model = "tiny"\n[models]\ntiny = "{gguf_file}"\n')
    listing = zhiyin("model", "list", tmp_home=tmp_path, env={"COLUMNS": "200"})
    assert listing.returncode == 0
    assert "smollm2-135m-instruct" in listing.stdout and "tiny *" in listing.stdout and str(gguf_file) in listing.stdout
    result = zhiyin("generate", "def", "--max-tokens", "4", "--quiet", tmp_home=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("def") and result.stderr == ""


@pytest.mark.parametrize("args", [[], ["generate"], ["model"], ["model", "list"], ["index"], ["search"], ["map"], ["lsp"]])
def test_help_exists_in_both_languages(args):
    for lang in ("en", "zh_CN"):
        result = zhiyin(*args, "--help", lang=lang)
        assert result.returncode == 0 and "--help" in result.stdout
        assert bool(CJK.search(result.stdout.replace("知音", ""))) == (lang == "zh_CN"), result.stdout


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_lsp_rejects_a_bad_tcp_address(lang):
    result = zhiyin("lsp", "--tcp", "localhost:http", lang=lang)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert bool(CJK.search(result.stderr.splitlines()[-1])) == (lang == "zh_CN"), result.stderr
