"""Rotary position embedding (HF "rotate half" layout), with the checkpoint's theta and scaling."""

import math

import torch

from engine.config import ModelConfig


def inverse_frequencies(config: ModelConfig) -> torch.Tensor:
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") / dim))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type")
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        inv_freq = _llama3_frequencies(inv_freq, scaling)
    return inv_freq


def _llama3_frequencies(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1: slow down low frequencies, keep high ones, blend in between."""
    factor = scaling["factor"]
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_context = scaling.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    middle = (wavelen <= old_context / low) & (wavelen >= old_context / high)
    return torch.where(middle, blended, out)


class RotaryEmbedding:
    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        self.inv_freq = inverse_frequencies(config)
        self.cos, self.sin = self._table(max_positions)

    def _table(self, num_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.outer(torch.arange(num_positions, dtype=torch.float64, device="cpu"), self.inv_freq)
        angles = torch.cat([freqs, freqs], dim=-1)  # [P, D]
        # rotate_half(x) = [-x2, x1]: the minus goes into the first half of sin.
        sign = torch.cat([-torch.ones_like(freqs), torch.ones_like(freqs)], dim=-1)
        return angles.cos().float(), (angles.sin() * sign).float()

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin: [T, 1, D] for broadcasting over heads."""
        if positions.numel() and int(positions.max()) >= self.cos.shape[0]:
            self.cos, self.sin = self._table(2 * int(positions.max()) + 1)
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, H, D]; returns fp32. `sin` carries the rotate-half sign (see `RotaryEmbedding`)."""
    rotated = x.roll(x.shape[-1] // 2, -1)  # [x2, x1]: one op where cat takes three
    return torch.addcmul(x * cos, rotated, sin)
