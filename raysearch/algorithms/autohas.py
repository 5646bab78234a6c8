"""AutoHAS: joint search of the architecture and training hyper-parameters.

Every searched HP is a mixture of basis values h = sum_i P_i B_i, P a Gumbel
hard straight-through sample of its logits (Dong et al., AutoHAS, Algorithm 1).
One step:
  1. sample the architecture, one basis value per continuous HP and one
     optimizer (one sample per step, shared by all cells and both halves);
  2. take the training gradient g of the sampled architecture on a training batch;
  3. encoding update on a validation batch, with the weights the validation loss
     sees written as W' = W - sum_o P_o a_o (u_o + b v_o), where a_o = lr_o(t)
     sum P_lr m_lr and b = sum P_wd B_wd carry the straight-through gradients
     and (u_o, v_o) are optimizer o's step parts (raysearch.algorithms.update_rules).
     Each step f_B(W) is linear in lr and lr*wd, so this equals
     sum P_o P_i P_j f_{o,B_ij}(W) without one weight copy per basis value:
     memory does not grow with the number of basis values;
  4. apply the sampled optimizer's step to W (the forward value of W').
`w_prime: current` (the default) is this order: W' is the mixture of the
steps from W_t with this step's gradient g, so its forward value is exactly
the step the weights then take, and a step costs one training forward and
backward. Algorithm 1 updates W first and writes W' from the updated
weights: `w_prime: updated` takes the sampled step first, then a second
training gradient at W_{t+1} on the same batch (one more forward and
backward) and W' = W_{t+1} - sum_o P_o a_o (u_o + b v_o) from it.
Derivation (Eq. 10): argmax for the architecture and the optimizer; a
continuous HP is the softmax-weighted sum of its basis values, without noise.
The lr multiplier is derived at every step; times the derived optimizer's
scheduled default lr(t) it gives the per-step list that retraining replays
(a search derived before its last step extends it with the factor it derives
then, to the planned number of steps).

Selection: `selection: perturbation` decides the architecture edge by edge
after the search (DARTS-PT, raysearch.algorithms.selection), reading the
supernet as a mixture of the encodings' probabilities. Its tuning trains the
weights with the derived optimizer and weight decay, from tune_lr_factor x
the derived lr at its peak, cosine to 0, and the architecture encodings by
first-order Gumbel samples (no W'); the derived HPs stay as the search left them.

Temperature: the paper keeps tau at 10. `tau_min` anneals it as GDAS does
(linear per epoch from `tau` to `tau_min`): the forward stays hard, but the
straight-through gradients grow ~1/tau, so under Adam, whose second moment
remembers the small early gradients, the encodings move little while the
weights are still near chance and faster once they have learned. On
digits_hard it derived no better cells than the fixed tau over 20 seeds
(README, "Search quality on digits_hard"), so no config sets it.

Ablations: `search_hparams: false` searches the architecture under the
training section's HPs; `search_arch: false` searches the HPs of the fixed
`genotype`.

Choices the paper leaves open: Adam betas (0.5, 0.999) for the encodings, as
in the DARTS/GDAS encoding optimizers; no weight decay on the encodings (it
would pull continuous HPs toward the mean of their basis); g is clipped
before the step; Adam as a searched optimizer is AdamW (decoupled weight
decay, so its step stays linear in lr x wd) with its own default lr `adam_lr`,
torch's default betas (0.9, 0.999) and eps, and the same weight-decay basis
(training.weight_decay x the searched multipliers) as SGD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from raysearch.algorithms.base import SearchAlgorithm, SearchResult, derived_forward
from raysearch.algorithms.selection import SelectionConfig, build_selection
from raysearch.algorithms.update_rules import OPTIMIZERS, build_rule
from raysearch.schema import ConfigError, spec
from raysearch.distributed import LOCAL
from raysearch.relax import entropy, gumbel_hard, linear_tau
from raysearch.training import SCHEDULES, TrainingConfig, clipped, scheduled_lr, set_lr

MULTIPLIERS = (0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
HP_ENCODINGS = ("lr", "wd", "optimizer")


W_PRIME = ("current", "updated")  # where the encoding step's W' starts: see the module docstring


@dataclass(frozen=True)
class AutoHASConfig(SelectionConfig):
    tau: float = spec(10.0, gt=0.0)  # Gumbel softmax temperature (the forward is hard: it scales gradients)
    tau_min: float | None = spec(None, gt=0.0)  # set: tau falls linearly per epoch from tau to this (GDAS's schedule)
    encoding_lr: float = spec(0.002, gt=0.0)  # Adam lr of all encodings
    encoding_lr_schedule: str = spec("constant", choices=SCHEDULES)  # their lr over the search
    encoding_betas: tuple[float, ...] = spec((0.5, 0.999), ge=0.0, lt=1.0, length=2)  # Adam betas of the encodings
    lr_multipliers: tuple[float, ...] = spec(MULTIPLIERS, gt=0.0)  # lr basis = scheduled default lr x these
    wd_multipliers: tuple[float, ...] = spec(MULTIPLIERS, ge=0.0)  # wd basis = default wd x these
    optimizers: tuple[str, ...] = ("sgd",)  # categorical HP: sgd and/or adam; with both, the optimizer is searched
    adam_lr: float = spec(1e-3, gt=0.0)  # Adam's default lr (its lr basis = this, scheduled, x lr_multipliers)
    search_arch: bool = True  # false: HP-only ablation on the fixed `genotype`
    search_hparams: bool = True  # false: architecture-only ablation under the training section's HPs
    genotype: str | None = None  # the architecture of an HP-only search, in the space's string format
    w_prime: str = spec("current", choices=W_PRIME)  # current: W' from this step's g (cheaper); updated: Alg. 1
    warmup_epochs: int = spec(0, ge=0)  # epochs the encodings stay still while the weights train on uniform samples

    def check(self, search) -> None:
        bad = [o for o in self.optimizers if o not in OPTIMIZERS]
        if bad or len(set(self.optimizers)) != len(self.optimizers):
            raise ConfigError(f"search.optimizers: distinct names among {', '.join(OPTIMIZERS)}, got "
                              f"{list(self.optimizers)}")
        if not (self.search_arch or self.search_hparams):
            raise ConfigError("search.search_arch: with search_hparams also false there is nothing to search")
        if (self.genotype is None) == (not self.search_arch):
            raise ConfigError("search.genotype: give the fixed architecture exactly when search_arch is false")
        if self.selection != "magnitude" and not self.search_arch:
            raise ConfigError(f"search.selection: {self.selection} selects an architecture; with search_arch "
                              "false there is none to select (use magnitude)")


class AutoHAS(SearchAlgorithm):
    def __init__(self, space, options: AutoHASConfig, training: TrainingConfig, total_steps: int,
                 seed: int, device=torch.device("cpu"), steps_per_epoch: int | None = None, dist=LOCAL):
        # Schedules are per step; steps_per_epoch only sizes the warm-ups and tau_min's per-epoch schedule.
        self.space, self.options, self.training = space, options, training
        self.total_steps, self.device, self.dist = total_steps, torch.device(device), dist
        self.steps_per_epoch = steps_per_epoch or total_steps
        self.epochs = -(-total_steps // self.steps_per_epoch)  # what tau_min's schedule spans
        self.warmup_steps = training.warmup_epochs * self.steps_per_epoch
        self.encoding_warmup_steps = options.warmup_epochs * self.steps_per_epoch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the supernet's initial weights
            self.net = dist.prepare(space.supernet()).to(self.device)
        self.weights = [p for p in self.net.parameters()]
        self.names = [n for n, _ in self.net.named_parameters()]
        self.rules = [build_rule(name, self.weights, training) for name in options.optimizers]
        self.base_lrs = [training.lr if name == "sgd" else options.adam_lr for name in options.optimizers]
        # Encodings are logits kept apart from the weights; all start at zero (uniform).
        shapes = space.encoding_shapes() if options.search_arch else {}
        if options.search_hparams:
            shapes = {**shapes, "lr": (len(options.lr_multipliers),), "wd": (len(options.wd_multipliers),)}
            if len(options.optimizers) > 1:
                shapes["optimizer"] = (len(options.optimizers),)
        self.enc = torch.nn.ParameterDict({name: torch.zeros(shape) for name, shape in shapes.items()}).to(self.device)
        self.arch_names = tuple(name for name in self.enc if name not in HP_ENCODINGS)
        self.fixed = None if options.search_arch else space.parse(options.genotype)
        self.lr_mult = torch.tensor(options.lr_multipliers, device=self.device)
        self.wd_basis = training.weight_decay * torch.tensor(options.wd_multipliers, device=self.device)
        self.encoding_optimizer = torch.optim.Adam(
            self.enc.parameters(), lr=options.encoding_lr, betas=tuple(options.encoding_betas), weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.lr_factors: list[float] = []  # Eq. 10 lr multiplier after every step
        self.selection = build_selection(self, options, seed)

    # -- sampling -------------------------------------------------------------------
    def tau(self) -> float:
        """The temperature of this step's samples: fixed, or GDAS's linear fall per epoch to tau_min."""
        o = self.options
        if o.tau_min is None:
            return o.tau
        return linear_tau(o.tau, o.tau_min, self.steps // self.steps_per_epoch, self.epochs)

    def _sample_arch(self):
        if self.fixed is not None:
            weights = {n: w.to(self.device) for n, w in self.space.derived_weights(self.fixed).items()}
            return weights, {n: w.argmax(-1).tolist() for n, w in weights.items()}
        weights, active = {}, {}
        for name in self.arch_names:
            weights[name], index = gumbel_hard(self.enc[name], self.tau(), self.generator)
            active[name] = index.tolist()  # one host copy, shared by both forward passes
        return weights, active

    def _sample_hparams(self):
        """(lr multiplier a / lr(t), weight decay b, optimizer weights P_o, sampled optimizer index)."""
        if not self.options.search_hparams:
            one = torch.ones(1, device=self.device)
            return one[0], torch.tensor(self.training.weight_decay, device=self.device), one, 0
        tau = self.tau()
        lr_p, _ = gumbel_hard(self.enc["lr"], tau, self.generator)
        wd_p, _ = gumbel_hard(self.enc["wd"], tau, self.generator)
        if "optimizer" in self.enc:
            opt_p, index = gumbel_hard(self.enc["optimizer"], tau, self.generator)
        else:
            opt_p, index = torch.ones(1, device=self.device), torch.tensor(0)
        return (lr_p * self.lr_mult).sum(), (wd_p * self.wd_basis).sum(), opt_p, int(index)

    # -- the step -------------------------------------------------------------
    def _training_gradients(self, x, y, arch_w, active) -> tuple[torch.Tensor, torch.Tensor, list]:
        """(loss, logits, g): the sampled architecture's training gradient at the current W, global over
        ranks and clipped."""
        logits = self.net(x, {k: w.detach() for k, w in arch_w.items()}, active)
        loss = F.cross_entropy(logits, y)
        # Unsampled ops get no gradient: zeros, so their weights still decay and keep momentum.
        grads = torch.autograd.grad(loss, self.weights, allow_unused=True, materialize_grads=True)
        _, grads = self.synced(loss, grads, "training loss")  # g, and with it W', is global
        return loss, logits, clipped(grads, self.training.grad_clip)

    def _weight_step(self, grads, chosen: int, lr: float, wd: float, parts=None) -> None:
        """The sampled optimizer's step, in place: W <- W - lr (u + wd v) with its step `parts` (u, v) at W
        (computed if not given); states follow g first (at W)."""
        parts = parts or self.rules[chosen].parts(self.weights, grads)
        for rule in self.rules:
            rule.advance(self.weights, grads, wd)
        with torch.no_grad():
            for w, ui, vi in zip(self.weights, *parts):
                w.sub_(lr * (ui + wd * vi))

    def step(self, train_batch, val_batch) -> dict[str, float]:
        x, y = (t.to(self.device) for t in train_batch)
        xv, yv = (t.to(self.device) for t in val_batch)
        # (1) one sample of every encoding, shared by all cells and both halves of the step
        tau = self.tau()  # the temperature this step samples with
        arch_w, active = self._sample_arch()
        factor, b, opt_p, chosen = self._sample_hparams()
        base = [scheduled_lr(lr, self.steps, self.total_steps, self.training.lr_schedule, self.warmup_steps)
                for lr in self.base_lrs]
        lr, wd = base[chosen] * factor.item(), b.item()

        # (2) training gradient of the sampled architecture
        loss, logits, grads = self._training_gradients(x, y, arch_w, active)
        if self.options.w_prime == "updated":  # Algorithm 1's order: the step first, W' one step past it
            self._weight_step(grads, chosen, lr, wd)
            grads = self._training_gradients(x, y, arch_w, active)[2]
        parts = [rule.parts(self.weights, grads) for rule in self.rules]

        # (3) encoding step through W' = W - sum_o P_o a_o (u_o + b v_o)
        coefficients = [opt_p[o] * base[o] * factor for o in range(len(self.rules))]
        updated = {}
        for k, (n, w) in enumerate(zip(self.names, self.weights)):
            step = sum(c * (u[k] + b * v[k]) for c, (u, v) in zip(coefficients, parts))
            updated[n] = w.detach() - step
        val_logits = functional_call(self.net, updated, (xv, arch_w, active))
        val_loss = F.cross_entropy(val_logits, yv)
        self.encoding_optimizer.zero_grad(set_to_none=True)
        val_loss.backward()
        encodings = [e for e in self.enc.parameters() if e.grad is not None]
        _, encoding_grads = self.synced(val_loss, [e.grad for e in encodings], "validation loss")
        for e, g in zip(encodings, encoding_grads):
            e.grad = g
        if self.steps >= self.encoding_warmup_steps:  # until then every path trains under uniform encodings
            set_lr(self.encoding_optimizer, scheduled_lr(self.options.encoding_lr, self.steps, self.total_steps,
                                                         self.options.encoding_lr_schedule))
            self.encoding_optimizer.step()

        # (4) the sampled optimizer's step from W (the forward value of W'), unless it came first
        if self.options.w_prime == "current":
            self._weight_step(grads, chosen, lr, wd, parts[chosen])

        self.lr_factors.append(self._derived_hparams()[0])  # Eq. 10 with the encodings just updated
        self.steps += 1
        metrics = {
            "train_loss": loss.item(), "train_acc": (logits.argmax(1) == y).float().mean().item(),
            "val_loss": val_loss.item(), "val_acc": (val_logits.argmax(1) == yv).float().mean().item(),
            "sampled_lr": lr, "sampled_wd": wd, "tau": tau,
            **{f"{name}_entropy": entropy(self.enc[name]).item() for name in HP_ENCODINGS if name in self.enc},
        }
        if self.arch_names:
            metrics["arch_entropy"] = sum(entropy(self.enc[n]).item() for n in self.arch_names) / len(self.arch_names)
        return metrics

    # -- derivation -------------------------------------------------------------
    @torch.no_grad()
    def _derived_hparams(self) -> tuple[float, float, int]:
        """Eq. 10: (lr as a multiple of the default, weight decay, optimizer index); softmax-weighted, no noise."""
        if not self.options.search_hparams:
            return 1.0, self.training.weight_decay, 0
        lr_factor = (self.enc["lr"].softmax(-1) * self.lr_mult).sum().item()
        optimizer = int(self.enc["optimizer"].argmax()) if "optimizer" in self.enc else 0
        return lr_factor, (self.enc["wd"].softmax(-1) * self.wd_basis).sum().item(), optimizer

    def derive(self) -> SearchResult:
        if self.fixed is not None:
            genotype = self.fixed
        else:
            # From probabilities, as every relaxation derives: the DARTS rule compares edges by their
            # strongest op's probability, which logits (shift-invariant per row) do not rank alike.
            genotype = self.space.derive(self.selected_weights())
        lr_factor, wd, optimizer = self._derived_hparams()
        base, schedule = self.base_lrs[optimizer], self.training.lr_schedule
        # Derived before its planned end (a time budget stopped it), the schedule keeps its planned
        # length: the steps not run take the factor derived now, so a retraining replays an lr that
        # decays to the end, not one cut off near its peak.
        factors = self.lr_factors + [lr_factor] * (self.total_steps - len(self.lr_factors))
        lrs = [scheduled_lr(base, t, self.total_steps, schedule, self.warmup_steps) * f
               for t, f in enumerate(factors)]
        return SearchResult(genotype, {"lr": lrs, "lr_factor": lr_factor, "weight_decay": wd,
                                       "optimizer": self.options.optimizers[optimizer]})

    @torch.no_grad()
    def probabilities(self) -> dict[str, torch.Tensor]:
        return {name: self.enc[name].softmax(-1) for name in self.arch_names}

    def encodings(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().softmax(-1).cpu() for name, t in self.enc.items()}

    # -- what perturbation selection uses (raysearch.algorithms.selection.Selectable) ------------
    def arch_encodings(self) -> dict[str, torch.Tensor]:
        return {name: self.enc[name] for name in self.arch_names}

    def relaxed_arch(self) -> dict[str, torch.Tensor]:
        return self._sample_arch()[0]

    def tuning_lr(self) -> tuple[float, float]:
        lr_factor, _, optimizer = self._derived_hparams()
        return self.base_lrs[optimizer] * lr_factor, 0.0

    def start_tuning(self) -> None:
        self.rules = [build_rule(name, self.weights, self.training) for name in self.options.optimizers]
        set_lr(self.encoding_optimizer, self.options.encoding_lr)  # not where a cosine schedule left it (~0)

    def mixture_weight_step(self, batch, weights, lr: float) -> dict[str, float]:
        x, y = batch
        loss, logits, grads = self._training_gradients(x, y, weights, None)  # every op computed, mixed
        _, wd, optimizer = self._derived_hparams()
        self._weight_step(grads, optimizer, lr, wd)
        return {"train_loss": loss.item(), "train_acc": (logits.argmax(1) == y).float().mean().item()}

    def encoding_labels(self) -> dict[str, tuple]:
        labels = {"lr": (None, [f"x{m:g}" for m in self.options.lr_multipliers]),
                  "wd": (None, [f"x{m:g}" for m in self.options.wd_multipliers]),
                  "optimizer": (None, list(self.options.optimizers))}
        return {name: labels[name] if name in labels else tuple(map(list, self.space.encodings[name]))
                for name in self.enc}

    @torch.no_grad()
    def derived_logits(self, x):
        return derived_forward(self.net, self.space, self.derive().genotype, x)

    # -- checkpointing -----------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(), "rules": [rule.state_dict() for rule in self.rules],
            "encodings": self.enc.state_dict(), "optimizer": self.encoding_optimizer.state_dict(),
            "generator": self.generator.get_state(), "steps": self.steps, "lr_factors": list(self.lr_factors),
            "selection": self.selection_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.enc.load_state_dict(state["encodings"])
        for rule, saved in zip(self.rules, state["rules"]):
            rule.load_state_dict(saved)
        self.encoding_optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.steps, self.lr_factors = int(state["steps"]), list(state["lr_factors"])
        self.load_selection_state(state["selection"])
