"""The feedback loop of sparse decoding, per sequence: each layer's budget of selected tokens moves
to hold the attention mass captured at `SparseConfig.target_mass`, and the request's metrics add up.

The mass comes from each step's estimate (attended against the scored candidates left out), which
ignores the blocks outside the candidates and so runs high; a dense probe (every `probe_every` steps
of a layer per 8k tokens of context) measures it exactly, and the gap seen there corrects the estimates until the next probe.
The budget grows by a quarter when the mass falls short and shrinks by one block when it clears the
target with room to spare (additive decrease: a layer that needs its blocks gets them back fast).

Past the trained window (`SparseConfig.remaps`) the budget holds still, below the loop's floor
(`SparseConfig.remapped_budget_tokens`): blocks are scored as if at one distance but attended packed
elsewhere, so the mass the scorer sees is not the mass attended; and a budget that grew with the
context would make the cost of a step grow with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from engine.sparse_attention import SparseConfig, SparseCounter, SparseStats
from engine.sparse_memory import SelectionMemory

HEADROOM = 0.02  # above target + this, a layer gives a block back
PROBE_SPAN = 8192  # tokens of context per probe_every steps


@dataclass
class SparseBudget:
    config: SparseConfig
    budgets: dict[int, int] = field(default_factory=dict)  # layer -> tokens selected between sinks and window
    steps: dict[int, int] = field(default_factory=dict)  # layer -> sparse steps so far
    correction: dict[int, float] = field(default_factory=dict)  # layer -> exact minus estimated mass, last probe
    totals: SparseCounter = field(default_factory=SparseCounter)  # this request's sparse layer-steps
    captured_total: float = 0.0  # the mass the loop steered by, summed over them
    probes: int = 0  # scheduled probes taken
    memory: SelectionMemory | None = None  # past the trained window, the blocks' remembered scores (none: 0 decay)

    def __post_init__(self) -> None:
        if self.memory is None and self.config.memory_decay:
            self.memory = SelectionMemory(self.config.memory_decay)

    @property
    def layer_steps(self) -> int:
        return self.totals.steps

    def budget(self, layer: int, length: int = 0) -> int:
        if self.config.remaps(length):
            return self.config.remapped_budget_tokens
        return self.budgets.get(layer, self.config.budget_tokens)

    def probes_now(self, layer: int, length: int) -> bool:
        """Whether this layer's next sparse step is a scheduled probe. A probe reads the whole context,
        so probes thin out as it grows: every `probe_every` steps per 8k tokens."""
        every = self.config.probe_every * max(1, length // PROBE_SPAN)
        steers = self.config.target_mass is not None and not self.config.remaps(length)
        return steers and every > 0 and self.steps.get(layer, 0) % every == 0

    def observe(self, layer: int, stats: SparseStats, length: int) -> None:
        if stats.dense:
            return
        scheduled = self.probes_now(layer, length)
        self.steps[layer] = self.steps.get(layer, 0) + 1
        if scheduled and stats.probe is not None:
            self.correction[layer] = min(0.0, stats.probe["captured"] - stats.captured_mass)
            captured = stats.probe["captured"]
            self.probes += 1
        else:
            captured = min(1.0, stats.captured_mass + self.correction.get(layer, 0.0))
        if not self.config.remaps(length):
            self._steer(layer, captured)
        self.totals.add(replace(stats, probe=None))  # the model's counter keeps probes for benchmarks
        self.captured_total += captured

    def _steer(self, layer: int, captured: float) -> None:
        config, target = self.config, self.config.target_mass
        if target is None:
            return
        bs, budget = config.block_size, self.budget(layer)
        if captured < target:
            budget = min(config.max_budget_tokens, budget + max(bs, budget // 4 // bs * bs))
        elif captured > target + HEADROOM:
            budget = max(config.min_budget_tokens, budget - bs)
        self.budgets[layer] = budget

    def metrics(self) -> dict[str, float]:
        """Per request, averaged over its sparse layer-steps: what `GenerationStats.sparse` carries."""
        t, n = self.totals, max(1, self.totals.steps)
        return {"layer_steps": t.steps, "budget_tokens": round(t.budget_tokens / n, 1),
                "captured_mass": round(self.captured_total / n, 4), "fp8_coverage": round(t.fp8_coverage, 4),
                "attended_tokens": round(t.attended_tokens / n, 1), "blocks_scored": round(t.blocks_scored / n, 1),
                "probes": self.probes}
