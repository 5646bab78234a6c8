"""DARTS (Liu et al., 2019): softmax mixing, encodings by first- or second-order validation gradients.

Second order: a virtual SGD step w' = w - xi (momentum buf + grad_w L_train +
wd w), xi the current weight lr; the encoding gradient is
grad_alpha L_val(w') - xi H with H = grad^2_{alpha,w} L_train v, v = grad_w' L_val,
by a central finite difference around w: eps = fd_scale / ||v|| (DARTS: 0.01),
H = (grad_alpha L_train(w + eps v) - grad_alpha L_train(w - eps v)) / (2 eps),
on the same training batch. The virtual step follows the DARTS code: plain
momentum (no Nesterov) and no gradient clipping. With ReLU supernets the
weight move of norm 0.01 crosses kinks, so the difference can be several %
off the exact product (measured on a tiny NB201 supernet); it is exact to
1e-9 at fd_scale 1e-4 in float64 (tests/test_darts_algorithms.py). Known failure: on NB201 DARTS drifts
to all-skip cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from raysearch.algorithms.supernet import SupernetConfig, SupernetSearch, _metrics
from raysearch.schema import spec


@dataclass(frozen=True)
class DartsConfig(SupernetConfig):
    order: int = spec(1, choices=(1, 2))  # 1: first-order encoding gradient; 2: finite-difference unrolled
    fd_scale: float = spec(0.01, gt=0.0)  # second order: the finite difference moves the weights by this norm


class Darts(SupernetSearch):
    def encoding_gradients(self, train, val):
        if self.options.order == 1:
            return super().encoding_gradients(train, val)
        return self.unrolled_gradients(train, val)

    def _grads_alpha(self, params: dict, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, y = batch
        weights, active = self.mix()
        loss = F.cross_entropy(functional_call(self.net, params, (x, weights, active)), y)
        return loss, list(torch.autograd.grad(loss, list(self.alpha.values())))

    def unrolled_gradients(self, train, val):
        names = [n for n, _ in self.net.named_parameters()]
        w = [p.detach() for p in self.net.parameters()]
        xi, o = self.weight_lr(), self.options
        # the virtual step, with the momentum the real step would use
        weights, active = self.mix()
        train_loss = F.cross_entropy(self.net(train[0], {k: v.detach() for k, v in weights.items()}, active), train[1])
        grads = torch.autograd.grad(train_loss, list(self.net.parameters()), allow_unused=True,
                                    materialize_grads=True)
        _, grads = self.synced(train_loss, grads, "training loss")  # the virtual step is the same on every rank
        state = self.weight_optimizer.state
        unrolled = {}
        for name, p, wp, g in zip(names, self.net.parameters(), w, grads):
            buf = state.get(p, {}).get("momentum_buffer")
            moment = o.weight_momentum * buf if buf is not None else torch.zeros_like(wp)
            unrolled[name] = (wp - xi * (moment + g + o.weight_decay * wp)).requires_grad_()
        # grad_alpha L_val(w') and v = grad_w' L_val
        x, y = val
        val_logits = functional_call(self.net, unrolled, (x, *self.mix()))
        val_loss = F.cross_entropy(val_logits, y)
        *direct, = torch.autograd.grad(val_loss, list(self.alpha.values()), retain_graph=True)
        v = torch.autograd.grad(val_loss, list(unrolled.values()), allow_unused=True, materialize_grads=True)
        _, v = self.synced(val_loss, v, "validation loss")  # eps and w+- are the same on every rank
        # H v by a central finite difference around w; the result is linear in each rank's
        # gradients, so one average of it is the global encoding gradient.
        eps = self.options.fd_scale / torch.sqrt(sum((g * g).sum() for g in v))
        loss_plus, plus = self._grads_alpha({n: wp + eps * g for n, wp, g in zip(names, w, v)}, train)
        loss_minus, minus = self._grads_alpha({n: wp - eps * g for n, wp, g in zip(names, w, v)}, train)
        local = [d - xi * (gp - gm) / (2 * eps) for d, gp, gm in zip(direct, plus, minus)]
        _, combined = self.synced(loss_plus + loss_minus, local, "training loss at w +- eps v")
        return dict(zip(self.alpha.keys(), combined)), _metrics("val", val_loss, val_logits, y)
