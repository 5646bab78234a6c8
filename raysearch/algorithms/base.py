"""The small interface every differentiable search algorithm implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from raysearch.distributed import LOCAL
from raysearch.training import check_finite


@dataclass(frozen=True)
class SearchResult:
    """What a search derives: the genotype and the hyper-parameters for retraining."""

    genotype: object  # a genotype value of the searched space (has to_string / to_json)
    hparams: dict = field(default_factory=dict)  # e.g. {"lr": [per-step list], "weight_decay": float}


class SearchAlgorithm(ABC):
    """One differentiable search over a supernet, driven step by step by a plain loop.

    Constructor: `(space, options, training, total_steps, seed, device, steps_per_epoch, dist)`;
    `encoding_optimizer` is the one optimizer that changes the encodings.
    `dist` (raysearch.distributed) shards the search: every gradient goes
    through `synced` before an optimizer uses it.
    After each search epoch the loop calls `end_epoch`; an algorithm that stops
    early sets `stopped`. A `selection` (e.g. perturbation) runs its own epochs
    after the search epochs.
    """

    stopped = False  # the search ended before its epochs (early stopping)
    dist = LOCAL  # the distributed context; the constructor sets it
    steps = 0  # search steps taken
    selection = None  # the selection that runs after the search epochs, or None (the derivation rule only)
    final_model = False  # the search trains the result (DHA): never retrained; such a search defines
    # `final_network(images)`, the fixed network it has trained so far (batch norms calibrated on `images`),
    # or None while it has none; every epoch tests it and saves it

    def synced(self, loss: torch.Tensor, tensors, what: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`loss` and `tensors` (gradients of it) averaged over ranks in one collective; then a loss that is
        not finite on any rank raises on every rank at the same step."""
        loss, *tensors = self.dist.average([loss.detach(), *tensors])
        check_finite(loss, what, self.steps)
        return loss, tensors

    def selected_weights(self) -> dict[str, torch.Tensor]:
        """What the final architecture is read from: the architecture probabilities (`probabilities()`),
        with the selection's decisions."""
        probabilities = self.probabilities()
        return probabilities if self.selection is None else self.selection.weights(probabilities)

    def selection_state(self) -> dict | None:
        """The selection's part of a checkpoint (None without a selection)."""
        return None if self.selection is None else self.selection.state_dict()

    def load_selection_state(self, saved: dict | None) -> None:
        if self.selection is not None:
            self.selection.load_state_dict(saved)

    def end_epoch(self, val_batch) -> dict[str, float]:
        """Hook after every search epoch, with one validation batch; returns extra metrics."""
        return {}

    @abstractmethod
    def step(self, train_batch, val_batch) -> dict[str, float]:
        """One search step on a training and a validation batch; returns scalar metrics."""

    @abstractmethod
    def derive(self) -> SearchResult:
        """The configuration the search currently selects."""

    @abstractmethod
    def probabilities(self) -> dict[str, torch.Tensor]:
        """The architecture encodings as op probabilities, without gradient: what the derivation reads."""

    @abstractmethod
    def encodings(self) -> dict[str, torch.Tensor]:
        """Current probabilities of every encoding, by name (for logs and plots)."""

    @abstractmethod
    def encoding_labels(self) -> dict[str, tuple]:
        """Per encoding name: (row names or None for a vector, names of its choices)."""

    @abstractmethod
    def derived_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Supernet output with the derived architecture (for validation accuracy)."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to continue the search exactly: weights, encodings, optimizers, RNG, step."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...


def derived_forward(net, space, genotype, x: torch.Tensor) -> torch.Tensor:
    """The supernet's output when it computes only `genotype` (one op per kept edge)."""
    weights = {name: w.to(x.device) for name, w in space.derived_weights(genotype).items()}
    return net(x, weights, {name: w.argmax(-1).tolist() for name, w in weights.items()})
