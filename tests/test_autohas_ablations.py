"""AutoHAS's categorical optimizer HP and its HP-only / architecture-only ablations."""

import copy

import pytest
import torch
from torch.func import functional_call

from raysearch.algorithms.autohas import AutoHAS, AutoHASConfig
from raysearch.config import ConfigError, TrainingConfig
from raysearch.relax import gumbel_hard
from raysearch.search import SearchLoop
from tests.conftest import tiny_config
from tests.toys import ToySpace, quadratic_batch

DIM = 8
ONES = {"arch": torch.ones(1, 1)}


def _toy(options, **training):
    training = TrainingConfig(**{"lr_schedule": "constant", "grad_clip": None, **training})
    return AutoHAS(ToySpace(DIM), options, training, total_steps=10**6, seed=0)


def _batches(gen, n):
    return [quadratic_batch(DIM, 2.0, torch.randn(DIM, generator=gen), gen) for _ in range(n)]


def test_the_adam_step_is_torch_adamw():
    options = AutoHASConfig(lr_multipliers=(1.0,), wd_multipliers=(1.0,), optimizers=("adam",), adam_lr=0.05)
    algo = _toy(options, weight_decay=0.1)
    reference = copy.deepcopy(algo.net)
    adamw = torch.optim.AdamW(reference.parameters(), lr=0.05, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    for train, val in zip(_batches(gen, 4), _batches(gen, 4)):
        algo.step(train, val)
        adamw.zero_grad()
        torch.nn.functional.cross_entropy(reference(train[0], ONES), train[1]).backward()
        adamw.step()
        assert torch.allclose(algo.net.w, reference.w, atol=1e-6)


def test_optimizer_encoding_gradients_equal_those_through_per_basis_weight_copies():
    """W' = sum_o P_o a_o (u_o + b v_o) gives the gradients of sum_oij P_o P_i P_j f_{o,B_ij}(W)."""
    options = AutoHASConfig(lr_multipliers=(0.5, 2.0), wd_multipliers=(1.0, 3.0), optimizers=("sgd", "adam"),
                            adam_lr=0.02, encoding_lr=0.1)
    algo = _toy(options, lr=0.1, weight_decay=0.05, momentum=0.9, nesterov=False)
    gen = torch.Generator().manual_seed(0)
    for train, val in zip(_batches(gen, 3), _batches(gen, 3)):
        algo.step(train, val)
    w0 = algo.net.w.detach().clone()
    buf0 = algo.rules[0].buffers[0].clone()
    m0, s0, t0 = algo.rules[1].first[0].clone(), algo.rules[1].second[0].clone(), algo.rules[1].t
    logits = {k: algo.enc[k].detach().clone().requires_grad_() for k in ("lr", "wd", "optimizer")}
    sampler = torch.Generator()
    sampler.set_state(algo.generator.get_state())
    train, val = _batches(gen, 2)
    algo.step(train, val)

    gumbel_hard(algo.enc["arch"], options.tau, sampler)  # the same draws in the same order
    p = {k: gumbel_hard(logits[k], options.tau, sampler)[0] for k in ("lr", "wd", "optimizer")}
    w = w0.clone().requires_grad_()
    g = torch.autograd.grad(torch.nn.functional.cross_entropy(functional_call(algo.net, {"w": w}, (train[0], ONES)),
                                                              train[1]), w)[0]
    m, s, t = 0.9 * m0 + 0.1 * g, 0.999 * s0 + 0.001 * g * g, t0 + 1
    adam_dir = (m / (1 - 0.9**t)) / ((s / (1 - 0.999**t)).sqrt() + 1e-8)
    copies = []
    for o, base in enumerate((0.1, 0.02)):
        for i, lr_mult in enumerate(options.lr_multipliers):
            for j, wd_mult in enumerate(options.wd_multipliers):
                wd = 0.05 * wd_mult
                step = 0.9 * buf0 + g + wd * w0 if o == 0 else adam_dir + wd * w0
                copies.append(p["optimizer"][o] * p["lr"][i] * p["wd"][j] * (w0 - base * lr_mult * step))
    loss = torch.nn.functional.cross_entropy(functional_call(algo.net, {"w": torch.stack(copies).sum(0)},
                                                             (val[0], ONES)), val[1])
    loss.backward()
    for k in ("lr", "wd", "optimizer"):
        assert torch.allclose(algo.enc[k].grad, logits[k].grad, rtol=1e-4, atol=1e-7), k
        assert logits[k].grad.abs().sum() > 0


def test_derived_optimizer_and_its_lr_list(digits):
    config = tiny_config(search={"optimizers": ["sgd", "adam"], "adam_lr": 0.002, "epochs": 1})
    loop = SearchLoop.from_config(config, digits)
    loop.run_epoch()
    hparams = loop.algorithm.derive().hparams
    assert hparams["optimizer"] in ("sgd", "adam") and len(hparams["lr"]) == loop.algorithm.total_steps
    base = 0.1 if hparams["optimizer"] == "sgd" else 0.002
    assert hparams["lr"][0] == pytest.approx(base * loop.algorithm.lr_factors[0])
    assert set(loop.algorithm.encodings()) == {"cell", "lr", "wd", "optimizer"}


def test_architecture_only_ablation_keeps_the_training_hparams(digits):
    loop = SearchLoop.from_config(tiny_config(search={"search_hparams": False, "epochs": 1}), digits)
    loop.run_epoch()
    algo = loop.algorithm
    assert set(algo.enc) == {"cell"}
    hparams = algo.derive().hparams
    assert hparams["weight_decay"] == 5e-4 and hparams["optimizer"] == "sgd"
    assert hparams["lr"][0] == pytest.approx(0.1) and hparams["lr"][-1] < 0.1  # the cosine schedule itself


def test_hparam_only_ablation_searches_the_given_cell(digits):
    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    loop = SearchLoop.from_config(tiny_config(search={"search_arch": False, "genotype": cell, "epochs": 1}), digits)
    before = loop.algorithm.encodings()
    loop.run_epoch()
    algo = loop.algorithm
    assert set(algo.enc) == {"lr", "wd"} and algo.derive().genotype.to_string() == cell
    assert not torch.equal(before["lr"], algo.encodings()["lr"])


@pytest.mark.parametrize("search, fragment", [
    ({"search_arch": False}, "search.genotype"),
    ({"genotype": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"}, "search.genotype"),
    ({"search_arch": False, "search_hparams": False, "genotype": "x"}, "nothing to search"),
    ({"optimizers": ["sgd", "rmsprop"]}, "search.optimizers"),
])
def test_ablation_options_are_checked(search, fragment):
    with pytest.raises(ConfigError, match=fragment):
        tiny_config(search=search)
