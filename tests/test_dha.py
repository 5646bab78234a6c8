"""DHA's parts: ISTA-NAS's sparse recovery and supports, the hypergradient of Eq. 4, the ablations, and a run
through the CLI whose trained model is the result."""

import json

import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from raysearch.algorithms import ALGORITHMS
from raysearch.algorithms.ista import IstaArchitecture
from raysearch.config import TrainingConfig
from raysearch.relax import lasso_ista, top_support
from raysearch.schema import ConfigError
from raysearch.spaces import DataShape
from tests.conftest import tiny_space
from tests.helpers import ROOT, write_cifar
from tests.helpers import cli as _cli

SHAPE = DataShape(1, 8, 10, mean=(0.3,), std=(0.37,))


def _dha(space_name="nb201", space=None, **options):
    entry = ALGORITHMS["dha"]
    return entry.build(tiny_space(space_name, SHAPE, **(space or {})), entry.config_type(**options),
                       TrainingConfig(), total_steps=8, seed=0, steps_per_epoch=2)


def _batch(digits, i, n=16):
    x, y = digits.train
    return x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]


def test_lasso_by_ista_recovers_a_sparse_vector_from_few_measurements():
    gen = torch.Generator().manual_seed(0)
    A = torch.rand(7, 20, generator=gen)
    truth = torch.zeros(20)
    truth[[3, 14]] = torch.tensor([1.5, -0.8])
    x = lasso_ista(A, A @ truth, lam=1e-5)
    assert torch.allclose(x.float(), truth, atol=1e-4)
    support = top_support(x, rows=4, keep=2, allowed=torch.ones(20, dtype=torch.bool))
    assert support[3] and not support[14], "the op the loss pushed negative is not kept"


def test_the_support_takes_each_rows_largest_signed_x_then_the_strongest_rows_as_dha_derives():
    # 3 rows x 3 ops: row 1's -0.9 is the largest |x|, the op the loss pushed out, not the strongest
    x = torch.tensor([0.5, 0.1, 0.0, -0.9, 0.2, 0.0, 0.3, 0.0, 0.4])
    support = top_support(x, rows=3, keep=2, allowed=torch.ones(9, dtype=torch.bool))
    assert support.nonzero().flatten().tolist() == [0, 8]


def test_the_support_keeps_one_op_per_row_and_never_an_excluded_op():
    x = torch.tensor([0.9, 0.8, 0.0, 0.1, 0.05, 0.7])  # 2 rows x 3 ops; row 0 holds the two largest
    allowed = torch.tensor([False, True, True, True, True, True])  # op 0 excluded (e.g. `none`)
    assert top_support(x, rows=2, keep=2, allowed=allowed).nonzero().flatten().tolist() == [1, 5]


def test_ista_computes_exactly_two_ops_per_darts_node_and_zero_off_the_support():
    space = tiny_space("darts", SHAPE)
    ista = IstaArchitecture(space, proj_dims=7, code_init_std=1.0, lam=1e-5, freeze_tol=1e-3,
                            generator=torch.Generator().manual_seed(0))
    weights, active = ista.mix()
    none = space.op_names.index("none")
    for name, rows, keep in space.node_groups():
        on = [r for r in rows if active[name][r] >= 0]
        assert keep == 2 and len(on) == 2, "a DARTS node computes exactly 2 incoming edges"
        for r in rows:
            nonzero = weights[name][r].nonzero().flatten().tolist()
            assert nonzero == ([active[name][r]] if r in on else []) and none not in nonzero
    sum(w.sum() for w in weights.values()).backward()
    assert all(code.grad is not None for code in ista.codes), "the codes get gradients through the support"
    genotype = space.derive(ista.support_weights())
    assert len(genotype.normal) == len(genotype.reduce) == 8


def test_a_node_freezes_once_its_recovered_architecture_stops_moving():
    space = tiny_space("darts", SHAPE)
    ista = IstaArchitecture(space, proj_dims=7, code_init_std=1.0, lam=1e-5, freeze_tol=1e-3,
                            generator=torch.Generator().manual_seed(0))
    assert not ista.frozen.any(), "the first recovery never freezes"
    with torch.no_grad():
        ista.codes[0].add_(0.5)  # node 0 of the normal cell moves; the others keep their codes
    assert ista.recover()["frozen_nodes"] == len(ista.groups) - 1 and not ista.frozen[0]
    frozen_support = ista.support1.clone()
    with torch.no_grad():
        ista.codes[1].add_(5.0)  # a frozen node's code moving no longer changes its architecture
    ista.recover()
    assert torch.equal(ista.support1, frozen_support)
    assert all(not any(c is code for c in ista.trainable_codes()) for k, code in enumerate(ista.codes) if ista.frozen[k])


def test_a_frozen_code_stays_still_in_the_search_step(digits):
    algo = _dha(code_init_std=1.0)
    algo.ista.frozen[:] = True
    algo.ista.frozen[0] = False
    before = [c.detach().clone() for c in algo.ista.codes]
    algo.step(_batch(digits, 0), _batch(digits, 1))
    after = [c.detach() for c in algo.ista.codes]
    assert not torch.equal(before[0], after[0])
    assert all(torch.equal(b, a) for b, a in zip(before[1:], after[1:]))


def test_the_hypergradient_on_lr_and_wd_matches_a_finite_difference(digits):
    algo = _dha(code_init_std=1.0)
    algo.step(_batch(digits, 0), _batch(digits, 1))  # momentum buffers that are not zero
    x, y = _batch(digits, 2)
    arch_w, active = algo.mix()
    loss = torch.nn.functional.cross_entropy(algo.net(x, arch_w, active), y)
    g = torch.autograd.grad(loss, algo.weights, allow_unused=True, materialize_grads=True)
    val = _batch(digits, 3)

    def val_loss(lr, wd):
        return algo.lookahead_loss(algo.lookahead(g, lr, wd, 1.0)[0], val, arch_w, active)[0]

    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    wd = torch.tensor(5e-4, dtype=torch.float64, requires_grad=True)
    d_lr, d_wd = torch.autograd.grad(val_loss(lr, wd), [lr, wd])
    with torch.no_grad():
        h = 1e-3
        fd_lr = (val_loss(0.1 + h, 5e-4) - val_loss(0.1 - h, 5e-4)) / (2 * h)
        fd_wd = (val_loss(0.1, 5e-4 + 0.05) - val_loss(0.1, 5e-4 - 0.05)) / 0.1
    assert abs(d_lr.item()) > 1e-3
    assert d_lr.item() == pytest.approx(fd_lr.item(), rel=0.05, abs=1e-4)
    assert d_wd.item() == pytest.approx(fd_wd.item(), rel=0.05, abs=1e-4)


def test_the_searched_hyper_parameters_move_and_stay_in_their_ranges(digits):
    algo = _dha(code_init_std=1.0, lr_hyper_lr=1.0, wd_hyper_lr=1.0, lr_range=(0.05, 0.15), wd_range=(1e-4, 1e-3))
    assert (algo.lr, algo.wd) == pytest.approx((0.1, 5.5e-4))
    seen = set()
    for i in range(4):
        metrics = algo.step(_batch(digits, 2 * i), _batch(digits, 2 * i + 1))
        assert 0.05 <= metrics["searched_lr"] <= 0.15 and 1e-4 <= metrics["searched_wd"] <= 1e-3
        seen.add(metrics["searched_lr"])
    assert len(seen) > 1 or seen & {0.05, 0.15}, "the lr never moved"


def test_ablations_turn_off_augmentation_hpo_and_nas(digits):
    genotype = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|"
    algo = _dha(search_arch=False, genotype=genotype, search_hparams=False, search_augmentation=False)

    def no_draws(*args, **kwargs):
        raise AssertionError("augmentation pairs were drawn")

    algo.policy.sample = no_draws
    for i in range(2):
        metrics = algo.step(_batch(digits, 2 * i), _batch(digits, 2 * i + 1))
    assert algo.ista is None
    assert metrics["searched_lr"] == TrainingConfig().lr and metrics["searched_wd"] == TrainingConfig().weight_decay
    assert algo.derive().genotype.to_string() == genotype
    with pytest.raises(ConfigError, match="search.genotype"):
        ALGORITHMS["dha"].config_type(search_arch=False).check(None)
    with pytest.raises(ConfigError, match="search.lr_range"):
        ALGORITHMS["dha"].config_type(lr_range=(0.2, 0.1)).check(None)


def test_augmentation_draws_are_those_of_the_global_batch_sliced_by_rank(digits):
    """Each rank of a sharded search augments its images as one worker would augment them."""
    x = _batch(digits, 0)[0]
    alone, ranks = _dha(), [_dha(), _dha()]
    whole = alone._augment(x)
    for rank, algo in enumerate(ranks):
        algo.dist = type("Two", (), {"world_size": 2, "rank": rank})()
    halves = [algo._augment(part) for algo, part in zip(ranks, (x[:8], x[8:]))]
    assert torch.equal(torch.cat([h[0] for h in halves]), whole[0])
    assert torch.equal(torch.cat([h[1] for h in halves]), whole[1])
    assert not torch.equal(whole[0], x)


def test_dha_through_the_cli_tests_its_searched_model_and_saves_it(tmp_path):
    """The shipped GPU config (configs/dha_darts_cifar10.yaml: DARTS cells, its ranges and rates) on a
    generated CIFAR-10 tree, scaled down in size only: it runs on a CPU unchanged."""
    write_cifar(tmp_path / "data", "cifar10", n_train=80)  # 5 files: 360 search-train, 40 search-val images
    small = {"data.root": str(tmp_path / "data"), "search.epochs": 2, "search.batch_size": 32,
             "space.channels": 4, "space.layers": 3, "ray.cpus_per_trial": 1, "search.hyper_fraction": 0.1}
    args = [a for key, value in small.items() for a in ("--set", f"{key}={value}")]
    proc = _cli("run", str(ROOT / "configs" / "dha_darts_cifar10.yaml"), *args, "--output-dir", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[search 2/2]" in proc.stdout and "[retrain" not in proc.stdout
    assert "test accuracy (searched model)" in proc.stdout
    run = tmp_path / "out"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["retrain_seconds"] is None and 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["genotype"].startswith("Genotype(normal=[") and summary["genotype"].count("('") == 16  # 2 a node
    rows = pq.read_table(run / "results.parquet").to_pylist()
    assert [r["role"] for r in rows] == ["search"]
    # the saved model is the one tested: the fixed network cut out of the supernet, in eval mode
    import numpy as np
    import onnxruntime

    import raysearch
    from raysearch.config import load_config
    from raysearch.data import load_splits
    from raysearch.export import export
    from raysearch.training import accuracy

    config = load_config(run / "config.yaml")
    splits = load_splits(config.data)
    module, card, _ = raysearch.load_model(run)
    assert card.genotype == summary["genotype"] and card.trained_by == "dha" and card.latency["batch_1_ms"] > 0
    assert accuracy(module, *splits.test, torch.device("cpu"))[1] == summary["test_accuracy"] == card.test_accuracy
    assert summary["model"]["path"] == str(run / "model") and summary["model"]["params"] == card.params
    session = onnxruntime.InferenceSession(str(export(run, "onnx")), providers=["CPUExecutionProvider"])
    x = splits.test[0][:5]
    with torch.no_grad():
        assert np.allclose(session.run(None, {"images": x.numpy()})[0], module(x).numpy(), atol=1e-4)
    assert (run / "artifacts" / "augmentation_policy.png").stat().st_size > 0
    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    child = client.search_runs([summary["mlflow_experiment_id"]], "tags.`raysearch.role` = 'search'")[0]
    assert len(client.get_metric_history(child.info.run_id, "test_acc")) == 2
    artifacts = {f.path for f in client.list_artifacts(child.info.run_id)}
    assert "augmentation_policy.png" in artifacts
    logged = client.search_logged_models([summary["mlflow_experiment_id"]])
    assert [m.source_run_id for m in logged] == [child.info.run_id]
    assert summary["model"]["mlflow_uri"] == f"models:/{logged[0].model_id}"


def _loop(digits, algorithm, **search):
    from raysearch.config import from_dict
    from raysearch.search import SearchLoop
    from tests.conftest import TINY, space_for

    config = from_dict({**TINY, "space": space_for(algorithm),
                        "search": {"algorithm": algorithm, "epochs": 2, "batch_size": 64, **search}})
    return SearchLoop.from_config(config, digits)


def _sequential_loop(digits):
    return _loop(digits, "sequential_dha", architecture_search="gdas")


def test_sequential_dha_trains_the_cell_its_first_stage_derived_from_fresh_weights(digits):
    loop = _sequential_loop(digits)
    first = loop.run_epoch()
    assert loop.algorithm.second is None and first["stage"] == 1.0
    derived = loop.algorithm.first.derive().genotype.to_string()
    state = loop.state_dict()
    second = loop.run_epoch()
    algo = loop.algorithm
    assert second["stage"] == 2.0 and "test_acc" in second and "augmentation" in algo.encodings()
    assert algo.second.derive().genotype.to_string() == derived == algo.derive().genotype.to_string()
    assert not algo.second.options.search_arch and loop.model is not None
    # a search resumed between the stages takes the same second stage
    again = _sequential_loop(digits)
    again.load_state_dict(state)
    assert again.run_epoch() == second
    with pytest.raises(ConfigError, match="search.search_arch"):
        ALGORITHMS["sequential_dha"].config_type(search_arch=False, genotype=derived).check(None)


def test_every_epoch_of_a_final_model_search_saves_the_model_it_tested(digits, tmp_path):
    """A budget (`search.budget_seconds`, `raysearch compare`) may stop the search after any epoch: the
    checkpoint it stops at holds the model whose test accuracy that epoch reported (Sequential DHA has one
    from its training stage on)."""
    from raysearch.model import CARD_FILE, read_model, write_folder
    from raysearch.training import accuracy
    from trainables.search import epoch_report

    def saved(loop):
        result, files = epoch_report(loop, loop.run_epoch())
        if CARD_FILE not in files:
            return None
        model = read_model(write_folder(tmp_path / "model", {k: v for k, v in files.items() if k != "derived.json"}))
        assert model.card.latency is None or loop.done  # timed once, after the last epoch
        return accuracy(model.module, *digits.test, torch.device("cpu"))[1] == result["test_acc"]

    dha = _loop(digits, "dha")
    assert saved(dha) and not dha.done
    sequential = _sequential_loop(digits)
    assert saved(sequential) is None and saved(sequential) and sequential.done


def test_sequential_dha_passes_its_architecture_options_to_the_first_stage():
    from raysearch.config import from_dict
    from tests.conftest import TINY

    search = {"algorithm": "sequential_dha", "architecture_search": "drnas",
              "architecture_options": ["arch_lr=0.02", "weight_lr=0.1"]}
    options = from_dict({**TINY, "search": search}).search.options.first_stage_options()
    assert (options.arch_lr, options.weight_lr) == (0.02, 0.1)
    with pytest.raises(ConfigError, match="arch_lrx is not an option of drnas"):
        from_dict({**TINY, "search": {**search, "architecture_options": ["arch_lrx=1"]}})
    with pytest.raises(ConfigError, match="search.architecture_options.arch_lr: must be > 0"):
        from_dict({**TINY, "search": {**search, "architecture_options": ["arch_lr=-1"]}})
