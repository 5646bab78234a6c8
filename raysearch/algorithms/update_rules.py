"""Weight update rules written as W <- W - lr (u + wd v), the form AutoHAS mixes over basis values.

Both rules are linear in lr and in lr x wd for a fixed gradient and state, so
a mixture of steps over (optimizer, lr, wd) basis values is one expression
in u, v and the mixing coefficients, with no per-basis weight copy. Each
rule's state follows the gradient at every step, whichever rule is sampled,
so a switch of optimizer continues from warm statistics.
"""

from __future__ import annotations

import torch

OPTIMIZERS = ("sgd", "adam")


class SGDRule:
    """torch.optim.SGD with momentum (and Nesterov) and coupled (L2) weight decay."""

    def __init__(self, weights, momentum: float, nesterov: bool):
        self.m, self.nesterov = momentum, nesterov
        self.buffers = [torch.zeros_like(w) for w in weights]

    def parts(self, weights, grads):
        u, v = [], []
        for w, g, buf in zip(weights, grads, self.buffers):
            if self.nesterov:  # step = (1+m)(g + wd w) + m^2 buf
                u.append((1 + self.m) * g + self.m * self.m * buf)
                v.append((1 + self.m) * w.detach())
            else:  # step = m buf + g + wd w
                u.append(self.m * buf + g)
                v.append(w.detach())
        return u, v

    @torch.no_grad()
    def advance(self, weights, grads, weight_decay: float) -> None:
        for w, g, buf in zip(weights, grads, self.buffers):
            buf.mul_(self.m).add_(g + weight_decay * w)

    def state_dict(self) -> dict:
        return {"buffers": [b.clone() for b in self.buffers]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for buf, saved in zip(self.buffers, state["buffers"]):
            buf.copy_(saved)


class AdamRule:
    """torch.optim.AdamW: bias-corrected Adam direction, decoupled weight decay (linear in wd)."""

    def __init__(self, weights, betas=(0.9, 0.999), eps: float = 1e-8):
        self.betas, self.eps, self.t = betas, eps, 0
        self.first = [torch.zeros_like(w) for w in weights]
        self.second = [torch.zeros_like(w) for w in weights]

    def _moments(self, grads):
        b1, b2 = self.betas
        for m, s, g in zip(self.first, self.second, grads):
            yield b1 * m + (1 - b1) * g, b2 * s + (1 - b2) * g * g

    def parts(self, weights, grads):
        b1, b2 = self.betas
        t = self.t + 1
        u = [(m / (1 - b1**t)) / ((s / (1 - b2**t)).sqrt() + self.eps) for m, s in self._moments(grads)]
        return u, [w.detach() for w in weights]

    @torch.no_grad()
    def advance(self, weights, grads, weight_decay: float) -> None:
        for (m_new, s_new), m, s in zip(list(self._moments(grads)), self.first, self.second):
            m.copy_(m_new)
            s.copy_(s_new)
        self.t += 1

    def state_dict(self) -> dict:
        return {"first": [m.clone() for m in self.first], "second": [s.clone() for s in self.second], "t": self.t}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for mine, saved in zip(self.first + self.second, state["first"] + state["second"]):
            mine.copy_(saved)
        self.t = int(state["t"])


def build_rule(name: str, weights, training):
    if name == "sgd":
        return SGDRule(weights, training.momentum, training.nesterov)
    return AdamRule(weights)
