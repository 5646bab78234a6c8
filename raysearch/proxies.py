"""Zero-cost proxies: scores of an untrained network from one minibatch (plain PyTorch).

Each proxy is `(net, x, y) -> float`, higher is better (the conventions of the
papers: Tanaka et al. 2020 synflow; Abdelfattah et al. 2021 grad_norm, snip;
Mellor et al. 2021 jacob_cov, naswot); #params and FLOPs are the baselines
they must beat. Every proxy scores a deep copy on `x.device`, so the caller's
network (parameters, grads, BN statistics, train/eval mode) is left unchanged.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from raysearch.registry import Registry

_WEIGHTED = (nn.Conv2d, nn.Linear)


def _copy(net: nn.Module, x: torch.Tensor, train: bool) -> nn.Module:
    net = copy.deepcopy(net).to(x.device).train(train)
    net.zero_grad(set_to_none=True)  # deepcopy also copies any .grad the caller holds
    return net


def _weights(net: nn.Module):
    return [m.weight for m in net.modules() if isinstance(m, _WEIGHTED) and m.weight.grad is not None]


def _ce_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    # Train mode: BN normalises with batch statistics, as it would in the first
    # training step (the fresh running statistics say nothing about the data).
    net = _copy(net, x, train=True)
    with torch.enable_grad():
        F.cross_entropy(net(x), y.to(x.device)).backward()
    return _weights(net)


def _without_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm):
        return nn.Identity()
    for name, child in module.named_children():
        setattr(module, name, _without_bn(child))
    return module


def synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """sum |theta * dR/dtheta| of the |theta| network on an all-ones input, R = sum(output)."""
    # BN off: it would rescale the positive signal per channel and break the
    # product-of-|weights| structure; float64 because the products overflow float32;
    # eval so that dropout-like layers cannot make the score random.
    net = _without_bn(_copy(net, x, train=False)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    with torch.enable_grad():
        net(ones).sum().backward()
    return float(sum((w.detach() * w.grad).abs().sum() for w in _weights(net)))


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """sum over conv/linear layers of ||grad_W CE||_2."""
    return float(sum(w.grad.norm() for w in _ce_grads(net, x, y)))


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """sum |W * grad_W CE| over conv/linear weights."""
    return float(sum((w.detach() * w.grad).abs().sum() for w in _ce_grads(net, x, y)))


def jacob_cov(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """-sum(log(v + k) + 1/(v + k)) over the eigenvalues v of the per-sample input-Jacobian correlations."""
    net = _copy(net, x, train=True)  # batch-statistics BN, as in the paper's code
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = net(x)
        out.backward(torch.ones_like(out))
    jac = x.grad.reshape(len(x), -1).double().cpu().numpy()
    if (jac.std(axis=1) == 0).any():
        # A constant Jacobian row (e.g. output cut off from the input) has no
        # correlation; such a network is the worst possible, not undefined.
        return float("-inf")
    v = np.linalg.eigvalsh(np.corrcoef(jac))
    k = 1e-5
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def naswot(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """log|det K|, K[i, j] = number of ReLU units on which samples i and j agree (both on or both off)."""
    net = _copy(net, x, train=True)  # batch-statistics BN: running stats are untrained
    codes = []
    # Pre-hooks read the input before the ReLU runs, so an in-place ReLU (or a
    # later in-place op on the same storage) cannot change what is recorded.
    hook = lambda module, inputs: codes.append((inputs[0] > 0).flatten(1).double())  # noqa: E731
    for m in net.modules():  # hooks on the throwaway copy: nothing to remove afterwards
        if isinstance(m, nn.ReLU):
            m.register_forward_pre_hook(hook)
    with torch.no_grad():
        net(x)
    c = torch.cat(codes, dim=1) if codes else x.new_zeros((len(x), 0), dtype=torch.float64)
    K = c @ c.T + (1 - c) @ (1 - c).T
    return float(torch.linalg.slogdet(K).logabsdet)


def num_params(net: nn.Module, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> float:
    """Number of trainable parameters (reads only, so no copy)."""
    return float(sum(p.numel() for p in net.parameters() if p.requires_grad))


def flops(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Multiply-accumulates per sample of the conv and linear layers in one forward pass of x."""
    net = _copy(net, x, train=False)  # MACs do not depend on the mode; eval skips BN stat updates
    total = [0.0]

    def count(module, inputs, out):
        per_sample = out.numel() / out.shape[0]
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total[0] += per_sample * (module.in_channels / module.groups) * kh * kw
        else:  # out elements x in_features: in_features * out_features for (batch, features) input
            total[0] += per_sample * module.in_features

    for m in net.modules():
        if isinstance(m, _WEIGHTED):
            m.register_forward_hook(count)
    with torch.no_grad():
        net(x)
    return total[0]


PROXIES = Registry("proxy", {
    "synflow": synflow, "grad_norm": grad_norm, "snip": snip, "jacob_cov": jacob_cov,
    "naswot": naswot, "num_params": num_params, "flops": flops,
})
