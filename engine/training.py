"""Training an adapter on the engine's model: a differentiable forward, loss, and the optimiser step.

The serving forward (model.py) runs under inference_mode on a paged KV cache; training needs
autograd over whole sequences instead, so this forward reads the same frozen weights with plain
causal attention and adds the adapter: x + α·f'(x), with f' the branch whose projections carry the
low-rank update. `merge_into` folds exactly this into the weights, which a test checks against the
serving path's logits.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from engine.adapter import Adapter
from engine.config import ModelConfig
from engine.model import Transformer
from engine.rope import apply_rotary


@dataclass
class TrainSettings:
    learning_rate: float = 1e-3  # LoRA tensors (AdamW)
    residual_learning_rate: float = 1e-2  # mHC scales: few, scalar, they move slowly at the LoRA's rate
    weight_decay: float = 0.0
    warmup_steps: int = 10
    grad_clip: float = 1.0
    autocast_bf16: bool = False  # bf16 matmuls (fp32 weights): 2x faster here even without AMX (measured)
    recompute: bool = False  # gradient checkpointing per layer: activations of one layer at a time


def activation_bytes(config: ModelConfig, tokens: int, recompute: bool) -> int:
    """Rough bytes autograd keeps for a step over `tokens` tokens: per layer and token, some twelve
    hidden-sized and five MLP-sized fp32 vectors (residual, norms, q/k/v, attention, gate, up, product);
    with recompute, one residual per layer plus one layer's worth. Plus the logits of one loss chunk."""
    per_layer = 4 * (12 * config.hidden_size + 5 * config.intermediate_size)
    kept = tokens * (4 * config.hidden_size * config.num_layers + per_layer) if recompute else (
        tokens * per_layer * config.num_layers)
    return kept + 3 * 4 * 1024 * config.vocab_size


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, adapter: Adapter, name: str,
            layer: int) -> torch.Tensor:
    out = F.linear(x, weight, bias)
    if name in adapter.config.targets:
        a, b = adapter.lora_a[name][layer], adapter.lora_b[name][layer]
        out = out + adapter.config.lora_scale * F.linear(F.linear(x, a.to(x.dtype)), b.to(x.dtype))
    return out


def _layer(model: Transformer, adapter: Adapter, i: int, x: torch.Tensor, cos: torch.Tensor,
           sin: torch.Tensor) -> torch.Tensor:
    """x: the fp32 residual stream [B, T, d]; returns the next one."""
    layer = model.layers[i]
    attn, mlp = layer.self_attn, layer.mlp
    batch, length, _ = x.shape
    device = x.device.type
    compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else attn.qkv_proj.weight.dtype
    h = F.rms_norm(x, (x.shape[-1],), layer.input_layernorm.weight, layer.input_layernorm.eps.item()).to(compute)
    qkv = _linear(h, attn.qkv_proj.weight, attn.qkv_proj.bias, adapter, "qkv_proj", i)
    qkv = qkv.view(batch * length, -1, attn.head_dim)
    num_qk = attn.num_heads + attn.num_kv_heads
    qk = apply_rotary(qkv[:, :num_qk].float(), cos, sin).to(compute).view(batch, length, num_qk, attn.head_dim)
    q, k = qk.split([attn.num_heads, attn.num_kv_heads], dim=2)
    v = qkv[:, num_qk:].view(batch, length, attn.num_kv_heads, attn.head_dim)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                         scale=attn.scale, enable_gqa=True)  # [B, H, T, D]
    out = out.transpose(1, 2).reshape(batch, length, -1)
    x = x + adapter.residual_scale[i, 0] * _linear(out, attn.o_proj.weight, None, adapter, "o_proj", i).float()
    h = F.rms_norm(x, (x.shape[-1],), layer.post_attention_layernorm.weight,
                   layer.post_attention_layernorm.eps.item()).to(compute)
    gate, up = _linear(h, mlp.gate_up_proj.weight, None, adapter, "gate_up_proj", i).split(mlp.intermediate_size, -1)
    return x + adapter.residual_scale[i, 1] * _linear(F.silu(gate) * up, mlp.down_proj.weight, None, adapter,
                                                      "down_proj", i).float()


def adapted_hidden(model: Transformer, adapter: Adapter, ids: torch.Tensor, recompute: bool = False) -> torch.Tensor:
    """The final normalised hidden states [B, T, d] of token ids [B, T] through base + adapter."""
    x = model.embed_tokens(ids).float()
    cos, sin = (t.to(x.device) for t in model.rotary(torch.arange(ids.shape[1]).repeat(ids.shape[0])))
    for i in range(len(model.layers)):
        if recompute and torch.is_grad_enabled():
            x = checkpoint(_layer, model, adapter, i, x, cos, sin, use_reentrant=False)
        else:
            x = _layer(model, adapter, i, x, cos, sin)
    return F.rms_norm(x, (x.shape[-1],), model.norm.weight, model.norm.eps.item())


def adapted_logits(model: Transformer, adapter: Adapter, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits [B, T, V]: for tests and small inputs (training never holds all of them)."""
    hidden = adapted_hidden(model, adapter, ids)
    return F.linear(hidden.to(model.lm_head.weight.dtype), model.lm_head.weight).float()


def token_losses(model: Transformer, adapter: Adapter, ids: torch.Tensor, recompute: bool = False,
                 rows_per_chunk: int = 1024) -> torch.Tensor:
    """Cross-entropy in nats of each next token: [B, T-1]. The vocabulary projection runs over chunks
    of rows (each recomputed in the backward pass), so [B·T, V] fp32 logits never exist at once."""
    hidden = adapted_hidden(model, adapter, ids[:, :-1], recompute)
    flat, targets = hidden.reshape(-1, hidden.shape[-1]), ids[:, 1:].reshape(-1)
    weight = model.lm_head.weight
    losses = []
    for start in range(0, flat.shape[0], rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        losses.append(checkpoint(_chunk_loss, flat[rows], weight, targets[rows], use_reentrant=False)
                      if torch.is_grad_enabled() else _chunk_loss(flat[rows], weight, targets[rows]))
    return torch.cat(losses).view(ids.shape[0], -1)


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden.to(weight.dtype), weight).float()
    return F.cross_entropy(logits, targets, reduction="none")


class AdapterTrainer:
    """AdamW on the adapter's tensors with warm-up then cosine decay over `total_steps`."""

    def __init__(self, model: Transformer, adapter: Adapter, settings: TrainSettings, total_steps: int) -> None:
        self.model, self.adapter, self.settings, self.total_steps = model, adapter, settings, max(total_steps, 1)
        for p in model.parameters():
            p.requires_grad_(False)
        groups = [{"params": [p for p in adapter.trainable() if p is not adapter.residual_scale],
                   "lr": settings.learning_rate, "weight_decay": settings.weight_decay}]
        if adapter.residual_scale.requires_grad:
            groups.append({"params": [adapter.residual_scale], "lr": settings.residual_learning_rate,
                           "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups)
        self.base_rates = [g["lr"] for g in groups]
        self.step_count = 0

    def rate_factor(self, step: int) -> float:
        warmup = self.settings.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    def step(self, ids: torch.Tensor) -> float:
        """One optimiser step on a batch [B, T]; returns its mean loss in nats."""
        for group, rate in zip(self.optimizer.param_groups, self.base_rates):
            group["lr"] = rate * self.rate_factor(self.step_count)
        device = self.model.embed_tokens.weight.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.settings.autocast_bf16):
            loss = token_losses(self.model, self.adapter, ids.to(device), self.settings.recompute).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.adapter.trainable(), self.settings.grad_clip)
        self.optimizer.step()
        self.step_count += 1
        return float(loss.detach())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The optimiser's moments, by parameter position, for a resumable checkpoint."""
        out = {}
        for index, param in enumerate(self.adapter.trainable()):
            state = self.optimizer.state.get(param)
            if state:
                out[f"optimizer.{index}.exp_avg"] = state["exp_avg"].cpu().contiguous()
                out[f"optimizer.{index}.exp_avg_sq"] = state["exp_avg_sq"].cpu().contiguous()
                out[f"optimizer.{index}.step"] = torch.as_tensor(state["step"], dtype=torch.float64).reshape(1)
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], step_count: int) -> None:
        for index, param in enumerate(self.adapter.trainable()):
            if f"optimizer.{index}.exp_avg" in tensors:
                self.optimizer.state[param] = {
                    "step": tensors[f"optimizer.{index}.step"].reshape(()).float(),
                    "exp_avg": tensors[f"optimizer.{index}.exp_avg"].to(param.device, copy=True),
                    "exp_avg_sq": tensors[f"optimizer.{index}.exp_avg_sq"].to(param.device, copy=True),
                }
        self.step_count = step_count


@torch.no_grad()
def evaluate_nats(model: Transformer, adapter: Adapter, sequences: list[torch.Tensor], autocast_bf16: bool = False,
                  batch: int = 4) -> float:
    """Summed next-token loss (nats) over `sequences` (1-d id tensors of one length)."""
    total, device = 0.0, model.embed_tokens.weight.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
        for start in range(0, len(sequences), batch):
            ids = torch.stack(sequences[start : start + batch]).to(device)
            total += float(token_losses(model, adapter, ids).sum())
    return total
