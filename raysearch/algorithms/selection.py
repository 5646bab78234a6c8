"""Selecting the final architecture from a trained supernet: by magnitude or by perturbation (DARTS-PT).

Magnitude reads the space's derivation rule off the encodings' probabilities
at the end of the search. Perturbation (Wang et al., 2021) decides one edge
at a time per encoding, in a seeded random order: for each candidate op it
zeroes that op's mixing weight (no renormalisation) and measures the
supernet's accuracy on the whole search-val split (BN uses batch statistics,
as in training, over 512-sample chunks); the op whose removal hurts most is
kept and the edge becomes one-hot (ops already pruned to weight 0, as by
progressive DrNAS, are not candidates). Spaces with a topology (DARTS: 2
inputs kept per node) then decide each node in random order, deleting the
incoming edge whose removal hurts least until the node keeps its inputs.

As the reference's projection loop does:
- a round decides one edge (or node) of every encoding together: in the
  DARTS space a normal and a reduction edge, so 14 + 3 rounds there;
- between rounds the supernet is tuned for `tune_epochs`, each batch first
  an encoding step (first order, on the mixture with the decided rows
  fixed: undecided edges keep learning) then a weight step; the weight
  optimizer starts afresh (no momentum carried from the search) at
  `lr_factor` x the search's weight lr (DARTS-PT: lr / 10), cosine-annealed
  per step to the search's `weight_lr_min` over the tuning;
- the last round is the last epoch: it decides, and nothing is tuned after
  it, since the supernet's weights are not used afterwards (the reference
  tunes one more epoch). Selection epochs = (rounds - 1) x tune_epochs + 1.

Choices left open: undecided edges mix with the encodings' probabilities
(softmax, or the Dirichlet mean for DrNAS; the supernets of GDAS and
AutoHAS, trained on one-hot samples, are then read as mixtures too); the
encoding step during tuning is the algorithm's relaxation with the decided
rows replaced, a plain cross-entropy step (no second-order, KL or W'
terms); a node's topology is decided in one go (its deletions back to back).

Any supernet search can select this way: the algorithm provides the few
methods of `Selectable` (below), which the DARTS family and AutoHAS do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from raysearch.schema import spec
from raysearch.training import scheduled_lr

SELECTIONS = ("magnitude", "perturbation")


@dataclass(frozen=True)
class SelectionConfig:
    """The selection fields of every search that can select by perturbation."""

    selection: str = spec("magnitude", choices=SELECTIONS)  # final architecture: derivation rule or DARTS-PT
    tune_epochs: int = spec(5, ge=1)  # perturbation: supernet tuning epochs between decision rounds (DARTS-PT: 5)
    tune_lr_factor: float = spec(0.1, gt=0.0)  # perturbation: tuning lr from this x the weight lr (DARTS-PT: lr/10)


class Selectable(Protocol):
    """What perturbation selection needs of a supernet search, besides SearchAlgorithm's space, net,
    device, dist, encoding_optimizer, synced and probabilities."""

    def arch_encodings(self) -> dict[str, torch.Tensor]:
        """The architecture encodings themselves (leaf tensors of `encoding_optimizer`), by name."""

    def relaxed_arch(self) -> dict[str, torch.Tensor]:
        """Mixing weights of one forward pass under the search's relaxation, differentiable in the encodings."""

    def tuning_lr(self) -> tuple[float, float]:
        """(the search's peak weight lr, its floor): tuning anneals from tune_lr_factor x the first."""

    def start_tuning(self) -> None:
        """Before the first tuning epoch: forget the weight optimizer's state (momentum), as the reference's
        projection starts afresh, and give the encodings' optimizer the search's own (unscheduled) lr."""

    def mixture_weight_step(self, batch, weights: dict[str, torch.Tensor], lr: float) -> dict[str, float]:
        """One weight step at `lr` of the supernet mixing every op by `weights` (no gradient to them)."""


def plan(space, seed: int) -> list[tuple[tuple[str, tuple], ...]]:
    """The perturbation rounds in order, each a tuple of decisions made together: first the op of one
    row of every encoding (each encoding's rows in its own random order), then one open node of every
    encoding, in random order."""
    rng = random.Random(f"perturbation-{seed}")
    ops, nodes = [], []
    for name, (rows, _) in space.encodings.items():
        order = list(range(len(rows)))
        rng.shuffle(order)
        ops.append([("op", (name, row)) for row in order])
        groups = [("node", group) for group in space.node_groups() if group[0] == name and len(group[1]) > group[2]]
        rng.shuffle(groups)
        nodes.append(groups)
    return _zip_rounds(ops) + _zip_rounds(nodes)


def _zip_rounds(per_encoding: list[list]) -> list[tuple]:
    """Round i holds the i-th decision of every encoding that has one."""
    longest = max((len(d) for d in per_encoding), default=0)
    return [tuple(d[i] for d in per_encoding if i < len(d)) for i in range(longest)]


def build_selection(algorithm: Selectable, options: SelectionConfig, seed: int) -> Perturbation | None:
    """The selection `options` ask for (None: the derivation rule on the probabilities)."""
    if options.selection != "perturbation":
        return None
    return Perturbation(algorithm, options.tune_epochs, options.tune_lr_factor, seed)


def selection_epochs(space, options) -> int:
    """Epochs a selection adds after the search epochs."""
    if options.selection != "perturbation":
        return 0
    return _epochs(len(plan(space, 0)), options.tune_epochs)


def _epochs(rounds: int, tune_epochs: int) -> int:
    """Epochs of `rounds` decision rounds `tune_epochs` apart (the last round tunes nothing after it)."""
    return (rounds - 1) * tune_epochs + 1


class Perturbation:
    """The decisions and tuning epochs that run after the search epochs of a supernet algorithm."""

    def __init__(self, algorithm: Selectable, tune_epochs: int, lr_factor: float, seed: int):
        self.algorithm, self.tune_epochs, self.lr_factor = algorithm, tune_epochs, lr_factor
        self.plan = plan(algorithm.space, seed)
        shapes = algorithm.space.encoding_shapes()
        self.override = {name: torch.zeros(shape) for name, shape in shapes.items()}
        self.fixed = {name: torch.zeros(shape[0], dtype=torch.bool) for name, shape in shapes.items()}
        self.made = 0  # rounds decided
        self.epochs_done = 0

    @property
    def epochs(self) -> int:
        return _epochs(len(self.plan), self.tune_epochs)

    def weights(self, probabilities: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The probabilities with every decided row replaced by its decision (differentiable in the rest)."""
        return {name: torch.where(self.fixed[name].to(p.device).unsqueeze(1), self.override[name].to(p.device), p)
                for name, p in probabilities.items()}

    def _accuracy(self, weights, val) -> float:
        net, device = self.algorithm.net, self.algorithm.device
        weights = {name: w.to(device) for name, w in weights.items()}
        return self.algorithm.dist.evaluate(lambda x: net(x, weights), *val, device)[1]  # global over ranks

    def _decide_op(self, name: str, row: int, current: dict, val) -> None:
        space = self.algorithm.space
        # ops the supernet still mixes on this row (progressive DrNAS pruned the others to weight 0)
        candidates = [k for k, op in enumerate(space.encodings[name][1])
                      if op not in space.excluded_ops and current[name][row, k] > 0]
        scores = []
        for k in candidates:
            trial = {n: w.clone() for n, w in current.items()}
            trial[name][row, k] = 0.0
            scores.append(self._accuracy(trial, val))
        keep = candidates[min(range(len(candidates)), key=scores.__getitem__)]  # removal hurts most
        self.override[name][row] = torch.nn.functional.one_hot(torch.tensor(keep), len(self.override[name][row]))
        self.fixed[name][row] = True

    def _decide_node(self, name: str, rows: tuple, keep: int, current: dict, val) -> None:
        remaining = list(rows)
        while len(remaining) > keep:
            scores = []
            for row in remaining:
                trial = {n: w.clone() for n, w in current.items()}
                trial[name][row] = 0.0
                scores.append(self._accuracy(trial, val))
            drop = remaining.pop(max(range(len(remaining)), key=scores.__getitem__))  # removal hurts least
            self.override[name][drop] = 0.0
            self.fixed[name][drop] = True
            current[name][drop] = 0.0

    def _decide(self, val) -> float:
        """The next round: each of its decisions measured on the supernet as the round's earlier ones left it."""
        for kind, item in self.plan[self.made]:
            current = self.weights(self.algorithm.probabilities())
            if kind == "op":
                self._decide_op(*item, current, val)
            else:
                self._decide_node(*item, current, val)
        self.made += 1
        return self._accuracy(self.weights(self.algorithm.probabilities()), val)

    def _encoding_step(self, val_batch) -> None:
        """First order, on the algorithm's relaxation with the decided rows fixed: undecided rows learn."""
        a = self.algorithm
        x, y = val_batch
        loss = F.cross_entropy(a.net(x, self.weights(a.relaxed_arch())), y)
        encodings = list(a.arch_encodings().values())
        _, grads = a.synced(loss, torch.autograd.grad(loss, encodings), "validation loss")
        a.encoding_optimizer.zero_grad(set_to_none=True)
        for encoding, grad in zip(encodings, grads):
            encoding.grad = grad
        a.encoding_optimizer.step()

    def run_epoch(self, train_stream, val, val_stream) -> dict[str, float]:
        """The next round when its turn has come, then one tuning epoch (none after the last round)."""
        metrics = {}
        if self.epochs_done % self.tune_epochs == 0:
            metrics["selection_val_acc"] = self._decide(val)
        a, batches = self.algorithm, train_stream.batches_per_pass
        tuning = self.epochs_done < self.epochs - 1
        if self.epochs_done == 0:
            a.start_tuning()
        sums: dict[str, float] = {}
        total = (self.epochs - 1) * batches
        peak, floor = a.tuning_lr()
        for b in range(batches if tuning else 0):
            batch = tuple(t.to(a.device) for t in next(train_stream))
            self._encoding_step(tuple(t.to(a.device) for t in next(val_stream)))
            lr = scheduled_lr(self.lr_factor * peak, self.epochs_done * batches + b, total, "cosine",
                              floor=min(floor, self.lr_factor * peak))
            weights = self.weights(a.probabilities())
            for key, value in a.mixture_weight_step(batch, weights, lr).items():
                sums[key] = sums.get(key, 0.0) + value
        self.epochs_done += 1
        metrics.update({k: v / batches for k, v in sums.items()})
        metrics["decided"] = float(self.made)
        return metrics

    def state_dict(self) -> dict:
        return {"override": self.override, "fixed": self.fixed, "made": self.made, "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        self.override, self.fixed = state["override"], state["fixed"]
        self.made, self.epochs_done = int(state["made"]), int(state["epochs_done"])
