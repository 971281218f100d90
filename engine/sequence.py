"""One request's tokens and the KV blocks that hold them. Plain Python, no torch."""

from dataclasses import dataclass, field

from engine.block_manager import BlockManager


@dataclass
class Sequence:
    token_ids: list[int]
    block_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose KV is in the cache
    num_sealed: int = 0  # leading blocks named by a prefix hash
    last_hash: bytes = b""  # hash of the last sealed block: parent of the next
    num_persisted: int = 0  # leading tokens whose chunks the disk tier has (or has queued)
    num_spilled: int = 0  # leading tokens the device tier may evict: their chunks are on disk
    spilled_hash: bytes = b""  # the hash chain up to there: the name of the last such chunk
    sparse_budget: object = None  # engine.sparse_budget.SparseBudget when the model decodes sparsely

    def __len__(self) -> int:
        return len(self.token_ids)

    def reuse_prefix(self, blocks: BlockManager, grid: int = 0) -> int:
        """Attaches cached blocks of the longest shared prefix; returns the tokens they cover.

        At least one prompt token is always recomputed: its logits start the generation. With a
        `grid`, the prefix ends on a multiple of it: the blocks after were computed in a shorter chunk.
        """
        block_ids, last_hash = blocks.match_prefix(self.token_ids)
        if block_ids and len(block_ids) * blocks.block_size >= len(self.token_ids):
            blocks.release(block_ids[-1:])
            block_ids = block_ids[:-1]
            last_hash = blocks.block_hashes[block_ids[-1]] if block_ids else b""
        if grid and len(block_ids) * blocks.block_size % grid:
            keep = len(block_ids) * blocks.block_size // grid * grid // blocks.block_size
            blocks.release(block_ids[keep:])
            block_ids = block_ids[:keep]
            last_hash = blocks.block_hashes[block_ids[-1]] if block_ids else b""
        self.block_ids = block_ids
        self.num_sealed = len(block_ids)
        self.num_computed = len(block_ids) * blocks.block_size
        self.last_hash = last_hash
        return self.num_computed

    def reserve(self, blocks: BlockManager, num_tokens: int) -> None:
        """Allocates blocks so that `num_tokens` tokens fit."""
        needed = -(-num_tokens // blocks.block_size)
        while len(self.block_ids) < needed:
            self.block_ids.append(blocks.allocate())

    def seal_full_blocks(self, blocks: BlockManager) -> None:
        """Names every block whose KV is now complete."""
        size = blocks.block_size
        while (self.num_sealed + 1) * size <= self.num_computed:
            start = self.num_sealed * size
            self.last_hash = blocks.seal(
                self.block_ids[self.num_sealed], self.last_hash, self.token_ids[start : start + size]
            )
            self.num_sealed += 1

    def free(self, blocks: BlockManager) -> None:
        blocks.release(self.block_ids)
        self.block_ids = []
