import copy
import io

import pytest
import torch

from raysearch.algorithms.autohas import AutoHAS, AutoHASConfig
from raysearch.config import TrainingConfig
from raysearch.memory import saved_tensor_bytes
from raysearch.search import SearchLoop
from raysearch.config import from_dict
from tests.conftest import TINY, tiny_config
from tests.toys import ToySpace, quadratic_batch

DIM = 8


def _toy(options=AutoHASConfig(), total_steps=10**6, **training):
    training = TrainingConfig(**{"lr_schedule": "constant", "momentum": 0.0, "grad_clip": None, **training})
    return AutoHAS(ToySpace(DIM), options, training, total_steps=total_steps, seed=0)


def test_lr_encoding_converges_to_the_one_basis_value_that_trains_well():
    """One-step problems with curvature h: only lr = 1/h lands on the optimum.

    Weights restart at 0 every step, so each step is the same problem and a
    learning rate above 2/h overshoots. The basis is 1/h times the paper's
    multipliers, so the good value is the multiplier 1.0; the uniform start has
    Eq. 10 value 3.07 (mean of the multipliers).
    """
    h = 4.0
    algo = _toy(AutoHASConfig(encoding_lr=0.05), total_steps=600, lr=1.0 / h, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    start = algo.derive().hparams["lr_factor"]
    for _ in range(600):
        target = torch.randn(DIM, generator=gen)
        with torch.no_grad():
            algo.net.w.zero_()
        algo.step(quadratic_batch(DIM, h, target, gen), quadratic_batch(DIM, h, target, gen))
    factor = algo.derive().hparams["lr_factor"]
    assert start == pytest.approx(sum(AutoHASConfig().lr_multipliers) / 9)
    assert factor == pytest.approx(1.0, abs=0.15), factor
    # Eq. 10's learning rate is recorded at every step for retraining to replay.
    assert len(algo.derive().hparams["lr"]) == 600
    assert algo.derive().hparams["lr"][-1] == pytest.approx(factor / h)


@pytest.mark.parametrize("nesterov", [False, True])
def test_weight_step_is_torch_sgd_and_validation_sees_the_updated_weights(nesterov):
    """The manual in-place step equals torch.optim.SGD, and W' equals the weights after the step."""
    options = AutoHASConfig(lr_multipliers=(1.0,), wd_multipliers=(1.0,))
    algo = _toy(options, lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=nesterov)
    reference = copy.deepcopy(algo.net)
    sgd = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=nesterov)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        train = quadratic_batch(DIM, 1.0, torch.randn(DIM, generator=gen), gen)
        val = quadratic_batch(DIM, 1.0, torch.randn(DIM, generator=gen), gen)
        metrics = algo.step(train, val)
        sgd.zero_grad()
        ones = {"arch": torch.ones(1, 1)}
        torch.nn.functional.cross_entropy(reference(train[0], ones), train[1]).backward()
        sgd.step()
        assert torch.allclose(algo.net.w, reference.w, atol=1e-6)
        val_loss = torch.nn.functional.cross_entropy(reference(val[0], ones), val[1]).item()
        assert metrics["val_loss"] == pytest.approx(val_loss, rel=1e-5)


@pytest.mark.parametrize("nesterov", [False, True])
def test_algorithm_1_order_steps_first_and_validates_one_step_further(nesterov):
    """`w_prime: updated`: the weights take torch SGD's step first, and W' is the step after it (a second
    training gradient at the updated weights, on the same batch)."""
    options = AutoHASConfig(lr_multipliers=(1.0,), wd_multipliers=(1.0,), w_prime="updated")
    algo = _toy(options, lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=nesterov)
    reference = copy.deepcopy(algo.net)
    sgd = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=nesterov)
    gen = torch.Generator().manual_seed(0)
    ones = {"arch": torch.ones(1, 1)}
    for _ in range(3):
        train = quadratic_batch(DIM, 1.0, torch.randn(DIM, generator=gen), gen)
        val = quadratic_batch(DIM, 1.0, torch.randn(DIM, generator=gen), gen)
        metrics = algo.step(train, val)
        for _ in range(2):  # the step the weights take, then the look-ahead step W' is
            sgd.zero_grad()
            torch.nn.functional.cross_entropy(reference(train[0], ones), train[1]).backward()
            state = copy.deepcopy(sgd.state_dict())
            sgd.step()
            if _ == 0:
                assert torch.allclose(algo.net.w, reference.w, atol=1e-6)
                after = reference.w.detach().clone()
        val_loss = torch.nn.functional.cross_entropy(reference(val[0], ones), val[1]).item()
        assert metrics["val_loss"] == pytest.approx(val_loss, rel=1e-5)
        with torch.no_grad():
            reference.w.copy_(after)  # undo the look-ahead: its momentum too
        sgd.load_state_dict(state)
    assert AutoHASConfig().w_prime == "current"


@pytest.mark.parametrize("nesterov", [False, True])
def test_encoding_gradients_equal_those_through_explicit_per_basis_weight_copies(nesterov):
    """The linear W' = W - a u - a b v gives the gradients of W' = sum_ij P_i P_j f_{B_ij}(W)."""
    from torch.func import functional_call

    from raysearch.relax import gumbel_hard

    options = AutoHASConfig(lr_multipliers=(0.5, 1.0, 2.0), wd_multipliers=(0.5, 1.0, 3.0), encoding_lr=0.1)
    algo = _toy(options, lr=0.1, weight_decay=0.05, momentum=0.9, nesterov=nesterov)
    gen = torch.Generator().manual_seed(0)
    batch = lambda: quadratic_batch(DIM, 2.0, torch.randn(DIM, generator=gen), gen)  # noqa: E731
    for _ in range(3):  # non-zero momentum, non-uniform encodings
        algo.step(batch(), batch())
    w0, buf0 = algo.net.w.detach().clone(), algo.rules[0].buffers[0].clone()
    lr_logits = algo.enc["lr"].detach().clone().requires_grad_()
    wd_logits = algo.enc["wd"].detach().clone().requires_grad_()
    sampler = torch.Generator()
    sampler.set_state(algo.generator.get_state())
    train, val = batch(), batch()
    algo.step(train, val)

    gumbel_hard(algo.enc["arch"], options.tau, sampler)  # same draws in the same order
    lr_p, _ = gumbel_hard(lr_logits, options.tau, sampler)
    wd_p, _ = gumbel_hard(wd_logits, options.tau, sampler)
    w = w0.clone().requires_grad_()
    ones = {"arch": torch.ones(1, 1)}
    g = torch.autograd.grad(torch.nn.functional.cross_entropy(algo.net(train[0], ones) * 0 + functional_call(
        algo.net, {"w": w}, (train[0], ones)), train[1]), w)[0]
    m, copies = 0.9, []
    for i, lr_mult in enumerate(options.lr_multipliers):
        for j, wd_mult in enumerate(options.wd_multipliers):
            d_p = g + 0.05 * wd_mult * w0
            buf = m * buf0 + d_p
            step = d_p + m * buf if nesterov else buf
            copies.append(lr_p[i] * wd_p[j] * (w0 - 0.1 * lr_mult * step))  # one weight copy per basis pair
    updated = torch.stack(copies).sum(0)
    loss = torch.nn.functional.cross_entropy(functional_call(algo.net, {"w": updated}, (val[0], ones)), val[1])
    loss.backward()
    assert torch.allclose(algo.enc["lr"].grad, lr_logits.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(algo.enc["wd"].grad, wd_logits.grad, rtol=1e-4, atol=1e-7)
    assert lr_logits.grad.abs().sum() > 0 and wd_logits.grad.abs().sum() > 0


def test_recorded_lr_is_eq10_at_each_steps_scheduled_lr(digits):
    from raysearch.training import scheduled_lr

    loop = SearchLoop.from_config(tiny_config(), digits)
    algo = loop.algorithm
    factors = []
    for _ in range(5):
        algo.step(next(loop.train), next(loop.val))
        factors.append(algo.derive().hparams["lr_factor"])
    # the steps not run yet (a search stopped here by its time budget) take the factor derived now
    factors += [factors[-1]] * (algo.total_steps - 5)
    expected = [scheduled_lr(0.1, t, algo.total_steps, "cosine") * f for t, f in enumerate(factors)]
    lrs = algo.derive().hparams["lr"]
    assert lrs == pytest.approx(expected) and lrs[-1] < 0.01 * lrs[5]  # decays to the planned end


def _saved_bytes(n_basis: int, digits) -> int:
    """Bytes autograd keeps for backward during one AutoHAS step."""
    config = tiny_config(space={"channels": 16}, search={"lr_multipliers": [1.0 + i for i in range(n_basis)],
                                                         "wd_multipliers": [1.0 + i for i in range(n_basis)]})
    loop = SearchLoop.from_config(config, digits)
    batch = next(loop.train), next(loop.val)
    return saved_tensor_bytes(lambda: loop.algorithm.step(*batch))


def test_memory_does_not_grow_with_the_number_of_basis_values(digits):
    net = SearchLoop.from_config(tiny_config(space={"channels": 16}), digits).algorithm
    weights = sum(p.numel() * p.element_size() for p in net.weights)
    small, large = _saved_bytes(3, digits), _saved_bytes(27, digits)
    # Only basis-length vectors may grow; one per-basis copy of the weights would add 24x `weights`.
    assert large - small < 0.05 * weights, (small, large, weights)


def _run(loop, epochs):
    for _ in range(epochs):
        loop.run_epoch()


def test_interrupted_and_resumed_search_matches_an_uninterrupted_one(digits):
    config = tiny_config(search={"epochs": 3})
    straight = SearchLoop.from_config(config, digits)
    _run(straight, 3)

    first = SearchLoop.from_config(config, digits)
    _run(first, 1)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    del first
    buffer.seek(0)
    resumed = SearchLoop.from_config(config, digits)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    _run(resumed, 2)

    for name, tensor in straight.algorithm.enc.items():
        assert torch.equal(tensor, resumed.algorithm.enc[name]), name
    for a, b in zip(straight.algorithm.weights, resumed.algorithm.weights):
        assert torch.equal(a, b)
    assert straight.algorithm.derive() == resumed.algorithm.derive()
    assert resumed.history == straight.history and resumed.epoch == 3


def test_same_seed_same_search_and_other_seed_differs(digits):
    a, b, c = (SearchLoop.from_config(tiny_config(seed=s), digits) for s in (0, 0, 1))
    for loop in (a, b, c):
        _run(loop, 1)
    assert torch.equal(a.algorithm.enc["cell"], b.algorithm.enc["cell"])
    assert not torch.equal(a.algorithm.enc["cell"], c.algorithm.enc["cell"])


def test_divergence_raises_a_clear_error(digits):
    from raysearch.training import DivergenceError

    loop = SearchLoop.from_config(tiny_config(training={"lr": 1e30, "grad_clip": None}), digits)
    with pytest.raises(DivergenceError, match="diverged"):
        _run(loop, 2)


def test_encodings_change_only_in_the_encoding_step(digits):
    """With a zero encoding lr the weights still train and the encodings stay put."""
    loop = SearchLoop.from_config(tiny_config(search={"encoding_lr": 1e-30}), digits)
    algo = loop.algorithm
    encodings = {k: v.detach().clone() for k, v in algo.enc.items()}
    weights = [w.detach().clone() for w in algo.weights]
    for _ in range(3):
        algo.step(next(loop.train), next(loop.val))
    # Adam moves them by ~encoding_lr; anything the weight step leaked would be of order training.lr.
    assert all((encodings[k] - v).abs().max() < 1e-20 for k, v in algo.enc.items())
    assert any(not torch.equal(a, b) for a, b in zip(weights, algo.weights))
    assert all(isinstance(p, torch.nn.Parameter) for p in algo.enc.values())


def test_the_darts_topology_is_derived_from_probabilities_as_plotted(digits):
    """Node 3 of the DARTS cell keeps 2 of its 3 input edges. Edge (3, 0) has the largest logits but
    spreads them over every op (probability 1/8 each); edge (3, 2) has smaller logits on one op
    (probability ~0.51): comparing logits keeps (3, 0), the DARTS rule on probabilities keeps (3, 2)."""
    from raysearch.spaces.darts import EDGES, OP_NAMES

    config = from_dict({**TINY, "space": {"name": "darts", "channels": 4, "layers": 3, "stem_multiplier": 1}})
    algorithm = SearchLoop.from_config(config, digits).algorithm
    conv = OP_NAMES.index("sep_conv_3x3")
    with torch.no_grad():
        for cell in ("normal", "reduce"):
            logits = algorithm.enc[cell]
            logits.zero_()
            logits[EDGES.index((3, 0))] = 5.0  # flat: the largest logit of all, the smallest probability
            logits[EDGES.index((3, 1)), conv] = 1.0
            logits[EDGES.index((3, 2)), conv] = 2.0
    genotype = algorithm.derive().genotype
    assert {src for _, src in genotype.normal[2:4]} == {1, 2}
    plotted = algorithm.encodings()  # what encodings.png and encodings.json show
    assert algorithm.space.derive({c: plotted[c] for c in ("normal", "reduce")}) == genotype


def test_the_encodings_stay_still_through_the_warm_up_then_move(digits):
    """`warmup_epochs`: the weights train on uniform samples first (weight sharing favours cheap,
    parameter-free paths while the convolutions are untrained); the encodings move afterwards."""
    config = tiny_config(search={"epochs": 2, "warmup_epochs": 1})
    loop = SearchLoop.from_config(config, digits)
    before = {k: v.detach().clone() for k, v in loop.algorithm.enc.items()}
    weights = [p.detach().clone() for p in loop.algorithm.net.parameters()]
    loop.run_epoch()
    assert all(torch.equal(before[k], v) for k, v in loop.algorithm.enc.items())
    assert any(not torch.equal(a, b) for a, b in zip(weights, loop.algorithm.net.parameters()))
    loop.run_epoch()
    assert all(not torch.equal(before[k], v) for k, v in loop.algorithm.enc.items())


@pytest.mark.parametrize("tau_min, expected", [(None, [10.0, 10.0, 10.0]), (0.1, [10.0, 5.05, 0.1])])
def test_tau_min_anneals_every_sample_s_temperature_per_epoch_as_gdas(digits, monkeypatch, tau_min, expected):
    """`tau_min`: GDAS's linear fall per epoch; without it the paper's fixed tau. Every Gumbel sample of
    an epoch (architecture and hyper-parameters) uses that epoch's temperature, and the epoch reports it."""
    from raysearch.algorithms import autohas

    loop = SearchLoop.from_config(tiny_config(search={"epochs": 3, "tau": 10.0, "tau_min": tau_min}), digits)
    used, sample = [], autohas.gumbel_hard
    monkeypatch.setattr(autohas, "gumbel_hard", lambda logits, tau, generator: (
        used.append(tau), sample(logits, tau, generator))[1])
    for tau in expected:
        used.clear()
        assert loop.run_epoch()["tau"] == pytest.approx(tau)
        assert used and all(t == pytest.approx(tau) for t in used)
