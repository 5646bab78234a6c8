"""DHA (Zhou et al., 2022): the augmentation policy, the training HPs and the architecture in one run,
whose trained network is the result (no retraining). The defaults are what the authors' code does
(kaichen-z/DHA, ISTA-NAS's `ista_nas_single/`), where it differs from the paper or the paper is silent.

One step, in the reference's order, on a training batch and a hyper-step batch:
  1. augmentation: one Gumbel-softmax matrix over the 14 x 14 op pairs per step (temperature
     `policy_temperature`, 2), from which every training image draws its ordered pair
     (raysearch.augment); magnitudes uniform up to `max_level` of each op's range while searching (the
     reference's level 1 of 8), up to `frozen_max_level` once the architecture froze (its level U[0, 10]
     clipped at 8);
  2. one forward and backward of the mean training loss on the augmented batch gives the gradients of
     the ISTA codes (raysearch.algorithms.ista), of the weights and, through Eq. 2's loss
     sum_k p(pair_k) (-loss_k) / n, of the pair matrix; SGD (momentum 0.9, Nesterov, wd 5e-4) steps the
     pair matrix and Adam the codes (together: `encoding_optimizer`), then the weights take an SGD step
     whose lr and wd are tensors that require grad: W' = W - lr(t) (m buf + g + wd W) stays in the
     autograd graph (Eq. 3);
  3. hypergradient step (Eq. 4): the hyper-step batch's cross-entropy at W', mixed by the codes after
     their step, is backpropagated into lr and wd, which take an SGD step (momentum 0.9, Nesterov, wd
     5e-4) and are clamped to their ranges (they start at the ranges' midpoints); W' is then detached
     and becomes W.

Two phases. Searching: the supports are recovered at each epoch's end and a node whose recovered
architecture stops moving freezes; every batch norm inside a searching node's edges keeps gamma 1, beta
0 (frozen affine, ISTA-NAS: with `space.op_norm` every op ends in one, so an op's contribution is its
mixing weight alone), and the weight lr is constant. Training: once every node froze, or at the latest
after `search_share` of the epochs (the nodes still searching keep the support they trained), the
support trains for the rest of the run: its batch norms learn, its mixing weights stay as they are, the
lr follows `training.lr_schedule` over the steps left. The model of an epoch is always the support that
epoch trained (a support recovered at its end trains in the next one), cut out of the supernet with its
weights (`final_network`); the run's model is the one the training phase trained.

Data (`train_data: all`, the reference's): the weights train on search-train + search-val, and the
hyper-step batches come from its last `hyper_fraction`, never augmented (raysearch.search.search_data).

Choices the paper leaves open: the searched lr is the peak of the training phase's schedule; the
hypergradient uses g as a constant (first order, as Eq. 4's one-step unroll). Where the reference and
the paper differ, the paper's settings are options: `max_level: 0.8` (the paper's level 8 of 10),
`policy_optimizer: adam`, `policy_temperature: null` (exact draws per image), `hyper_momentum: 0`.
Not taken from the reference: its policy lr (0.02 -> 0.05) and hyper lr (x100) rise after freezing; its
batch norms inside frozen-affine edges do learn after the first step (its `reset_model` sets
requires_grad back on every weight), where raysearch keeps them frozen as ISTA-NAS and the DHA paper
describe; its colour ops are strongest at level 0 (raysearch.augment says why its ops are not).

Ablations (Sequential DHA trains a fixed `genotype` with augmentation and HPO):
`search_arch`, `search_hparams`, `search_augmentation` each false turns that part off (then: the fixed
genotype, trained from the first step as in the training phase; the training section's lr and wd; no
augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from raysearch.algorithms.base import SearchAlgorithm, SearchResult
from raysearch.algorithms.ista import MEASUREMENTS, IstaArchitecture
from raysearch.augment import OP_NAMES, Augmenter, PairPolicy
from raysearch.distributed import LOCAL
from raysearch.relax import probability_entropy
from raysearch.schema import ConfigError, spec
from raysearch.spaces.fixed import fixed_from_supernet, recalibrate_batch_norm
from raysearch.training import Optimizers, TrainingConfig, clipped, scheduled_lr


POLICY = "augmentation"  # the encoding name of the pair policy (probabilities of the ops x ops pairs)
TRAIN_DATA = ("all", "search_train")  # what the weights train on (see DHAConfig.train_data)


@dataclass(frozen=True)
class DHAConfig:
    lr_range: tuple[float, ...] = spec((0.02, 0.2), gt=0.0, length=2)  # [low, high] of the searched peak lr
    wd_range: tuple[float, ...] = spec((1e-4, 1e-3), ge=0.0, length=2)  # [low, high] of the searched weight decay
    lr_hyper_lr: float = spec(1e-5, ge=0.0)  # SGD step size of the lr's hypergradient (reference: 1e-8, the lr barely moves)
    wd_hyper_lr: float = spec(1e-7, ge=0.0)  # SGD step size of the weight decay's hypergradient
    hyper_momentum: float = spec(0.9, ge=0.0, lt=1.0)  # the hyper-step's momentum, Nesterov (reference; 0: the paper's SGD)
    hyper_weight_decay: float = spec(5e-4, ge=0.0)  # the hyper-step's weight decay on lr and wd themselves (reference)
    arch_lr: float = spec(3e-4, gt=0.0)  # Adam lr of the ISTA codes (ISTA-NAS)
    arch_weight_decay: float = spec(1e-3, ge=0.0)  # Adam weight decay of the ISTA codes (ISTA-NAS)
    proj_dims: int = spec(7, ge=1)  # measurements per ISTA group (ISTA-NAS: 7), capped at the group's size - 1
    code_init_std: float = spec(1e-3, gt=0.0)  # the codes start as this x N(0, 1) (ISTA-NAS)
    measurement: str = spec("auto", choices=MEASUREMENTS)  # ISTA's matrices: uniform U[0,1) (ISTA-NAS), centered U[-1,1); auto: uniform where nodes pick edges (DARTS), else centered
    lasso_lambda: float = spec(1e-5, gt=0.0)  # L1 weight of the LASSO recovery (ISTA-NAS)
    freeze_tol: float = spec(1e-3, ge=0.0)  # a node freezes once its recovered x moves by at most this per epoch
    search_share: float = spec(0.5, gt=0.0, lt=1.0)  # the most of search.epochs that searches; the rest trains the support (reference: 600 + 600)
    policy_optimizer: str = spec("sgd", choices=("sgd", "adam"))  # pair matrix: sgd, momentum 0.9, Nesterov, wd 5e-4 (reference); adam, betas (0.5, 0.999)
    policy_lr: float = spec(0.02, gt=0.0)  # lr of the 14 x 14 augmentation pair matrix (reference: 0.02; paper: Adam 1e-3)
    policy_temperature: float | None = spec(2.0, gt=0.0)  # one Gumbel-softmax pair matrix a step at this temperature (reference); null: exact draws per image
    max_level: float = spec(0.125, gt=0.0, le=1.25)  # largest magnitude while searching, a fraction of each op's range (reference: level 1 of 8; paper: 0.8)
    frozen_max_level: float = spec(1.25, gt=0.0, le=1.25)  # the same once the architecture froze (reference: U[0, 10] clipped at 8, i.e. 1.25)
    train_data: str = spec("all", choices=TRAIN_DATA)  # all: weights on search-train + search-val (reference); search_train: on search-train, hyper-steps on search-val
    hyper_fraction: float = spec(0.02, gt=0.0, lt=1.0)  # with train_data all: the last share of it (at least a batch) the hyper-steps read (reference: 2%)
    affine: bool = True  # the supernet's batch norms have a scale and shift (frozen while their node searches)
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

    def check_space(self, space) -> None:
        if self.search_arch and getattr(space.options, "op_norm", True) is False:
            raise ConfigError(f"space.op_norm: DHA's codes start at {self.code_init_std:g} (ISTA-NAS), so every "
                              f"op of a {space.name} supernet must end in a batch norm: set space.op_norm: true")


class DHA(SearchAlgorithm):
    final_model = True

    def __init__(self, space, options: DHAConfig, training: TrainingConfig, total_steps: int, seed: int,
                 device=torch.device("cpu"), steps_per_epoch: int | None = None, dist=LOCAL):
        self.space, self.options, self.training = space, options, training
        self.total_steps, self.device, self.dist = total_steps, torch.device(device), dist
        steps_per_epoch = steps_per_epoch or total_steps
        self.warmup_steps = training.warmup_epochs * steps_per_epoch
        epochs = max(1, total_steps // steps_per_epoch)
        self.search_steps = max(1, round(options.search_share * epochs)) * steps_per_epoch
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
            init, options.measurement).to(self.device)
        self.edge_norms = self._edge_norms()
        self.policy = PairPolicy().to(self.device)
        self.augmenter = Augmenter(*_normalisation(space.data, self.device), max_level=options.max_level)
        codes = [] if self.ista is None else [torch.optim.Adam(
            list(self.ista.codes), lr=options.arch_lr, betas=(0.5, 0.999), weight_decay=options.arch_weight_decay)]
        policy = list(self.policy.parameters())
        policy_optimizer = (torch.optim.SGD(policy, lr=options.policy_lr, momentum=0.9, nesterov=True,
                                            weight_decay=5e-4) if options.policy_optimizer == "sgd"
                            else torch.optim.Adam(policy, lr=options.policy_lr, betas=(0.5, 0.999)))
        self.encoding_optimizer = Optimizers(policy_optimizer, *codes)
        midpoint = lambda r: (r[0] + r[1]) / 2  # noqa: E731
        searched = options.search_hparams
        self.hyper = {  # the searched lr and weight decay: leaf tensors of the hyper-step (float64 on the CPU,
            # so that they clamp to their ranges exactly; each step uses them on the device, in the graph)
            "lr": torch.tensor(midpoint(options.lr_range) if searched else training.lr, dtype=torch.float64),
            "wd": torch.tensor(midpoint(options.wd_range) if searched else training.weight_decay,
                               dtype=torch.float64)}
        self.hyper_optimizer = None if not searched else torch.optim.SGD(
            [{"params": [self.hyper["lr"].requires_grad_()], "lr": options.lr_hyper_lr},
             {"params": [self.hyper["wd"].requires_grad_()], "lr": options.wd_hyper_lr}],
            momentum=options.hyper_momentum, nesterov=options.hyper_momentum > 0,
            weight_decay=options.hyper_weight_decay)
        self.generator = torch.Generator().manual_seed(seed + 1)  # augmentation draws, apart from the init
        self.steps = 0
        self.trained = None  # (mixing weights, active ops) of the architecture the last epoch trained
        self.frozen_at = None if self.ista is not None else 0  # the step the training phase began at
        if self.frozen_at is not None:
            self.augmenter.max_level = options.frozen_max_level

    @property
    def lr(self) -> float:
        return float(self.hyper["lr"].detach())

    @property
    def wd(self) -> float:
        return float(self.hyper["wd"].detach())

    # -- the architecture each forward computes -------------------------------------------
    def _edge_norms(self) -> list[list[int]]:
        """Per ISTA group, the indices in `weights` of the affine parameters of every batch norm inside its
        edges' ops (all candidates, as ISTA-NAS): frozen at gamma 1, beta 0 while the group searches."""
        if self.ista is None:
            return []
        group_of = {(name, row): k for k, (name, rows, _) in enumerate(self.ista.groups) for row in rows}
        index = {id(w): i for i, w in enumerate(self.weights)}
        out = [[] for _ in self.ista.groups]
        for name, row, edge in self.net.edges():
            for module in edge.modules():
                if isinstance(module, _BatchNorm) and module.affine:
                    out[group_of[(name, row)]] += [index[id(module.weight)], index[id(module.bias)]]
        return out

    def _held(self) -> set[int]:
        """Indices of the weights the step leaves alone: the edge batch norms of the groups still searching."""
        if self.ista is None:
            return set()
        return {i for k, indices in enumerate(self.edge_norms) if not self.ista.frozen[k] for i in indices}

    def mix(self) -> tuple[dict, dict]:
        """Mixing weights and the op each row computes (-1: off): the ISTA support's, or the fixed genotype's."""
        if self.ista is not None:
            return self.ista.mix()
        if self.fixed is None:
            raise ValueError("DHA with search_arch false needs its genotype (search.genotype)")
        weights = {n: w.to(self.device) for n, w in self.space.derived_weights(self.fixed).items()}
        return weights, {n: [int(r.argmax()) if r.any() else -1 for r in w] for n, w in weights.items()}

    def _architecture(self) -> tuple[dict, dict]:
        """What the epoch's model computes (the evaluation, the derivation, the saved model): the
        architecture the last epoch trained, never a support recovered after it."""
        return self.trained if self.trained is not None else self._architecture_now()

    def fix_architecture(self, genotype: str) -> None:
        """Train `genotype` from here on (Sequential DHA's second stage)."""
        self.fixed = self.space.parse(genotype)
        self.trained = None

    @property
    def searching(self) -> bool:
        return self.frozen_at is None

    def _sample_augmentation(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(pairs, flat pair index) of a global batch of `n` images, from the generator every rank shares:
        the same draws on every rank and for one worker; each rank then takes its slice."""
        return self.policy.sample(n, self.generator, self.options.policy_temperature)

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
        """The lr factor of the step: constant while searching (after any warm-up), then the training
        section's schedule over the training phase's steps (ISTA-NAS: cosine only after freezing)."""
        if self.frozen_at is None:
            return scheduled_lr(1.0, self.steps, self.total_steps, "constant", self.warmup_steps)
        return scheduled_lr(1.0, self.steps - self.frozen_at, self.total_steps - self.frozen_at,
                            self.training.lr_schedule, max(self.warmup_steps - self.frozen_at, 0))

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
        code_grads, policy_grads = synced[len(self.weights):-len(policy_grads)], synced[-len(policy_grads):]
        self.encoding_optimizer.zero_grad(set_to_none=True)
        for p, grad in zip([*self.policy.parameters(), *encodings], [*policy_grads, *code_grads]):
            p.grad = grad
        self.encoding_optimizer.step()

        # (3) W' = W - lr(t) (m buf + g + wd W) with lr and wd in the graph; their hypergradient at W' and
        # the codes after their step
        held = self._held()
        g = clipped([torch.zeros_like(gi) if i in held else gi for i, gi in enumerate(g)], self.training.grad_clip)
        factor = self._schedule()
        lr, wd = (self.hyper[name].to(self.device, torch.float32) for name in ("lr", "wd"))
        updated, directions = self.lookahead(g, lr, wd, factor, held)
        val_w, val_active = self.mix()
        val_loss, val_logits = self.lookahead_loss(updated, (xv, yv), val_w, val_active)
        step_lr = self.lr  # the lr this step's W' was taken with (the hyper-step then moves it)
        if self.hyper_optimizer is not None:
            hyper = torch.autograd.grad(val_loss, [self.hyper["lr"], self.hyper["wd"]])
            val_loss, hyper = self.synced(val_loss, [h.to(self.device, torch.float32) for h in hyper],
                                          "validation loss")
            self._hyper_step(hyper)
        else:
            val_loss = self.dist.average([val_loss.detach()])[0]
        with torch.no_grad():
            for w, buf, d in zip(self.weights, self.momentum, directions):
                buf.copy_(d)
                w.sub_(step_lr * factor * d)  # W <- W' (its forward value), out of the graph
        self.steps += 1
        metrics = {"train_loss": loss.item(), "train_acc": (logits.argmax(1) == y).float().mean().item(),
                   "val_loss": val_loss.item(), "val_acc": (val_logits.argmax(1) == yv).float().mean().item(),
                   "searched_lr": self.lr, "searched_wd": self.wd, "lr_scale": factor,
                   "searching": float(self.searching),
                   "policy_entropy": probability_entropy(self.policy.probabilities().detach().flatten()).item()}
        if self.ista is not None:
            metrics["arch_entropy"] = sum(probability_entropy(p).item() for p in self.probabilities().values()) \
                / len(self.ista.shapes)
        return metrics

    def _hyper_step(self, grads) -> None:
        """SGD on lr and wd from their (synced) hypergradients, then each clamped to its range."""
        self.hyper_optimizer.zero_grad(set_to_none=True)
        for name, grad in zip(("lr", "wd"), grads):
            self.hyper[name].grad = grad.to(self.hyper[name])
        self.hyper_optimizer.step()
        with torch.no_grad():
            self.hyper["lr"].clamp_(*self.options.lr_range)
            self.hyper["wd"].clamp_(*self.options.wd_range)

    def lookahead(self, g, lr: torch.Tensor, wd: torch.Tensor, factor: float,
                  held: set[int] = frozenset()) -> tuple[dict, list]:
        """W' = W - lr factor (m buf + g + wd W) by parameter name, in the graph of `lr` and `wd` (Eq. 3),
        and the step directions (the momentum buffers' next values); the `held` weights do not move."""
        m = self.training.momentum
        directions = [torch.zeros_like(w) if i in held else m * buf + gi + wd * w.detach()
                      for i, (buf, gi, w) in enumerate(zip(self.momentum, g, self.weights))]
        return {n: w.detach() - lr * factor * d for n, w, d in zip(self.names, self.weights, directions)}, directions

    def lookahead_loss(self, updated: dict, batch, arch_w: dict, active) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy, logits) of `batch` through the weights `updated` (Eq. 4's objective)."""
        x, y = batch
        logits = functional_call(self.net, updated, (x, {k: w.detach() for k, w in arch_w.items()}, active))
        return F.cross_entropy(logits, y), logits

    def end_epoch(self, val_batch) -> dict[str, float]:
        """The epoch's model is the architecture it trained; then, while searching, ISTA's recovery of the
        supports (nodes whose architecture stopped moving freeze), or, once the search phase is over, every
        node keeps the support it trained. When every node is frozen the training phase begins."""
        self.trained = self._architecture_now()
        if self.ista is None or not self.searching:
            return {"searching": 0.0}
        if self.steps >= self.search_steps:
            self.ista.freeze_all()
            metrics = {"frozen_nodes": float(len(self.ista.groups)), "support_changes": 0.0}
        else:
            metrics = self.ista.recover()
        if self.ista.all_frozen:
            self.frozen_at = self.steps
            self.augmenter.max_level = self.options.frozen_max_level
        return metrics

    def _architecture_now(self) -> tuple[dict, dict]:
        weights, active = self.mix()
        return {k: w.detach().clone() for k, w in weights.items()}, active

    # -- derivation ------------------------------------------------------------------------
    def derive(self) -> SearchResult:
        if self.ista is None:
            genotype = self.fixed
        else:
            genotype = self.space.derive(self.ista.support_weights(self._architecture()[1]))
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
        """The deployable model: the supernet computing the ops of the support the last epoch trained."""
        weights, active = self._architecture()
        return self.net(x, {k: w.detach() for k, w in weights.items()}, active)

    def final_network(self, images: torch.Tensor):
        """The deployable model: the fixed network of the support the last epoch trained, cut out of the
        supernet (each kept op with its trained weights, scaled by its mixing weight), its batch norms
        calibrated on `images` (raysearch.spaces.fixed); in eval mode, so its accuracy does not depend on
        the batch."""
        weights, active = self._architecture()
        net = fixed_from_supernet(self.space, self.derive().genotype, self.net,
                                  {k: w.detach() for k, w in weights.items()}, active)
        return recalibrate_batch_norm(net, images)

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "momentum": [b.clone() for b in self.momentum],
                "ista": None if self.ista is None else self.ista.state_dict(), "policy": self.policy.state_dict(),
                "optimizer": self.encoding_optimizer.state_dict(), "lr": self.lr, "wd": self.wd,
                "hyper_optimizer": None if self.hyper_optimizer is None else self.hyper_optimizer.state_dict(),
                "generator": self.generator.get_state(), "steps": self.steps, "frozen_at": self.frozen_at,
                "trained": self.trained}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        for buf, saved in zip(self.momentum, state["momentum"]):
            buf.copy_(saved)
        if self.ista is not None:
            self.ista.load_state_dict(state["ista"])
        self.policy.load_state_dict(state["policy"])
        self.encoding_optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            self.hyper["lr"].fill_(float(state["lr"]))
            self.hyper["wd"].fill_(float(state["wd"]))
        if self.hyper_optimizer is not None:
            self.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])
        self.frozen_at = None if state["frozen_at"] is None else int(state["frozen_at"])
        self.augmenter.max_level = self.options.max_level if self.searching else self.options.frozen_max_level
        trained = state["trained"]
        self.trained = None if trained is None else (
            {k: w.to(self.device) for k, w in trained[0].items()}, {k: list(v) for k, v in trained[1].items()})


def _normalisation(shape, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) of search-train, [1, C, 1, 1]: the augmentation works on [0, 1] images."""
    c = shape.in_channels
    mean = torch.tensor(shape.mean if shape.mean is not None else (0.0,) * c, device=device).view(1, c, 1, 1)
    std = torch.tensor(shape.std if shape.std is not None else (1.0,) * c, device=device).view(1, c, 1, 1)
    return mean, std
