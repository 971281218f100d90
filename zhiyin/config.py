"""Settings: per-user `~/.config/zhiyin/config.toml`, then per-repository `.zhiyin.toml` over it.

```toml
model = "smollm2-135m-instruct"   # a name from `zhiyin model list`, or a path
models_dirs = ["~/models"]        # folders scanned for *.gguf files and HF model folders
[models]                          # your own names for model files
coder = "~/models/qwen2.5-coder-1.5b-instruct-q8_0.gguf"
[engine]
dtype = "bf16"                    # or "fp32"
threads = 2
kv_cache_mib = 512
attention = "dense"               # or "sparse", "sparse-fp8": decode attends the blocks that matter
adapter = "myrepo"                # made by `zhiyin adapt`: the model tuned on this repository
kv_disk_mib = 4096                # repository context KV kept on disk across restarts (0: off)
max_context = 262144              # tokens a request may hold (default: the model's trained window; past it
                                  # sparse attention remaps positions)
kv_device_mib = 512               # full-precision KV kept in memory; the rest is read back from disk (sparse only)
kv_host_mib = 4096                # sparse attention's FP8 copies kept in memory; the rest in a scratch file
[index]
embedder = "use-m3"               # or "e5-small" (see engine/embedder.py)
[openai]                          # use an OpenAI-compatible server as the model (user config only)
base_url = "http://gpu-box:8000/v1"
model = "Qwen/Qwen2.5-Coder-7B-Instruct"
api_key_env = "DEEPSEEK_API_KEY"  # the key is read from this environment variable
timeout_s = 60
max_retries = 3
max_context = 32768               # default: what the server reports, else 8192
```

`[openai]` is read from the user's own configuration only: a repository's `.zhiyin.toml` must not
be able to send the user's code to a server of its choosing.
"""

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from engine.errors import N_, EngineError

REPO_CONFIG_NAME = ".zhiyin.toml"


class ConfigError(EngineError):
    message = N_("Cannot read the configuration file {path}: {detail}. Fix or delete it.")


@dataclass
class EngineSettings:
    dtype: str = "bf16"
    threads: int | None = None
    kv_cache_mib: int = 512
    int8_decode: bool = True
    max_batch: int = 16
    attention: str = "dense"  # or "sparse", "sparse-fp8" (engine/sparse_attention.py)
    adapter: str | None = None  # a repository adapter from `zhiyin adapt`: its name or file
    kv_disk_mib: int = 4096  # prompt prefixes' KV kept on disk for the next process (0: off)
    max_context: int | None = None  # default: the model's trained window
    kv_device_mib: int | None = None  # the device tier's budget (engine/kv_tiers.py); default: unbounded
    kv_host_mib: int | None = None  # the host tier's budget (engine/kv_host.py); default: unbounded


@dataclass
class IndexSettings:
    embedder: str = "use-m3"


@dataclass
class OpenAISettings:
    base_url: str | None = None  # set: the model is this server, not the local engine
    model: str | None = None  # default: the first the server lists
    api_key_env: str | None = None
    timeout_s: int = 60
    max_retries: int = 3
    max_context: int | None = None


@dataclass
class Config:
    model: str | None = None
    models: dict[str, str] = field(default_factory=dict)
    models_dirs: list[Path] = field(default_factory=list)
    engine: EngineSettings = field(default_factory=EngineSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    sources: list[Path] = field(default_factory=list)  # the files this came from


def user_config_path() -> Path:
    return Path(platformdirs.user_config_dir("zhiyin")) / "config.toml"


def find_repo_config(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        candidate = folder / REPO_CONFIG_NAME
        if candidate.is_file():
            return candidate
        if (folder / ".git").exists():
            return None
    return None


def load_config(cwd: Path | None = None) -> Config:
    config = Config()
    repo_config = find_repo_config((cwd or Path.cwd()).resolve())
    for path in [user_config_path(), repo_config]:
        if path is not None and path.is_file():
            _merge(config, _read(path), path, trusted=path != repo_config)
            config.sources.append(path)
    return config


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(path=str(path), detail=str(e)) from None


def _merge(config: Config, data: dict, path: Path, *, trusted: bool = True) -> None:
    def expect(value, kind, key):
        if not isinstance(value, kind):
            raise ConfigError(path=str(path), detail=f"'{key}' = {value!r}")
        return value

    if "model" in data:
        config.model = expect(data["model"], str, "model")
    for name, value in expect(data.get("models", {}), dict, "models").items():
        config.models[name] = expect(value, str, f"models.{name}")
    for folder in expect(data.get("models_dirs", []), list, "models_dirs"):
        config.models_dirs.append(Path(expect(folder, str, "models_dirs")).expanduser())
    engine = expect(data.get("engine", {}), dict, "engine")
    defaults = EngineSettings()
    for key, value in engine.items():
        if not hasattr(defaults, key):
            raise ConfigError(path=str(path), detail=f"unknown key 'engine.{key}'")
        kind = str if key in ("dtype", "attention", "adapter") else bool if key == "int8_decode" else int
        setattr(config.engine, key, expect(value, kind, f"engine.{key}"))
    for key, value in expect(data.get("index", {}), dict, "index").items():
        if key != "embedder":
            raise ConfigError(path=str(path), detail=f"unknown key 'index.{key}'")
        config.index.embedder = expect(value, str, "index.embedder")
    remote = expect(data.get("openai", {}), dict, "openai")
    if remote and not trusted:
        raise ConfigError(path=str(path), detail="[openai] belongs in your own config.toml, not in a repository's")
    for key, value in remote.items():
        if not hasattr(config.openai, key):
            raise ConfigError(path=str(path), detail=f"unknown key 'openai.{key}'")
        kind = int if key in ("timeout_s", "max_retries", "max_context") else str
        setattr(config.openai, key, expect(value, kind, f"openai.{key}"))
    if config.engine.attention not in ("dense", "sparse", "sparse-fp8"):
        raise ConfigError(path=str(path), detail=f"engine.attention = {config.engine.attention!r} "
                                                 "(use dense, sparse or sparse-fp8)")
    if config.engine.dtype not in ("bf16", "fp32"):
        raise ConfigError(path=str(path), detail=f"engine.dtype = {config.engine.dtype!r} (use bf16 or fp32)")
