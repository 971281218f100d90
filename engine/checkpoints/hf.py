"""Hugging Face checkpoints: a folder with config.json, *.safetensors and tokenizer.json."""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from engine.checkpoints import Checkpoint, model_id_for
from engine.config import ARCHITECTURE_ALIASES, SUPPORTED_ARCHITECTURES, ModelConfig
from engine.errors import CorruptModelError, UnsupportedArchitectureError
from engine.tokenizer import Tokenizer


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptModelError(path=str(path), detail=str(e)) from None


def read_hf_folder(folder: Path, dtype: torch.dtype) -> Checkpoint:
    cfg = _read_json(folder / "config.json")
    names = (cfg.get("architectures") or []) + [cfg.get("model_type", "?")]
    arch = next((ARCHITECTURE_ALIASES[n] for n in names if n in ARCHITECTURE_ALIASES), None)
    if arch is None:
        raise UnsupportedArchitectureError(path=str(folder), arch=names[0], supported=", ".join(SUPPORTED_ARCHITECTURES))
    config = ModelConfig.from_hf(cfg, arch)

    tokenizer_config_path = folder / "tokenizer_config.json"
    tokenizer_config = _read_json(tokenizer_config_path) if tokenizer_config_path.is_file() else None
    tokenizer = Tokenizer.from_file(folder / "tokenizer.json", tokenizer_config)

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CorruptModelError(path=str(folder), detail="no *.safetensors files")
    tensors = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    tensors[name] = f.get_tensor(name).to(dtype)
        except (SafetensorError, OSError, ValueError) as e:
            raise CorruptModelError(path=str(file), detail=str(e)) from None
    config.tie_embeddings = config.tie_embeddings or "lm_head.weight" not in tensors
    return Checkpoint(path=folder, config=config, tensors=tensors, tokenizer=tokenizer, model_id=model_id_for(folder))
