"""The distributed context a sharded search runs under: plain torch.distributed, no Ray.

Ranks agree by construction (DESIGN.md, "Sharding a search"):
- every rank draws the same global batch from the same seeded stream and
  keeps its own slice of it (`BatchStream(shard=...)`), so a checkpoint holds
  no rank state and a resume may use another worker count;
- every stochastic choice the model shares comes from generators seeded
  identically on every rank and consumed in the same order, so no broadcast
  is needed;
- every quantity computed from data is averaged before it is used: the
  gradients of a step (with the step's loss, so a NaN on any rank stops every
  rank at the same step instead of leaving the others waiting in a
  collective) travel in one flat buffer, one collective per gradient;
  whole-split evaluations are sharded by chunk and summed.

`Local` is the one-process context: its averages return their inputs, so a
plain loop pays nothing. `TorchDistributed` uses the default process group
(gloo on CPU, NCCL on CUDA), as Ray Train sets it up.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from raysearch.training import split_sums

BATCH_NORMS = ("per_shard", "synchronized")  # a sharded supernet's batch statistics: each rank's own, or global


class Local:
    """One process: rank 0 of 1."""

    rank, world_size = 0, 1
    sync_batch_norm = False

    def __init__(self):
        self.collectives = 0  # all-reduce calls so far (benchmarks read these)
        self.bytes = 0  # payload bytes of those calls

    @property
    def synced(self) -> bool:
        """Whether a batch-norm forward right now is over a training shard and must use global statistics."""
        return False

    def all_reduce_sum(self, flat: torch.Tensor) -> torch.Tensor:
        return flat

    def average(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The mean over ranks of every tensor, in one collective over one flat buffer."""
        if self.world_size == 1:
            return list(tensors)
        dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
        flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])
        flat = self.all_reduce_sum(flat) / self.world_size
        out, start = [], 0
        for t in tensors:
            out.append(flat[start:start + t.numel()].view(t.shape).to(t.dtype))
            start += t.numel()
        return out

    def average_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Epoch metrics averaged over ranks (every rank has the same keys); global ones are unchanged."""
        keys = sorted(metrics)
        values = self.average([torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)])[0]
        return dict(zip(keys, values.tolist()))

    @contextlib.contextmanager
    def local(self):
        """Batch norm uses each forward's own statistics inside this block (whole-split evaluation)."""
        yield

    def evaluate(self, forward, x: torch.Tensor, y: torch.Tensor, device) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of `forward` over a whole split. Each rank evaluates every
        N-th chunk, exactly as one process would (batch statistics per chunk), and the sums are added
        over ranks: the result does not depend on the worker count."""
        with self.local():
            sums = split_sums(forward, x, y, device, shard=(self.rank, self.world_size))
        if self.world_size > 1:
            sums = self.all_reduce_sum(sums)
        loss_sum, correct = sums.tolist()
        return loss_sum / len(x), correct / len(x)

    def prepare(self, net: nn.Module) -> nn.Module:
        """The supernet as this context runs it: batch norms synchronized when configured."""
        if self.world_size > 1 and self.sync_batch_norm:
            convert_batch_norms(net, self)
        return net


class TorchDistributed(Local):
    """The default torch.distributed process group (initialised by the caller, e.g. Ray Train)."""

    def __init__(self, batch_norm: str = "per_shard"):
        super().__init__()
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: start the workers with a process group")
        if batch_norm not in BATCH_NORMS:
            raise ValueError(f"batch_norm must be one of {BATCH_NORMS}, got {batch_norm!r}")
        self._dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.sync_batch_norm = batch_norm == "synchronized"
        self._local_depth = 0

    @property
    def synced(self) -> bool:
        return self.sync_batch_norm and self._local_depth == 0

    @contextlib.contextmanager
    def local(self):
        self._local_depth += 1
        try:
            yield
        finally:
            self._local_depth -= 1

    def all_reduce_sum(self, flat: torch.Tensor) -> torch.Tensor:
        flat = flat.clone()
        self.collectives += 1
        self.bytes += flat.numel() * flat.element_size()
        self._dist.all_reduce(flat)
        return flat


LOCAL = Local()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients (every rank's loss
    depends on every rank's statistics); differentiable again, for double backward (DARTS-ES)."""

    @staticmethod
    def forward(ctx, x, context):
        ctx.context = context
        return context.all_reduce_sum(x)

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad, ctx.context), None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the statistics of the global batch (all ranks' shards); torch's SyncBatchNorm
    needs CUDA and DDP, this one runs on gloo and under `torch.func.functional_call`."""

    def __init__(self, bn: nn.BatchNorm2d, context):
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, track_running_stats=False)
        if bn.affine:
            self.weight, self.bias = bn.weight, bn.bias
        self.context = context

    def forward(self, x):
        if not self.context.synced:
            return super().forward(x)
        count = x.numel() // x.shape[1] * self.context.world_size
        mean = _AllReduceSum.apply(x.sum((0, 2, 3)), self.context) / count
        centred = x - mean.view(1, -1, 1, 1)
        var = _AllReduceSum.apply((centred * centred).sum((0, 2, 3)), self.context) / count  # biased, as BN
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def convert_batch_norms(module: nn.Module, context) -> nn.Module:
    """Replace, in place, every batch norm that normalises by batch statistics only (the supernets')
    with a SyncBatchNorm2d keeping its parameters."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not child.track_running_stats and not isinstance(
                child, SyncBatchNorm2d):
            setattr(module, name, SyncBatchNorm2d(child, context))
        else:
            convert_batch_norms(child, context)
    return module
