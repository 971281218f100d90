"""Repository adapters: low-rank updates of the projections plus mHC residual scales.

An adapter changes layer i's residual branches from x + f(x) to x + α·f'(x), where f' is f with
W + (s·B·A) in place of each adapted projection W (LoRA, s = lora_alpha / rank) and α one learnable
scale per branch (mHC; fixed at 1 with `residual="plain"`). Both fold into the weights exactly:
α multiplies the branch's last projection, so serving an adapted model costs nothing extra, and
loading the base without its adapter gives back the base model bit for bit.

Files are safetensors (no pickle) with the base model's id and shape, the settings, a report and a
SHA-256 of the tensor bytes in the header, so a truncated or altered file is refused.
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine.config import ModelConfig
from engine.errors import N_, EngineError

# Projection → (input size, output size) as functions of the model config.
TARGETS = {
    "qkv_proj": lambda c: (c.hidden_size, (c.num_heads + 2 * c.num_kv_heads) * c.head_dim),
    "o_proj": lambda c: (c.num_heads * c.head_dim, c.hidden_size),
    "gate_up_proj": lambda c: (c.hidden_size, 2 * c.intermediate_size),
    "down_proj": lambda c: (c.intermediate_size, c.hidden_size),
}
RESIDUAL_MODES = ("plain", "mhc")
FORMAT = "zhiyin-adapter-1"


class AdapterFileError(EngineError):
    message = N_("The adapter file {path} is damaged ({detail}). Delete it and run `zhiyin adapt` again.")


class AdapterMismatchError(EngineError):
    message = N_("The adapter {path} was trained for the model {expected}, not {actual}. "
                 "Choose the adapter made for this model, or run `zhiyin adapt` with it.")


@dataclass
class AdapterConfig:
    rank: int = 16
    lora_alpha: float = 32.0
    residual: str = "mhc"  # "plain": α fixed at 1, the LoRA alone
    targets: tuple[str, ...] = tuple(TARGETS)

    def __post_init__(self) -> None:
        assert self.residual in RESIDUAL_MODES, f"residual must be one of {RESIDUAL_MODES}"
        assert set(self.targets) <= set(TARGETS), f"targets must be among {sorted(TARGETS)}"
        self.targets = tuple(self.targets)

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.rank


class Adapter(nn.Module):
    """The trainable tensors: per target, A [L, r, in] (small random) and B [L, out, r] (zeros), and
    the residual scales α [L, 2] (attention, MLP; ones). Untrained, it changes nothing."""

    def __init__(self, model_config: ModelConfig, config: AdapterConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        layers = model_config.num_layers
        generator = torch.Generator().manual_seed(seed)
        self.lora_a, self.lora_b = nn.ParameterDict(), nn.ParameterDict()
        for name in config.targets:
            d_in, d_out = TARGETS[name](model_config)
            a = torch.randn(layers, config.rank, d_in, generator=generator) * d_in**-0.5
            self.lora_a[name] = nn.Parameter(a)
            self.lora_b[name] = nn.Parameter(torch.zeros(layers, d_out, config.rank))
        self.residual_scale = nn.Parameter(torch.ones(layers, 2), requires_grad=config.residual == "mhc")

    def delta(self, name: str, layer: int) -> torch.Tensor:
        """s·B·A for one projection of one layer: what the adapter adds to its weight."""
        return self.config.lora_scale * (self.lora_b[name][layer] @ self.lora_a[name][layer])

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def merge_into(self, model: nn.Module) -> None:
        """Folds the adapter into `model`'s weights (an engine Transformer, before any transform)."""
        for i, layer in enumerate(model.layers):
            modules = {"qkv_proj": layer.self_attn.qkv_proj, "o_proj": layer.self_attn.o_proj,
                       "gate_up_proj": layer.mlp.gate_up_proj, "down_proj": layer.mlp.down_proj}
            for name in self.config.targets:
                weight = modules[name].weight
                weight.copy_((weight.float() + self.delta(name, i).to(weight.device)).to(weight.dtype))
            for j, last in enumerate((layer.self_attn.o_proj, layer.mlp.down_proj)):
                last.weight.copy_((last.weight.float() * self.residual_scale[i, j]).to(last.weight.dtype))

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {f"{name}.lora_a": self.lora_a[name] for name in self.config.targets}
        named |= {f"{name}.lora_b": self.lora_b[name] for name in self.config.targets}
        named["residual_scale"] = self.residual_scale
        return {k: v.detach().float().cpu().contiguous() for k, v in named.items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for key, value in self.tensors().items():
                if key not in tensors or tensors[key].shape != value.shape:
                    raise KeyError(key)
            for name in self.config.targets:
                self.lora_a[name].copy_(tensors[f"{name}.lora_a"])
                self.lora_b[name].copy_(tensors[f"{name}.lora_b"])
            self.residual_scale.copy_(tensors["residual_scale"])


@dataclass
class AdapterInfo:
    """What an adapter file says about itself."""

    base_model: str  # fingerprint of the base weights (`base_fingerprint`)
    config: AdapterConfig
    report: dict = field(default_factory=dict)  # training figures: steps, seconds, bits/byte before/after, α


def base_fingerprint(model: nn.Module) -> str:
    """Names the base weights by content (shape, and a strided sample of every weight), not by path:
    the same model installed elsewhere keeps its adapters; other weights do not take them."""
    digest = hashlib.sha256(repr(model.config).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            sample = tensor.flatten()[::4099].to(torch.bfloat16)  # the same whichever dtype loaded it
            digest.update(sample.float().numpy().tobytes())
    return digest.hexdigest()[:24]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].numpy().tobytes())
    return digest.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Writes atomically (a temporary file renamed over the target): a killed process leaves the old
    file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(temporary), metadata={**metadata, "format": FORMAT, "sha256": tensors_digest(tensors)})
    with open(temporary, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a file `save_tensors` wrote, checked against their digest."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFileError(path=str(path), detail=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if metadata.get("format") != FORMAT:
        raise AdapterFileError(path=str(path), detail="not a Zhiyin adapter")
    if metadata.get("sha256") != tensors_digest(tensors):
        raise AdapterFileError(path=str(path), detail="checksum mismatch")
    return tensors, metadata


def save_adapter(path: Path, adapter: Adapter, base_model: str, report: dict) -> None:
    metadata = {"base_model": base_model, "config": json.dumps(asdict(adapter.config)),
                "report": json.dumps(report, ensure_ascii=False)}
    save_tensors(path, adapter.tensors(), metadata)


def adapter_digest(path: Path) -> str:
    """The SHA-256 of an adapter's tensors, from its header (checked when the tensors are loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("sha256", "")
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFileError(path=str(path), detail=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def read_adapter_info(path: Path) -> AdapterInfo:
    _, metadata = load_tensors(path)
    return _info(path, metadata)


def _info(path: Path, metadata: dict[str, str]) -> AdapterInfo:
    try:
        return AdapterInfo(metadata["base_model"], AdapterConfig(**json.loads(metadata["config"])),
                           json.loads(metadata.get("report", "{}")))
    except (KeyError, TypeError, AssertionError, json.JSONDecodeError) as exc:
        raise AdapterFileError(path=str(path), detail=f"bad metadata: {exc}")


def load_adapter(path: Path, model_config: ModelConfig, base_model: str) -> Adapter:
    """The adapter in `path`, checked to belong to the base model `base_model`."""
    tensors, metadata = load_tensors(path)
    info = _info(path, metadata)
    if info.base_model != base_model:
        raise AdapterMismatchError(path=str(path), expected=info.base_model, actual=base_model)
    adapter = Adapter(model_config, info.config)
    try:
        adapter.load_tensors(tensors)
    except KeyError as exc:
        raise AdapterMismatchError(path=str(path), expected=f"{info.base_model} ({exc.args[0]})", actual=base_model)
    return adapter
