"""Opening the inference engine the configuration asks for."""

import sys
from contextlib import nullcontext

from rich.console import Console

from engine import EngineOptions, LLMEngine
from engine.model_files import resolve_model
from zhiyin.config import Config
from zhiyin.i18n import _


def open_engine(config: Config, model: str | None = None, dtype: str | None = None, threads: int | None = None) -> LLMEngine:
    """Loads the model named on the command line, else in the configuration, else the default."""
    path = resolve_model(model or config.model, config.models, config.models_dirs)
    settings = config.engine
    options = EngineOptions(
        dtype=dtype or settings.dtype,
        int8_decode=settings.int8_decode,
        kv_cache_mib=settings.kv_cache_mib,
        num_threads=threads or settings.threads,
    )
    status = Console(stderr=True).status(_("Loading model {path}…").format(path=path), spinner="dots")
    with status if sys.stderr.isatty() else nullcontext():
        return LLMEngine.load(path, options)
