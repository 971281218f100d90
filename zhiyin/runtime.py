"""Opening what the commands and servers work with: the inference engine, the repository index."""

import ipaddress
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import platformdirs
from rich.console import Console

from engine import EngineOptions, LLMEngine
from engine.embedder import load_embedder
from engine.model_files import resolve_adapter, resolve_model
from engine.prompt import TextModel
from indexer.index import Index
from zhiyin.config import Config, OpenAISettings, load_config
from zhiyin.i18n import N_, _


def open_engine(config: Config, model: str | None = None, dtype: str | None = None,
                threads: int | None = None, adapter: str | None = None) -> TextModel:
    """The OpenAI-compatible server the user configured, else the local engine with the model named
    on the command line, else in the configuration, else the default."""
    if config.openai.base_url and model is None:
        return open_remote(config.openai)
    path = resolve_model(model or config.model, config.models, config.models_dirs)
    settings = config.engine
    options = EngineOptions(
        dtype=dtype or settings.dtype,
        int8_decode=settings.int8_decode,
        kv_cache_mib=settings.kv_cache_mib,
        num_threads=threads or settings.threads,
        max_batch=settings.max_batch,
        attention=settings.attention,
        max_context=settings.max_context,
        kv_device_mib=settings.kv_device_mib,
        kv_host_mib=settings.kv_host_mib,
    )
    if settings.kv_disk_mib > 0:
        options.kv_disk_dir, options.kv_disk_mib = kv_disk_dir(), settings.kv_disk_mib
    adapter = adapter or settings.adapter
    if adapter and adapter != "none":  # "none" turns off the one a configuration names
        options.adapter = resolve_adapter(adapter, path)
    status = Console(stderr=True).status(_("Loading model {path}…").format(path=path), spinner="dots")
    with status if sys.stderr.isatty() else nullcontext():
        return LLMEngine.load(path, options)


def kv_disk_dir() -> Path:
    """Where prompt prefixes' KV chunks persist: the user's cache folder (safe to delete)."""
    return Path(platformdirs.user_cache_dir("zhiyin")) / "kv"


def open_remote(settings: OpenAISettings) -> TextModel:
    """The configured OpenAI-compatible server, checked (reachable, key accepted, model served)."""
    from engine.openai_client import OpenAIModel

    key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
    return OpenAIModel(settings.base_url, settings.model, api_key=key, timeout_s=settings.timeout_s,
                       max_retries=settings.max_retries, max_context=settings.max_context)


# What `Index.update` reports it is doing, as a user reads it (progress bars, LSP work-done progress).
INDEX_PHASES = {"scan": N_("Scanning files"), "parse": N_("Parsing"), "embed": N_("Embedding")}


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps a server to this machine."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def repository_root(start: str | Path | None) -> Path:
    """The git work tree containing `start` (default: the current folder), else `start` itself."""
    start = Path(start or ".").expanduser().resolve()
    for folder in [start, *start.parents]:
        if (folder / ".git").exists():
            return folder
    return start


def open_index(path: str | Path | None, *, embeddings: bool = True) -> Index:
    """The index of the folder `path`, else of the repository around the current folder;
    with the default embedder unless turned off."""
    root = Path(path).expanduser() if path else repository_root(None)
    name = load_config(root).index.embedder
    return Index.open(root, embedder=(lambda: load_embedder(name)) if embeddings else None)
