"""Selecting the final architecture from a trained supernet: by magnitude or by perturbation (DARTS-PT).

Magnitude reads the space's derivation rule off the encodings' probabilities
at the end of the search. Perturbation (Wang et al., 2021) decides one edge at
a time, in a seeded random order: for each candidate op it zeroes that op's
mixing weight (no renormalisation) and measures the supernet's accuracy on
the whole search-val split (BN uses batch statistics, as in training, over
512-sample chunks); the op whose removal hurts most is kept and the edge
becomes one-hot (ops already pruned to weight 0, as by progressive DrNAS, are
not candidates). Spaces with a topology (DARTS: 2 inputs kept per node) then decide each node in random order,
deleting the incoming edge whose removal hurts least until the node keeps
its inputs. The supernet is tuned for `tune_epochs` between decisions.

Choices left open: undecided edges mix with the encodings' probabilities
(softmax, or the Dirichlet mean for DrNAS; GDAS's supernet, trained on one-hot
samples, is then read as a mixture too); tuning trains the weights only, at a
constant `lr_factor` x the search's initial weight lr; a node's topology is
decided in one go (its deletions back to back) and tuned once afterwards.
"""

from __future__ import annotations

import random

import torch


SELECTIONS = ("magnitude", "perturbation")


def plan(space, seed: int) -> list[tuple[str, tuple]]:
    """The perturbation decisions in order: every row's op in random order, then every node whose
    topology is open, in random order."""
    rng = random.Random(f"perturbation-{seed}")
    ops = [(name, row) for name, (rows, _) in space.encodings.items() for row in range(len(rows))]
    groups = [group for group in space.node_groups() if len(group[1]) > group[2]]
    rng.shuffle(ops)
    rng.shuffle(groups)
    return [("op", item) for item in ops] + [("node", group) for group in groups]


def selection_epochs(space, options) -> int:
    """Epochs a selection adds after the search epochs."""
    return len(plan(space, 0)) * options.tune_epochs if options.selection == "perturbation" else 0


class Perturbation:
    """The decisions and tuning epochs that run after the search epochs of a supernet algorithm."""

    def __init__(self, algorithm, tune_epochs: int, lr_factor: float, seed: int):
        self.algorithm, self.tune_epochs, self.lr_factor = algorithm, tune_epochs, lr_factor
        self.plan = plan(algorithm.space, seed)
        shapes = algorithm.space.encoding_shapes()
        self.override = {name: torch.zeros(shape) for name, shape in shapes.items()}
        self.fixed = {name: torch.zeros(shape[0], dtype=torch.bool) for name, shape in shapes.items()}
        self.made = 0  # decisions taken
        self.epochs_done = 0

    @property
    def epochs(self) -> int:
        return len(self.plan) * self.tune_epochs

    def weights(self, probabilities: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The probabilities with every decided row replaced by its decision."""
        return {name: torch.where(self.fixed[name].to(p.device).unsqueeze(1), self.override[name].to(p.device), p)
                for name, p in probabilities.items()}

    def _accuracy(self, weights, val) -> float:
        net, device = self.algorithm.net, self.algorithm.device
        weights = {name: w.to(device) for name, w in weights.items()}
        return self.algorithm.dist.evaluate(lambda x: net(x, weights), *val, device)[1]  # global over ranks

    def _decide(self, val) -> float:
        kind, item = self.plan[self.made]
        current = self.weights(self.algorithm.probabilities())
        space = self.algorithm.space
        if kind == "op":
            name, row = item
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
        else:
            name, rows, keep = item
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
        self.made += 1
        return self._accuracy(self.weights(self.algorithm.probabilities()), val)

    def run_epoch(self, train_stream, val) -> dict[str, float]:
        """One tuning epoch, preceded by the next decision when its turn has come."""
        metrics = {}
        if self.epochs_done % self.tune_epochs == 0:
            metrics["selection_val_acc"] = self._decide(val)
        lr = self.lr_factor * self.algorithm.options.weight_lr
        sums: dict[str, float] = {}
        for _ in range(train_stream.batches_per_pass):
            batch = tuple(t.to(self.algorithm.device) for t in next(train_stream))
            weights = self.weights(self.algorithm.probabilities())
            for key, value in self.algorithm.weight_step(batch, (weights, None), lr).items():
                sums[key] = sums.get(key, 0.0) + value
        self.epochs_done += 1
        metrics.update({k: v / train_stream.batches_per_pass for k, v in sums.items()})
        metrics["decided"] = float(self.made)
        return metrics

    def state_dict(self) -> dict:
        return {"override": self.override, "fixed": self.fixed, "made": self.made, "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        self.override, self.fixed = state["override"], state["fixed"]
        self.made, self.epochs_done = int(state["made"]), int(state["epochs_done"])
