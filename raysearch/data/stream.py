"""Seeded, resumable mini-batch streams over in-memory tensors.

The stream's whole state is the number of batches it has handed out: pass p
uses the permutation drawn from (seed, p), so a stream restored from a
checkpoint continues with exactly the batches an uninterrupted one would give,
and no iterator is rebuilt per step (the known DARTS cost trap).
"""

from __future__ import annotations

import torch


class Halted(Exception):
    """A halted stream was asked for a batch: the search that reads it stops at its next step."""


class BatchStream:
    """Endless shuffled batches of (x, y); drops the last partial batch of a pass.

    `shard` (rank, ranks): every rank walks the same global batches and gets
    its own equal slice of each, so the stream's state is the same on every
    rank and a restore with another number of ranks replays the same batches.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                 shard: tuple[int, int] = (0, 1)):
        if len(x) < batch_size:
            raise ValueError(f"batch size {batch_size} is larger than the split ({len(x)} examples)")
        rank, ranks = shard
        if batch_size % ranks:
            raise ValueError(f"batch size {batch_size} does not split evenly over {ranks} workers")
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.shard_size = batch_size // ranks
        self.shard_start = rank * self.shard_size
        self.batches_per_pass = len(x) // batch_size
        self.consumed = 0
        self._order = None
        self._order_pass = -1
        self.halted = False  # set from another thread by halt()

    def _permutation(self, p: int) -> torch.Tensor:
        if p != self._order_pass:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
            self._order, self._order_pass = torch.randperm(len(self.x), generator=gen), p
        return self._order

    def __iter__(self):
        return self

    def halt(self) -> None:
        """Make the next batch raise Halted, so a search running in another thread stops within one step
        with the batch count it had (the state of its last whole epoch is what a checkpoint holds)."""
        self.halted = True

    def __next__(self):
        if self.halted:
            raise Halted(f"the stream was halted after {self.consumed} batches")
        p, k = divmod(self.consumed, self.batches_per_pass)
        start = k * self.batch_size + self.shard_start
        idx = self._permutation(p)[start : start + self.shard_size]
        self.consumed += 1
        return self.x[idx], self.y[idx]

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = int(state["consumed"])
