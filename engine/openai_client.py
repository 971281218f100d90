"""An OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, DeepSeek's API, `zhiyin engine
serve`) as the model: the same `TextModel` the local engine is, so completions, chat, edits and
review run on either without a change.

The `openai` client does the HTTP: timeouts, and retries with backoff on 429 and 5xx (honouring
Retry-After). Chat prompts go as messages (the server applies its template); completions as a
prompt with `suffix` for fill-in-the-middle, or, on a server that refuses `suffix`, the prefix alone
(remembered after the first refusal). Opening checks the server once: reachable, the key accepted,
the model served, one token generated; each failure is one clear error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import openai

from engine.errors import N_, EngineError
from engine.prompt import Prompt
from engine.sampling import SamplingParams
from engine.scheduler import GenerationChunk, GenerationStats

CHARS_PER_TOKEN = 3.0  # estimate for fitting prompts: code and CJK both average about this or less
MAX_STOP_STRINGS = 4  # OpenAI's limit


class ServerUnreachableError(EngineError):
    message = N_("Cannot reach the model server at {url}: {detail}. Check that it runs and the address "
                 "(openai.base_url in the configuration).")


class ServerAuthError(EngineError):
    message = N_("The model server at {url} refused the API key. Set the right key in the environment "
                 "variable named by openai.api_key_env.")


class ServerModelMissingError(EngineError):
    message = N_("The model server at {url} does not serve {model}; it serves: {available}.")


class ServerError(EngineError):
    message = N_("The model server failed: {detail}")


class OpenAIModel:
    """`TextModel` over an OpenAI-compatible HTTP API."""

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 timeout_s: float = 60.0, max_retries: int = 3, max_context: int | None = None) -> None:
        self.base_url = base_url
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout_s,
                                     max_retries=max_retries)
        self._suffix_ok = True
        served = self._check(model)
        self.model_id = served["id"]
        self.max_context = max_context or int(served.get("max_model_len") or 8192)
        self._probe()

    def _probe(self) -> None:
        """One token of chat: the model answers at all (a listed model can still fail to load)."""
        for _chunk in self.generate(self.chat_prompt([{"role": "user", "content": "hi"}]),
                                    SamplingParams(max_tokens=1, temperature=0)):
            pass

    def _check(self, model: str | None) -> dict:
        """The served model's entry from /v1/models; raises a clear error when something is off."""
        with self._errors():
            served = [m.model_dump() for m in self._client.models.list().data]
        names = [m["id"] for m in served]
        if model is None and served:
            return served[0]
        for m in served:
            if m["id"] == model:
                return m
        raise ServerModelMissingError(url=self.base_url, model=model, available=", ".join(names) or "-")

    # --- TextModel ---------------------------------------------------------------------------------------

    def chat_prompt(self, messages: list[dict[str, str]]) -> Prompt:
        chars = sum(len(m.get("content") or "") for m in messages)
        return Prompt(messages=messages, num_tokens=int(chars / CHARS_PER_TOKEN) + 8 * len(messages))

    def completion_prompt(self, prefix: str, suffix: str | None = None) -> Prompt:
        chars = len(prefix) + len(suffix or "")
        return Prompt(prefix=prefix, suffix=suffix, num_tokens=int(chars / CHARS_PER_TOKEN) + 4)

    def generate(self, prompt: Prompt | str, params: SamplingParams,
                 cancel: threading.Event | None = None) -> Iterator[GenerationChunk]:
        if isinstance(prompt, str):
            prompt = self.completion_prompt(prompt)
        return self._stream(prompt, params, cancel)

    def _stream(self, prompt: Prompt, params: SamplingParams, cancel: threading.Event | None) -> Iterator[GenerationChunk]:
        started = time.perf_counter()
        stats = GenerationStats(num_prompt_tokens=prompt.num_tokens)
        first, finish = None, None
        stream = self._open(prompt, params)
        try:
            for chunk in stream:
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                for choice in chunk.choices:
                    text = choice.delta.content if prompt.messages is not None else choice.text
                    finish = choice.finish_reason or finish
                    if text:
                        if first is None:
                            first = time.perf_counter()
                            stats.time_to_first_token_s = first - started
                        stats.num_generated += 1  # one token per streamed piece, as servers send them
                        yield GenerationChunk(text, [])
        except (openai.APIError, ValueError) as e:  # ValueError: an event that is not JSON
            raise ServerError(detail=_cause(e)) from e
        finally:
            stream.close()  # a reader that stops early, or a cancel, ends the request on the server too
        if first is not None:
            stats.decode_s = time.perf_counter() - first
        reason = finish if finish in ("length", "cancelled") else "stop"
        yield GenerationChunk("", [], reason, stats)

    def _open(self, prompt: Prompt, params: SamplingParams):
        common = {"model": self.model_id, "max_tokens": params.max_tokens, "temperature": params.temperature,
                  "top_p": params.top_p, "stream": True, "seed": params.seed}
        stop = [*params.stop][:MAX_STOP_STRINGS]
        if stop:
            common["stop"] = stop
        with self._errors():
            if prompt.messages is not None:
                return self._client.chat.completions.create(messages=prompt.messages, **common)
            if prompt.suffix and self._suffix_ok:
                try:
                    return self._client.completions.create(prompt=prompt.prefix, suffix=prompt.suffix, **common)
                except openai.BadRequestError:
                    self._suffix_ok = False  # this server has no FIM: the prefix alone from now on
            return self._client.completions.create(prompt=prompt.prefix or "", **common)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The client's exceptions as the user's errors, each saying what to check."""
        try:
            yield
        except openai.AuthenticationError as e:
            raise ServerAuthError(url=self.base_url) from e
        except openai.APIConnectionError as e:
            raise ServerUnreachableError(url=self.base_url, detail=_cause(e)) from e
        except openai.APIError as e:
            raise ServerError(detail=_cause(e)) from e


def _cause(error: Exception) -> str:
    """The most specific reason in an exception chain, in one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).splitlines()[0] if str(error) else type(error).__name__
