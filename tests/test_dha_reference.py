"""DHA as its authors' code runs it (ISTA-NAS's `ista_nas_single/`, kaichen-z/DHA): one test per place where
raysearch's DHA departed from it (the code scale and batch norms, the grouping and measurement matrices, the
signed selection is in test_dha, the search-then-train phases, the data, the augmentation strength, the
optimizers of the policy and of the hyper-step)."""

import dataclasses

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from raysearch.algorithms import ALGORITHMS
from raysearch.config import TrainingConfig, load_config
from raysearch.schema import ConfigError
from raysearch.search import SearchLoop
from raysearch.spaces import DataShape
from tests.conftest import tiny_space
from tests.helpers import ROOT

SHAPE = DataShape(1, 8, 10, mean=(0.3,), std=(0.37,))
GENOTYPE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|"


def _dha(space_name="nb201", epochs=4, steps_per_epoch=2, seed=0, space=None, **options):
    entry = ALGORITHMS["dha"]
    built = tiny_space(space_name, SHAPE, **(space if space is not None else {"op_norm": True}))
    return entry.build(built, entry.config_type(**options), TrainingConfig(), total_steps=epochs * steps_per_epoch,
                       seed=seed, steps_per_epoch=steps_per_epoch)


def _batch(digits, i, n=16):
    x, y = digits.train
    return x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]


def _epoch(algo, digits, start, steps=2):
    for i in range(steps):
        metrics = algo.step(_batch(digits, start + 2 * i), _batch(digits, start + 2 * i + 1))
    return metrics, algo.end_epoch(None)


def _edge_norms(net):
    """{(encoding, row): [batch norms inside that row's candidate ops]}."""
    return {(name, row): [m for m in edge.modules() if isinstance(m, _BatchNorm)] for name, row, edge in net.edges()}


def test_the_shipped_config_runs_the_reference_scale_regime():
    """Codes start at 1e-3 N(0, 1) (ISTA-NAS), which needs a batch norm after every op; a config without
    them is refused at load, naming the field."""
    config = load_config(ROOT / "configs" / "dha_nb201_digits.yaml")
    assert config.search.options.code_init_std == 1e-3 and config.space.options.op_norm
    with pytest.raises(ConfigError, match="space.op_norm"):
        load_config(ROOT / "configs" / "dha_nb201_digits.yaml", ["space.op_norm=false"])
    load_config(ROOT / "configs" / "sequential_dha_nb201_digits.yaml", ["space.op_norm=false"])  # no codes there


@pytest.mark.parametrize("space_name", ["nb201", "darts"])
def test_every_op_ends_in_a_batch_norm_in_the_supernet_and_in_the_model(space_name):
    space = tiny_space(space_name, SHAPE, op_norm=True)
    for net in (space.supernet(affine=True), space.network(space.derive(
            {k: torch.rand(v) for k, v in space.encoding_shapes().items()}))):
        for name, row, edge in net.edges():
            for op in edge:
                if type(op).__name__ != "Zero":
                    assert isinstance(list(op.modules())[-1], _BatchNorm), f"{name} row {row}: {op}"
    plain = tiny_space(space_name, SHAPE).supernet(affine=True)
    assert any(not isinstance(list(op.modules())[-1], _BatchNorm) for _, _, edge in plain.edges() for op in edge)


def test_a_searching_nodes_batch_norms_keep_gamma_1_beta_0_until_it_freezes(digits):
    algo = _dha()
    norms = _edge_norms(algo.net)
    for i in range(3):
        algo.step(_batch(digits, 2 * i), _batch(digits, 2 * i + 1))
    for bns in norms.values():
        assert all(torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
                   for bn in bns), "an edge's batch norm learned while its node searched"
    assert not torch.equal(algo.net.stem[1].bias, torch.zeros(4)), "the stem's batch norm learns as always"
    algo.ista.frozen[2] = True  # node 3 froze: its edges' batch norms learn from now on
    algo.step(_batch(digits, 6), _batch(digits, 7))
    _, rows, _ = algo.ista.groups[2]
    moved = {row: any(not torch.equal(bn.weight, torch.ones_like(bn.weight)) for bn in norms[("cell", row)])
             for row in range(6)}
    assert all(moved[row] for row in rows) and not any(moved[row] for row in range(6) if row not in rows)


def test_the_codes_learn_far_beyond_their_start_and_an_epoch_reports_it(digits):
    """At the reference scale an epoch's learned change of b is many times its start, so the recovery can move
    the support (from b = 1.0 the same steps moved it by a few hundredths)."""
    algo = _dha(epochs=8, steps_per_epoch=6, arch_lr=0.01)
    _, metrics = _epoch(algo, digits, 0, steps=6)
    assert metrics["code_change"] > 5.0
    assert {"support_changes", "frozen_nodes", "code_common_mode"} <= set(metrics)
    start = _dha(epochs=8, steps_per_epoch=6, arch_lr=0.01, code_init_std=1.0)
    assert _epoch(start, digits, 0, steps=6)[1]["code_change"] < 0.5


def test_nb201_groups_are_nodes_and_their_code_steps_are_not_common_mode(digits):
    """With a non-negative A a support of one entry gets the gradient a_s g_s, and Adam turns it into the same
    step on every entry of b; a zero-mean A (the default where a node keeps all its edges) does not."""
    algo = _dha(epochs=8, steps_per_epoch=6)
    assert [rows for _, rows, _ in algo.ista.groups] == [(0,), (1, 2), (3, 4, 5)]
    assert algo.ista.A0.min() < 0, "NB201's matrices are zero-mean"

    def common_mode(**options):
        algo = _dha(epochs=8, steps_per_epoch=6, **options)
        before = algo.ista.codes[0].detach().clone()  # node 1: one edge, one support entry
        for i in range(6):
            algo.step(_batch(digits, 2 * i), _batch(digits, 2 * i + 1))
        delta = algo.ista.codes[0].detach() - before
        return float(delta.sum().abs() / (delta.numel() ** 0.5 * delta.norm()))

    assert common_mode(measurement="uniform") > 0.99
    assert common_mode() < 0.9
    assert _dha("darts").ista.A0.min() >= 0, "DARTS nodes keep the reference's U[0, 1)"


def test_the_search_ends_then_the_support_it_trained_trains_with_the_schedule(digits):
    algo = _dha(epochs=4, steps_per_epoch=2, freeze_tol=0.0)  # no node freezes on its own
    scales, genotypes, searching = [], [], []
    for epoch in range(4):
        metrics, ended = _epoch(algo, digits, 4 * epoch)
        scales.append(metrics["lr_scale"])
        searching.append(metrics["searching"])
        genotypes.append(algo.derive().genotype)
    assert searching == [1.0, 1.0, 0.0, 0.0], "search_share 0.5: two epochs search, two train"
    assert scales[0] == scales[1] == 1.0 and 1.0 > scales[2] > scales[3], "constant, then cosine"
    assert genotypes[1] == genotypes[2] == genotypes[3], "the training phase trains the support it searched last"
    assert algo.augmenter.max_level == algo.options.frozen_max_level


def test_the_tested_support_is_the_one_the_epoch_trained_not_the_one_recovered_after_it(digits):
    algo = _dha(epochs=8, steps_per_epoch=6, arch_lr=0.05)
    for epoch in range(3):
        trained = algo.ista.active()
        for i in range(6):
            algo.step(_batch(digits, 2 * i), _batch(digits, 2 * i + 1))
        changes = algo.end_epoch(None)["support_changes"]
        assert algo._architecture()[1] == trained
        assert algo.derive().genotype == algo.space.derive(algo.ista.support_weights(trained))
        if changes:
            assert algo.ista.active() != trained
            break
    else:
        pytest.fail("no recovery moved the support in 3 epochs")


def test_the_weights_train_on_all_training_data_and_hyper_steps_read_its_last_share(digits):
    config = load_config(ROOT / "configs" / "dha_nb201_digits.yaml", ["search.epochs=2"])
    loop = SearchLoop.from_config(config, digits)
    x, _ = digits.train_and_val()
    assert torch.equal(loop.train.x, x)
    assert torch.equal(loop.val.x, x[-round(len(x) * 0.1):])
    assert loop.algorithm.total_steps == 2 * (len(x) // 64)
    paper = SearchLoop.from_config(load_config(ROOT / "configs" / "dha_nb201_digits.yaml",
                                               ["search.train_data=search_train"]), digits)
    assert torch.equal(paper.train.x, digits.train[0]) and torch.equal(paper.val.x, digits.val[0])
    reference = SearchLoop.from_config(load_config(ROOT / "configs" / "dha_nb201_digits.yaml",
                                                   ["search.hyper_fraction=0.02"]), digits)
    assert torch.equal(reference.val.x, x[-64:]), "2% of digits is less than a batch: one batch"


def test_augmentation_is_weak_while_searching_and_strong_once_frozen():
    options = ALGORITHMS["dha"].config_type()
    assert options.max_level == 0.125 and options.frozen_max_level == 1.25  # level 1 of 8; U[0, 10] clipped at 8
    assert _dha().augmenter.max_level == 0.125
    assert _dha(search_arch=False, genotype=GENOTYPE).augmenter.max_level == 1.25, "a fixed cell trains from step 1"


def test_the_policy_and_the_hyper_step_are_sgd_with_nesterov_momentum_as_the_reference(digits):
    algo = _dha()
    policy = algo.encoding_optimizer.optimizers[0]
    assert policy.param_groups[0]["params"][0] is algo.policy.logits
    assert isinstance(policy, torch.optim.SGD) and {k: policy.defaults[k] for k in
                                                     ("lr", "momentum", "nesterov", "weight_decay")} == \
        {"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
    hyper = algo.hyper_optimizer
    assert isinstance(hyper, torch.optim.SGD) and hyper.defaults["momentum"] == 0.9 and hyper.defaults["nesterov"]
    # Nesterov momentum 0.9 at lr 0.02: the same gradient moves the policy 1.9 lr, then 2.71 lr
    algo.encoding_optimizer.zero_grad()
    moves = []
    for _ in range(2):
        before = algo.policy.logits.detach().clone()
        algo.policy.logits.grad = torch.ones_like(algo.policy.logits)
        policy.step()
        moves.append(float((algo.policy.logits.detach() - before).abs().max()))
    assert moves == pytest.approx([0.02 * 1.9, 0.02 * 2.71], rel=1e-2)


def test_one_gumbel_softmax_matrix_a_step_at_temperature_2_from_which_every_image_draws():
    policy = ALGORITHMS["dha"].config_type()
    assert policy.policy_temperature == 2.0
    from raysearch.augment import PairPolicy

    pairs = PairPolicy()
    draws = [pairs.sample(4096, torch.Generator().manual_seed(0), temperature) for temperature in (2.0, None)]
    shared, exact = (d[1].bincount(minlength=196).float() / 4096 for d in draws)
    # one perturbation for all images concentrates the draws on the pairs that noise favoured
    assert shared.max() > 2 * exact.max()
    again = pairs.sample(4096, torch.Generator().manual_seed(0), 2.0)[1]
    assert torch.equal(again, draws[0][1]), "the same generator state gives the same draws on every rank"


def test_the_hyper_step_reads_the_codes_after_their_step(digits):
    algo = _dha()
    seen = {}
    original = algo.lookahead_loss

    def spy(updated, batch, arch_w, active):
        seen["arch_w"] = {k: w.detach().clone() for k, w in arch_w.items()}
        return original(updated, batch, arch_w, active)

    algo.lookahead_loss = spy
    before = {k: w.detach().clone() for k, w in algo.mix()[0].items()}
    algo.step(_batch(digits, 0), _batch(digits, 1))
    after = {k: w.detach() for k, w in algo.mix()[0].items()}
    assert all(torch.equal(seen["arch_w"][k], after[k]) and not torch.equal(before[k], after[k]) for k in after)


def test_paper_settings_stay_options():
    options = dataclasses.replace(ALGORITHMS["dha"].config_type(), policy_optimizer="adam", policy_temperature=None,
                                  hyper_momentum=0.0, max_level=0.8, train_data="search_train")
    algo = ALGORITHMS["dha"].build(tiny_space("nb201", SHAPE, op_norm=True), options, TrainingConfig(),
                                   total_steps=8, seed=0, steps_per_epoch=2)
    assert isinstance(algo.encoding_optimizer.optimizers[0], torch.optim.Adam)
    assert algo.hyper_optimizer.defaults["momentum"] == 0.0 and algo.augmenter.max_level == 0.8
