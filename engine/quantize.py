"""Weight-only int8 for decode, applied to a built model from outside (as gpt-fast does).

At one token per step a matmul is a GEMV. `_weight_int8pack_mm` reads a quarter of fp32's bytes;
on these CPUs it is bound by its dequantizing (~7.5 G weights/s per core, so it scales with
threads), and still beats bf16: 9.0 ms per token against 12.4 for oneDNN's prepacked bf16 GEMV
(2 threads, all of the default model's matmuls). Prefill stays on the bf16 weights.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

MAX_INT8_ROWS = 4  # above this many tokens the bf16 matmul is faster (measured at 4 vs 64 rows)


class Int8DecodeLinear(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        w = linear.weight.detach().float()  # a copy: quantised in place below
        scales = torch.linalg.vector_norm(w, ord=float("inf"), dim=1).clamp_(min=1e-8).div_(127.0)  # per row
        self.register_buffer("qweight", w.div_(scales[:, None]).round_().clamp_(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(linear.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.as_function()(x)

    def as_function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The layer as a closure over plain tensors (see model.as_function)."""
        weight, bias, qweight, scales = self.weight, self.bias, self.qweight, self.scales

        def linear(x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > MAX_INT8_ROWS:
                return F.linear(x, weight, bias)
            out = torch._weight_int8pack_mm(x, qweight, scales)
            return out if bias is None else out + bias

        return linear


def add_int8_decode_weights(model: nn.Module) -> nn.Module:
    """Wraps every Linear of a bf16 model; fp32 models are left exact. Apply it before the model's
    first forward, which binds the layers' projections (model.LayerStep)."""
    for name, child in model.named_children():
        if isinstance(child, nn.Linear) and child.weight.dtype == torch.bfloat16:
            setattr(model, name, Int8DecodeLinear(child))
        else:
            add_int8_decode_weights(child)
    return model
