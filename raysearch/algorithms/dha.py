"""DHA (Zhou et al., 2022): the augmentation policy, the training HPs and the architecture in one run, whose
trained supernet is the result (no retraining).

One step, on a training and a validation batch:
  1. augmentation: every training image gets an ordered pair of ops drawn
     from a Gumbel-perturbed softmax over the 14 x 14 pair matrix
     (raysearch.augment), magnitudes uniform up to `max_level`;
  2. one forward and backward of the mean training loss on the augmented
     batch gives the gradients of the ISTA codes (raysearch.algorithms.ista),
     of the weights and, through Eq. 2's loss sum_k p(pair_k) (-loss_k) / n,
     of the pair matrix; Adam steps the codes and the pair matrix (the
     encoding optimizer), then the weights take an SGD step whose lr and wd
     are tensors that require grad: W' = W - lr(t) (m buf + g + wd W) stays
     in the autograd graph (Eq. 3);
  3. hypergradient step (Eq. 4): the validation batch's cross-entropy at W'
     is backpropagated into lr and wd, which take an SGD step each and are
     clamped to their ranges (they start at the ranges' midpoints); W' is
     then detached and becomes W.
The ISTA supports are recovered at each epoch's end; a node whose recovered
architecture stops moving freezes. The deployable model is the fixed network of
the support, cut out of the supernet with its trained weights (`final_network`).

Choices the paper leaves open: the searched lr is the peak of the training
section's schedule (warm-up and cosine multiply it per step, so the model at
the end has annealed); the pair matrix and the codes share one Adam (codes:
lr `arch_lr`, betas (0.5, 0.999), wd `arch_weight_decay` as ISTA-NAS; pair
matrix: lr `policy_lr`, no weight decay); the hypergradient uses g as a
constant (first order, as Eq. 4's one-step unroll).

Ablations (Sequential DHA trains a fixed `genotype` with augmentation and HPO):
`search_arch`, `search_hparams`, `search_augmentation` each false turns that
part off (then: the fixed genotype, the training section's lr and wd, no
augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from raysearch.algorithms.base import SearchAlgorithm, SearchResult
from raysearch.algorithms.ista import IstaArchitecture
from raysearch.augment import OP_NAMES, Augmenter, PairPolicy
from raysearch.distributed import LOCAL
from raysearch.relax import probability_entropy
from raysearch.schema import ConfigError, spec
from raysearch.spaces.fixed import fixed_from_supernet, recalibrate_batch_norm
from raysearch.training import TrainingConfig, clipped, scheduled_lr


POLICY = "augmentation"  # the encoding name of the pair policy (probabilities of the ops x ops pairs)


@dataclass(frozen=True)
class DHAConfig:
    lr_range: tuple[float, ...] = spec((0.02, 0.2), gt=0.0, length=2)  # [low, high] of the searched peak lr
    wd_range: tuple[float, ...] = spec((1e-4, 1e-3), ge=0.0, length=2)  # [low, high] of the searched weight decay
    lr_hyper_lr: float = spec(1e-4, ge=0.0)  # SGD step size of the lr's hypergradient
    wd_hyper_lr: float = spec(1e-6, ge=0.0)  # SGD step size of the weight decay's hypergradient
    arch_lr: float = spec(3e-4, gt=0.0)  # Adam lr of the ISTA codes (ISTA-NAS)
    arch_weight_decay: float = spec(1e-3, ge=0.0)  # Adam weight decay of the ISTA codes (ISTA-NAS)
    proj_dims: int = spec(7, ge=1)  # measurements per ISTA group (ISTA-NAS: 7), capped at the group's size - 1
    code_init_std: float = spec(1e-3, gt=0.0)  # the codes start as this x N(0, 1) (ISTA-NAS)
    lasso_lambda: float = spec(1e-5, gt=0.0)  # L1 weight of the LASSO recovery (ISTA-NAS)
    freeze_tol: float = spec(1e-3, ge=0.0)  # a node freezes once its recovered x moves by at most this per epoch
    policy_lr: float = spec(1e-3, gt=0.0)  # Adam lr of the 14 x 14 augmentation pair matrix
    max_level: float = spec(0.8, gt=0.0, le=1.0)  # largest magnitude as a fraction of each op's range (8 of 10)
    affine: bool = True  # the supernet's batch norms learn a scale and shift: the trained supernet is the model
    search_arch: bool = True  # false: train the fixed `genotype` (Sequential DHA, or the no-NAS ablation)
    search_hparams: bool = True  # false: the training section's lr and weight decay (no-HPO ablation)
    search_augmentation: bool = True  # false: no augmentation (no-DA ablation)
    genotype: str | None = None  # the architecture when search_arch is false, in the space's string format

    def check(self, search) -> None:
        for name in ("lr_range", "wd_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"search.{name}: [low, high] with low <= high, got [{low}, {high}]")
        if (self.genotype is None) == (not self.search_arch):
            raise ConfigError("search.genotype: give the fixed architecture exactly when search_arch is false")


class DHA(SearchAlgorithm):
    final_model = True

    def __init__(self, space, options: DHAConfig, training: TrainingConfig, total_steps: int, seed: int,
                 device=torch.device("cpu"), steps_per_epoch: int | None = None, dist=LOCAL):
        self.space, self.options, self.training = space, options, training
        self.total_steps, self.device, self.dist = total_steps, torch.device(device), dist
        self.warmup_steps = training.warmup_epochs * (steps_per_epoch or total_steps)
        init = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the supernet's initial weights
            self.net = dist.prepare(space.supernet(affine=options.affine)).to(self.device)
        self.weights = list(self.net.parameters())
        self.names = [n for n, _ in self.net.named_parameters()]
        self.momentum = [torch.zeros_like(w) for w in self.weights]
        # a fixed architecture: the options' genotype, or (Sequential DHA) one given later by fix_architecture
        self.fixed = None if options.search_arch or options.genotype is None else space.parse(options.genotype)
        self.ista = None if not options.search_arch else IstaArchitecture(
            space, options.proj_dims, options.code_init_std, options.lasso_lambda, options.freeze_tol,
            init).to(self.device)
        self.policy = PairPolicy().to(self.device)
        shape = space.data
        self.augmenter = Augmenter(*_normalisation(shape, self.device), max_level=options.max_level)
        midpoint = lambda r: (r[0] + r[1]) / 2  # noqa: E731
        self.lr = midpoint(options.lr_range) if options.search_hparams else training.lr
        self.wd = midpoint(options.wd_range) if options.search_hparams else training.weight_decay
        groups = [{"params": list(self.policy.parameters()), "lr": options.policy_lr, "weight_decay": 0.0}]
        if self.ista is not None:
            groups.append({"params": list(self.ista.codes), "lr": options.arch_lr,
                           "weight_decay": options.arch_weight_decay})
        self.encoding_optimizer = torch.optim.Adam(groups, betas=(0.5, 0.999))
        self.generator = torch.Generator().manual_seed(seed + 1)  # augmentation draws, apart from the init
        self.steps = 0

    # -- the architecture each forward computes -------------------------------------------
    def mix(self) -> tuple[dict, dict]:
        """Mixing weights and the op each row computes (-1: off): the ISTA support's, or the fixed genotype's."""
        return self._architecture()

    def _architecture(self) -> tuple[dict, dict]:
        # what `mix` returns, for the evaluation and the saved model (not a draw of the step)
        if self.ista is not None:
            return self.ista.mix()
        if self.fixed is None:
            raise ValueError("DHA with search_arch false needs its genotype (search.genotype)")
        weights = {n: w.to(self.device) for n, w in self.space.derived_weights(self.fixed).items()}
        return weights, {n: [int(r.argmax()) if r.any() else -1 for r in w] for n, w in weights.items()}

    def fix_architecture(self, genotype: str) -> None:
        """Train `genotype` from here on (Sequential DHA's second stage)."""
        self.fixed = self.space.parse(genotype)

    def _sample_augmentation(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(pairs, flat pair index) of a global batch of `n` images, from the generator every rank shares:
        the same draws on every rank and for one worker; each rank then takes its slice."""
        return self.policy.sample(n, self.generator)

    def _augment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's images augmented by their slice of the global batch's pairs (and that slice's index)."""
        if not self.options.search_augmentation:
            return x, None
        n = len(x)
        pairs, index = self._sample_augmentation(n * self.dist.world_size)
        start = self.dist.rank * n
        pairs, index = pairs[start:start + n], index[start:start + n]
        return self.augmenter(x, pairs.to(x.device), self.generator), index.to(x.device)

    def _schedule(self) -> float:
        """The training section's schedule (warm-up, cosine) as a factor of the searched peak lr."""
        return scheduled_lr(1.0, self.steps, self.total_steps, self.training.lr_schedule, self.warmup_steps)

    # -- the step ------------------------------------------------------------------------
    def step(self, train_batch, val_batch) -> dict[str, float]:
        x, y = (t.to(self.device) for t in train_batch)
        xv, yv = (t.to(self.device) for t in val_batch)
        # (1) one ordered augmentation pair per training image
        x, index = self._augment(x)
        # (2) one backward of the mean training loss: the codes', the weights' and the policy's gradients
        arch_w, active = self.mix()
        logits = self.net(x, arch_w, active)
        per_image = F.cross_entropy(logits, y, reduction="none")
        loss = per_image.mean()
        encodings = self.ista.trainable_codes() if self.ista is not None else []
        grads = torch.autograd.grad(loss, self.weights + encodings, allow_unused=True, materialize_grads=True)
        policy_grads = [torch.zeros_like(p) for p in self.policy.parameters()]
        if index is not None:
            policy_grads = list(torch.autograd.grad(self.policy.loss(index, per_image), list(self.policy.parameters())))
        loss, synced = self.synced(loss, [*grads, *policy_grads], "training loss")
        g = synced[:len(self.weights)]
        encoding_grads = synced[len(self.weights):]
        self.encoding_optimizer.zero_grad(set_to_none=True)
        for p, grad in zip([*encodings, *self.policy.parameters()], encoding_grads):
            p.grad = grad
        self.encoding_optimizer.step()

        # (3) W' = W - lr(t) (m buf + g + wd W) with lr and wd in the graph; their hypergradient at W'
        g = clipped(g, self.training.grad_clip)
        lr = torch.tensor(self.lr, device=self.device, requires_grad=True)
        wd = torch.tensor(self.wd, device=self.device, requires_grad=True)
        factor = self._schedule()
        updated, directions = self.lookahead(g, lr, wd, factor)
        val_loss, val_logits = self.lookahead_loss(updated, (xv, yv), arch_w, active)
        if self.options.search_hparams:
            hyper = torch.autograd.grad(val_loss, [lr, wd])
            val_loss, (d_lr, d_wd) = self.synced(val_loss, list(hyper), "validation loss")
            o = self.options
            self.lr = min(max(self.lr - o.lr_hyper_lr * d_lr.item(), o.lr_range[0]), o.lr_range[1])
            self.wd = min(max(self.wd - o.wd_hyper_lr * d_wd.item(), o.wd_range[0]), o.wd_range[1])
        else:
            val_loss = self.dist.average([val_loss.detach()])[0]
        with torch.no_grad():
            for w, buf, d in zip(self.weights, self.momentum, directions):
                buf.copy_(d)
                w.sub_(float(lr) * factor * d)  # W <- W' (its forward value), out of the graph
        self.steps += 1
        metrics = {"train_loss": loss.item(), "train_acc": (logits.argmax(1) == y).float().mean().item(),
                   "val_loss": val_loss.item(), "val_acc": (val_logits.argmax(1) == yv).float().mean().item(),
                   "searched_lr": self.lr, "searched_wd": self.wd, "lr_scale": factor,
                   "policy_entropy": probability_entropy(self.policy.probabilities().detach().flatten()).item()}
        if self.ista is not None:
            metrics["arch_entropy"] = sum(probability_entropy(p).item() for p in self.probabilities().values()) \
                / len(self.ista.shapes)
        return metrics

    def lookahead(self, g, lr: torch.Tensor, wd: torch.Tensor, factor: float) -> tuple[dict, list]:
        """W' = W - lr factor (m buf + g + wd W) by parameter name, in the graph of `lr` and `wd` (Eq. 3),
        and the step directions (the momentum buffers' next values)."""
        m = self.training.momentum
        directions = [m * buf + gi + wd * w.detach() for buf, gi, w in zip(self.momentum, g, self.weights)]
        return {n: w.detach() - lr * factor * d for n, w, d in zip(self.names, self.weights, directions)}, directions

    def lookahead_loss(self, updated: dict, batch, arch_w: dict, active) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy, logits) of `batch` through the weights `updated` (Eq. 4's objective)."""
        x, y = batch
        logits = functional_call(self.net, updated, (x, {k: w.detach() for k, w in arch_w.items()}, active))
        return F.cross_entropy(logits, y), logits

    def end_epoch(self, val_batch) -> dict[str, float]:
        """ISTA's recovery of the supports from the codes; nodes whose architecture stopped moving freeze."""
        if self.ista is None:
            return {}
        return {"frozen_nodes": float(self.ista.recover())}

    # -- derivation ------------------------------------------------------------------------
    def derive(self) -> SearchResult:
        genotype = self.fixed if self.ista is None else self.space.derive(self.ista.support_weights())
        return SearchResult(genotype, {"lr": self.lr, "weight_decay": self.wd})

    @torch.no_grad()
    def probabilities(self) -> dict[str, torch.Tensor]:
        if self.ista is None:
            return self.space.derived_weights(self.fixed)
        return self.ista.probabilities()

    def encodings(self) -> dict[str, torch.Tensor]:
        out = {name: p.cpu() for name, p in self.probabilities().items()} if self.ista is not None else {}
        return {**out, POLICY: self.policy.probabilities().detach().flatten().cpu()}

    def encoding_labels(self) -> dict[str, tuple]:
        labels = {name: tuple(map(list, self.space.encodings[name])) for name in self.space.encodings
                  if self.ista is not None}
        return {**labels, POLICY: self.policy_labels()}

    @staticmethod
    def policy_labels() -> tuple:
        """The pair policy's labels: a vector over the ordered pairs `first+second`, row-major."""
        return None, [f"{a}+{b}" for a in OP_NAMES for b in OP_NAMES]

    @torch.no_grad()
    def derived_logits(self, x):
        """The deployable model: the supernet computing the current support's ops."""
        weights, active = self._architecture()
        return self.net(x, {k: w.detach() for k, w in weights.items()}, active)

    def final_network(self, images: torch.Tensor):
        """The deployable model: the fixed network of the current support cut out of the supernet (each kept
        op with its trained weights, scaled by its mixing weight), its batch norms calibrated on `images`
        (raysearch.spaces.fixed); in eval mode, so its accuracy does not depend on the batch."""
        weights, active = self._architecture()
        net = fixed_from_supernet(self.space, self.derive().genotype, self.net,
                                  {k: w.detach() for k, w in weights.items()}, active)
        return recalibrate_batch_norm(net, images)

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "momentum": [b.clone() for b in self.momentum],
                "ista": None if self.ista is None else self.ista.state_dict(), "policy": self.policy.state_dict(),
                "optimizer": self.encoding_optimizer.state_dict(), "lr": self.lr, "wd": self.wd,
                "generator": self.generator.get_state(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        for buf, saved in zip(self.momentum, state["momentum"]):
            buf.copy_(saved)
        if self.ista is not None:
            self.ista.load_state_dict(state["ista"])
        self.policy.load_state_dict(state["policy"])
        self.encoding_optimizer.load_state_dict(state["optimizer"])
        self.lr, self.wd = float(state["lr"]), float(state["wd"])
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])


def _normalisation(shape, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) of search-train, [1, C, 1, 1]: the augmentation works on [0, 1] images."""
    c = shape.in_channels
    mean = torch.tensor(shape.mean if shape.mean is not None else (0.0,) * c, device=device).view(1, c, 1, 1)
    std = torch.tensor(shape.std if shape.std is not None else (1.0,) * c, device=device).view(1, c, 1, 1)
    return mean, std
