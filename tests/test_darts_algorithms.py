"""Algorithm-specific facts of the DARTS family (the shared contract is in test_algorithms.py)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from raysearch.algorithms import ALGORITHMS
from raysearch.algorithms.darts import Darts, DartsConfig
from raysearch.algorithms.supernet import SupernetConfig
from raysearch.config import TrainingConfig
from raysearch.spaces import DataShape
from tests.conftest import tiny_space


def _build(name, space_name="nb201", total_steps=8, steps_per_epoch=2, **options):
    entry = ALGORITHMS[name]
    return entry.build(tiny_space(space_name, DataShape(1, 8, 10)), entry.config_type(**options), TrainingConfig(),
                       total_steps=total_steps, seed=0, steps_per_epoch=steps_per_epoch)


def _batch(digits, i, size=16):
    x, y = digits.train
    return x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]


def _exact_unrolled_gradients(algo, train, val):
    """grad_alpha L_val(w'(alpha), alpha) through the whole virtual step, by autograd (create_graph)."""
    o, xi = algo.options, algo.weight_lr()
    names = [n for n, _ in algo.net.named_parameters()]
    params = list(algo.net.parameters())
    loss = F.cross_entropy(algo.net(train[0], algo.mix()[0]), train[1])
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True, materialize_grads=True)
    unrolled = {}
    for name, p, g in zip(names, params, grads):
        moment = o.weight_momentum * algo.weight_optimizer.state[p]["momentum_buffer"]
        unrolled[name] = p - xi * (moment + g + o.weight_decay * p)  # depends on alpha through g
    val_loss = F.cross_entropy(functional_call(algo.net, unrolled, (val[0], algo.mix()[0])), val[1])
    first_order = F.cross_entropy(functional_call(algo.net, {n: u.detach() for n, u in unrolled.items()},
                                                  (val[0], algo.mix()[0])), val[1])
    exact = torch.autograd.grad(val_loss, list(algo.alpha.values()))
    return dict(zip(algo.alpha.keys(), exact)), dict(zip(algo.alpha.keys(), torch.autograd.grad(
        first_order, list(algo.alpha.values()))))


def _relative_errors(algo, digits):
    algo.step(_batch(digits, 0), _batch(digits, 1))  # a non-zero momentum buffer
    train, val = _batch(digits, 2), _batch(digits, 3)
    approx, _ = algo.unrolled_gradients(train, val)
    exact, first_order = _exact_unrolled_gradients(algo, train, val)
    for key, e in exact.items():
        assert (e - first_order[key]).norm() > 1e-2 * e.norm(), "the second-order term is negligible: a weak test"
    return [((approx[k] - e).norm() / e.norm()).item() for k, e in exact.items()]


def test_second_order_hypergradient_matches_exact_autograd_on_a_smooth_tiny_model(digits):
    """DARTS's finite difference (eps = 0.01 / ||v||) against the exact Hessian-vector product."""
    from tests.toys import SmoothSpace

    algo = Darts(SmoothSpace(), DartsConfig(order=2, arch_init_std=0.5, weight_lr=0.5), TrainingConfig(),
                 total_steps=8, seed=0)
    assert max(_relative_errors(algo, digits)) < 1e-2


def test_second_order_hypergradient_is_exact_in_the_limit_on_a_relu_supernet(digits):
    """On a real (ReLU) supernet a smaller difference step in float64 recovers the exact product."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        algo = _build("darts", order=2, arch_init_std=0.5, fd_scale=1e-4)
        double = dataclasses.replace(digits, train=(digits.train[0].double(), digits.train[1]))
        assert max(_relative_errors(algo, double)) < 1e-6
    finally:
        torch.set_default_dtype(default)


def test_second_order_darts_runs_as_a_search(digits):
    algo = _build("darts", order=2)
    before = algo.encodings()["cell"].clone()
    algo.step(_batch(digits, 0), _batch(digits, 1))
    assert not torch.equal(before, algo.encodings()["cell"])


def test_gdas_tau_falls_linearly_per_epoch_from_10_to_0_1(digits):
    algo = _build("gdas", total_steps=8, steps_per_epoch=2)  # 4 epochs
    taus = []
    for i in range(8):
        taus.append(algo.step(_batch(digits, 2 * i, 8), _batch(digits, 2 * i + 1, 8))["tau"])
    assert taus[::2] == pytest.approx([10.0, 10 - 9.9 / 3, 10 - 2 * 9.9 / 3, 0.1])
    assert taus[0] == taus[1]


def test_drnas_draws_dirichlet_weights_with_pathwise_gradients():
    algo = _build("drnas", arch_init_std=0.0)
    weights, active = algo.mix()
    w = weights["cell"]
    assert active is None and torch.allclose(w.sum(-1), torch.ones(6)) and (w > 0).all()
    assert not torch.allclose(w, torch.full_like(w, 0.2))  # a draw, not the mean
    (w * torch.arange(5.0)).sum().backward()
    assert algo.alpha["cell"].grad.abs().sum() > 0
    assert torch.allclose(algo.probabilities()["cell"], torch.full((6, 5), 0.2))  # Dir(1)'s mean


def test_drnas_kl_term_pulls_toward_dir_1(digits):
    from raysearch.relax import dirichlet_kl_to_uniform

    beta = torch.zeros(6, 5)
    assert dirichlet_kl_to_uniform(beta).item() == pytest.approx(0.0, abs=1e-6)
    assert dirichlet_kl_to_uniform(beta + torch.randn(6, 5)).item() > 0


def test_sdarts_perturbs_only_the_weight_step_and_stays_on_the_simplex(digits):
    algo = _build("sdarts_rs", epsilon=0.3, epsilon_min=0.3, arch_init_std=0.0, noise_projection="euclidean")
    perturbed = algo.weight_mix()[0]["cell"]
    clean = algo.mix()[0]["cell"]
    assert torch.allclose(clean, torch.full((6, 5), 0.2))
    assert not torch.allclose(perturbed, clean)
    assert torch.allclose(perturbed.sum(-1), torch.ones(6)) and (perturbed >= 0).all()
    assert (perturbed - clean).abs().max() <= 0.3 + 1e-6 or (perturbed == 0).any()


def test_sdarts_noise_is_clipped_and_renormalised_as_the_reference_does():
    from raysearch.relax import clip_to_simplex, project_simplex

    noisy = torch.tensor([[0.5, 0.3, -0.1], [1.4, 0.2, 0.2], [-0.2, -0.1, -0.3]])
    clipped = clip_to_simplex(noisy)
    torch.testing.assert_close(clipped, torch.tensor([[0.625, 0.375, 0.0], [1 / 1.4, 0.2 / 1.4, 0.2 / 1.4],
                                                      [0.0, 1.0, 0.0]]))
    assert not torch.allclose(project_simplex(noisy), clipped)  # the Euclidean projection differs
    reference, euclidean = (_build("sdarts_rs", epsilon=0.3, epsilon_min=0.3, noise_projection=p)
                            for p in ("clip", "euclidean"))
    assert reference.options.noise_projection == "clip"  # the default
    a, b = reference.weight_mix()[0]["cell"], euclidean.weight_mix()[0]["cell"]  # the same noise draws
    assert not torch.allclose(a, b) and torch.allclose(a.sum(-1), torch.ones(6))


def test_sdarts_epsilon_ramps_per_epoch():
    algo = _build("sdarts_rs", total_steps=8, steps_per_epoch=2)
    values = []
    for steps in range(0, 8, 2):
        algo.steps = steps
        values.append(algo.epsilon())
    assert values == pytest.approx([0.03, 0.03 + 0.27 / 4, 0.03 + 0.27 / 2, 0.03 + 0.27 * 3 / 4])


def test_simplex_projection_is_the_nearest_point():
    from raysearch.relax import project_simplex

    v = torch.tensor([[0.5, 0.5, 0.5], [2.0, -1.0, 0.0], [0.2, 0.3, 0.5]])
    p = project_simplex(v)
    assert torch.allclose(p, torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]))


@pytest.mark.parametrize("space_name", ["nb201", "darts", "mbconv"])
def test_gdas_computes_exactly_one_op_per_edge_in_each_forward(space_name, digits):
    algo = _build("gdas", space_name)
    calls = {}
    for enc, row, ops in algo.net.edges():
        for j, op in enumerate(ops):
            op.register_forward_hook(lambda m, i, o, key=(enc, row, j): calls.__setitem__(key, calls.get(key, 0) + 1))
    algo.step(_batch(digits, 0, 8), _batch(digits, 1, 8))  # a weight forward and an encoding forward
    per_edge = {}
    for (enc, row, _), count in calls.items():
        per_edge[enc, row] = per_edge.get((enc, row), 0) + count
    assert len(per_edge) <= len(list(algo.net.edges()))
    edges_per_row = {}
    for enc, row, _ in algo.net.edges():
        edges_per_row[enc, row] = edges_per_row.get((enc, row), 0) + 1
    assert all(per_edge.get(key, 0) == 2 * n for key, n in edges_per_row.items())


def test_gdas_weights_of_unsampled_ops_still_decay_and_follow_their_momentum(digits):
    """As AutoHAS, and as GDAS's reference did (its PyTorch zeroed gradients rather than dropping them):
    every weight takes the optimizer's step every step, whether its op was sampled or not."""
    algo = _build("gdas")
    train = _batch(digits, 0)
    algo.weight_step(train)
    mix, active = algo.weight_mix()
    before = {n: p.detach().clone() for n, p in algo.net.named_parameters()}
    loss, _ = algo._loss(train, mix, active)
    sampled = {n for (n, p), g in zip(algo.net.named_parameters(),
                                      torch.autograd.grad(loss, list(algo.net.parameters()), allow_unused=True))
               if g is not None}
    algo.weight_step(train, (mix, active))  # the sample whose gradients were just looked at
    unsampled = [n for n in before if n not in sampled]
    assert unsampled, "every op was sampled: nothing to check"
    moved = [n for n in unsampled if not torch.equal(before[n], dict(algo.net.named_parameters())[n].detach())]
    assert moved == unsampled


SUPERNET_SEARCHES = [name for name, entry in ALGORITHMS.items() if issubclass(entry.config_type, SupernetConfig)]


@pytest.mark.parametrize("name", SUPERNET_SEARCHES)
def test_encoding_lr_warm_up_ramps_the_encodings_step_linearly(name, digits):
    """With `arch_warmup_epochs` the encodings' Adam lr is arch_lr x (t + 1) / warm-up steps at step t, then
    arch_lr; Adam's first step moves every encoding by about its lr, so a warmed-up first step is ~1/4 as long."""
    lr, warm = 0.01, 2  # 2 epochs of 2 steps
    first_moves = {}
    for warmup in (0, warm):
        algo = _build(name, total_steps=8, steps_per_epoch=2, arch_lr=lr, arch_warmup_epochs=warmup)
        lrs = []
        for i in range(6):
            before = {n: a.detach().clone() for n, a in algo.arch_encodings().items()}
            algo.step(_batch(digits, 2 * i, 8), _batch(digits, 2 * i + 1, 8))
            lrs.append(algo.encoding_optimizer.param_groups[0]["lr"])
            if i == 0:
                first_moves[warmup] = max((a.detach() - before[n]).abs().max().item()
                                          for n, a in algo.arch_encodings().items())
        expected = [lr * (i + 1) / (2 * warmup) for i in range(2 * warmup)] + [lr] * (6 - 2 * warmup)
        assert lrs == pytest.approx(expected)
    assert first_moves[0] == pytest.approx(lr, rel=0.05)
    assert first_moves[warm] == pytest.approx(lr / 4, rel=0.05)


@pytest.mark.parametrize("name", [*SUPERNET_SEARCHES, "autohas"])
def test_encoding_lr_cosine_schedule_decays_to_zero_over_the_search(name, digits):
    lr, total = 0.01, 8
    prefix = "encoding" if name == "autohas" else "arch"  # AutoHAS's encodings hold its hyper-parameters too
    algo = _build(name, total_steps=total, steps_per_epoch=2, **{f"{prefix}_lr": lr, f"{prefix}_lr_schedule": "cosine"})
    lrs = []
    for i in range(total):
        algo.step(_batch(digits, 2 * i, 8), _batch(digits, 2 * i + 1, 8))
        lrs.append(algo.encoding_optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([lr * 0.5 * (1 + math.cos(math.pi * t / total)) for t in range(total)])
