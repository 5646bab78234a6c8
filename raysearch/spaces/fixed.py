"""Fixed networks cut out of trained supernets (DHA's result is one), with batch-norm statistics that make
their evaluation independent of the batch; and the loading of such a network's weights."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from raysearch.spaces.mixed import Edge

CALIBRATION_IMAGES = 2048  # images whose statistics become a cut-out network's BN running statistics
CALIBRATION_BATCH = 256  # images per forward of the calibration (its running averages are per batch)
_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def load_weights(net: nn.Module, state: dict) -> nn.Module:
    """`state` into `net`, strictly; edges whose weights carry a `scale` (a network cut out of a supernet)
    get that buffer first."""
    modules = dict(net.named_modules())
    for key in state:
        owner, _, leaf = key.rpartition(".")
        if leaf == "scale" and isinstance(modules.get(owner), Edge):
            modules[owner].set_scale(1.0)
    net.load_state_dict(state)
    return net


def _same_layers(fixed: nn.Module, trained: nn.Module) -> bool:
    """Whether two ops are built of the same layers, in order (a synchronised BN counts as a BN)."""
    ours, theirs = list(fixed.modules()), list(trained.modules())
    return len(ours) == len(theirs) and all(isinstance(t, type(o)) for o, t in zip(ours, theirs))


@torch.no_grad()
def fixed_from_supernet(space, genotype, supernet: nn.Module, mixing: dict, active: dict) -> nn.Module:
    """The fixed network of `genotype` computing what `supernet` computes with `mixing` ([rows, ops] weights
    per encoding) and `active` (the op each row computes, -1: off), its weights copied from the supernet.

    Each kept edge takes the weights of the op its row computes, and that op's mixing weight as its output
    `scale` (one-hot mixing leaves none). Supernet edges sit at their row's index in their container
    (every space builds them so); the batch norms' running statistics are not copied (a supernet has
    none): `recalibrate_batch_norm` gives them.
    """
    net = space.network(genotype)
    trained = dict(supernet.named_modules())
    names = {id(module): name for name, module in net.named_modules()}
    renamed = {}  # the fixed op's prefix -> the supernet op's
    for encoding, row, edge in net.edges():
        name = names[id(edge)]
        op = active[encoding][row]
        source = f"{name.rsplit('.', 1)[0]}.{row}.{op}"
        if op < 0 or source not in trained or not _same_layers(edge[0], trained[source]):
            raise ValueError(f"{encoding} row {row}: the supernet's op {source} is not the genotype's "
                             f"{type(edge[0]).__name__} (the supernet must compute `genotype`)")
        renamed[f"{name}.0."] = f"{source}."
        weight = float(mixing[encoding][row][op])
        if weight != 1.0:
            edge.set_scale(weight)
    weights, state = supernet.state_dict(), {}
    for key, value in net.state_dict().items():
        prefix = next((p for p in renamed if key.startswith(p)), None)
        source = key if prefix is None else renamed[prefix] + key[len(prefix):]
        if source in weights:
            state[key] = weights[source]
        elif key.rpartition(".")[2] in _RUNNING or key.endswith(".scale"):
            state[key] = value  # running statistics (recalibrated), and the scales set above
        else:
            raise ValueError(f"the supernet has no {source} for the fixed network's {key}")
    net.load_state_dict(state)
    return net.to(next(supernet.parameters()).device)


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, images: torch.Tensor, batch_size: int = CALIBRATION_BATCH) -> nn.Module:
    """Set every batch norm's running statistics to the average of its batch statistics over `images`
    (batches of `batch_size`, in order: the same images give the same statistics), then eval mode."""
    norms = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    device = next(net.parameters()).device
    net.train()
    for start in range(0, len(images), batch_size):
        net(images[start:start + batch_size].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return net.eval()
