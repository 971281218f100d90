"""Selection memory past the trained window: a block the prompt found stays selected while the answer
is written.

Copying a signature from 100k tokens back, the queries of `def name(` find the block that holds it
(the name is unique), but the queries of the parameters that follow are generic (`value`, `,`):
scored afresh at each step, that block gives way to the many others such tokens also match (the
layer-heads selecting it fell from ~0.3 at the prompt to ~0.1 two tokens later). So a decode step
scores each block by the larger of its stage-two share now and `SparseConfig.memory_decay` times
its score at the previous step, per layer and KV head; a prefill chunk (the prompt, where the
prefix is cached) starts the memory afresh with each block's largest share of one of its queries.
"""

from __future__ import annotations

import torch


class SelectionMemory:
    """One sequence's remembered block scores: layer -> [Hkv, logical blocks] fp32 (0: none)."""

    def __init__(self, decay: float) -> None:
        assert 0 < decay < 1
        self.decay = decay
        self.scores: dict[int, torch.Tensor] = {}

    def start(self, layer: int, blocks: torch.Tensor, shares: torch.Tensor) -> None:
        """A prefill chunk's scores of logical blocks [Hkv, C] replace what the layer remembered."""
        self.scores.pop(layer, None)
        self._sized(layer, blocks).scatter_(1, blocks, shares.float())

    def recall(self, layer: int, blocks: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
        """A decode step's shares of logical blocks [Hkv, C] -> the scores to select by: each the larger
        of its share and the decayed score remembered; remembered in turn (unscored blocks decay)."""
        held = self._sized(layer, blocks)
        held.mul_(self.decay)
        scores = torch.maximum(shares.float(), held.gather(1, blocks))
        held.scatter_(1, blocks, scores)
        return scores

    def _sized(self, layer: int, blocks: torch.Tensor) -> torch.Tensor:
        """The layer's scores, grown (zeros) to hold every block in `blocks`."""
        need = int(blocks.max()) + 1 if blocks.numel() else 0
        held = self.scores.get(layer)
        if held is None or held.shape[0] != blocks.shape[0]:
            held = torch.zeros(blocks.shape[0], need)
        elif held.shape[1] < need:
            held = torch.cat([held, torch.zeros(held.shape[0], need - held.shape[1])], 1)
        self.scores[layer] = held
        return held
