"""The model as the product, in plain PyTorch: cards and folders round-trip, a DHA supernet's support becomes
a fixed network computing the same function, exports match eager, bad input says what to do."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import numpy as np
import pytest
import torch

from raysearch.config import from_dict
from raysearch.export import FORMATS, export
from raysearch.model import (ModelCard, ModelFileError, ModelNotFoundError, build_network, find_model, hparams_of,
                             load_model, make_card, read_model, save_model)
from raysearch.search import SearchLoop
from raysearch.spaces import SPACES
from raysearch.spaces.fixed import recalibrate_batch_norm
from tests.conftest import TINY, TINY_SPACES, space_for, tiny_config

EXPORT_ATOL = 1e-4  # logits of an exported model against eager, on a batch of 5 (float32, reordered sums)


def _model(space: str, digits, tmp_path, algorithm: str = "dha"):
    """A DHA search of one epoch on a tiny `space`: its fixed network saved as a run's model folder."""
    config = from_dict({**TINY, "space": space_for(algorithm, {"name": space, **TINY_SPACES[space]}),
                        "search": {"algorithm": algorithm, "epochs": 1, "batch_size": 64}})
    loop = SearchLoop.from_config(config, digits)
    metrics = loop.run_epoch()
    card = make_card(loop.model, config, digits.shape, loop.algorithm.derive().genotype.to_string(),
                     hparams_of(0.1, 5e-4, "sgd", 1), metrics["test_acc"], algorithm, latency=False)
    folder = save_model(tmp_path / "run" / "model", loop.model, card)
    (tmp_path / "run" / "run.json").write_text("{}")
    return loop, metrics, folder


@pytest.mark.parametrize("space", list(SPACES))
def test_a_dha_support_becomes_the_fixed_network_computing_it(space, digits, tmp_path):
    """With batch statistics the cut-out network gives the supernet's logits; calibrated, in eval mode, it is
    what the search tested, and its logits no longer depend on the batch; reloaded from its folder, the same."""
    loop, metrics, folder = _model(space, digits, tmp_path)
    x = digits.test[0][:64]
    fixed = loop.model
    assert any(getattr(m, "scale", None) is not None for m in fixed.modules())  # ISTA weights are not 1
    fixed.train()
    with torch.no_grad():
        assert torch.allclose(fixed(x), loop.algorithm.derived_logits(x), atol=1e-5)
    recalibrate_batch_norm(fixed, digits.train[0][:2048])
    with torch.no_grad():
        whole = fixed(x)
        assert torch.allclose(torch.cat([fixed(x[:7]), fixed(x[7:])]), whole, atol=1e-5)
    module, card, _ = load_model(tmp_path / "run")
    with torch.no_grad():
        assert torch.equal(module(x), whole)
    from raysearch.training import accuracy

    assert accuracy(module, *digits.test, torch.device("cpu"))[1] == metrics["test_acc"] == card.test_accuracy


@pytest.mark.parametrize("space", list(SPACES))
def test_exports_give_the_eager_logits_on_another_batch_size(space, digits, tmp_path):
    import onnxruntime

    _model(space, digits, tmp_path)
    module, card, folder = load_model(tmp_path / "run")
    x = card.normalize(torch.rand(5, card.in_channels, card.image_size, card.image_size))
    with torch.no_grad():
        eager = module(x).numpy()
    scripted = torch.jit.load(str(export(tmp_path / "run", "torchscript")))
    assert np.allclose(scripted(x).detach().numpy(), eager, atol=EXPORT_ATOL)
    session = onnxruntime.InferenceSession(str(export(tmp_path / "run", "onnx")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert np.allclose(session.run(None, {"images": x.numpy()})[0], eager, atol=EXPORT_ATOL)


def test_a_retrained_fixed_network_round_trips_through_its_folder(digits, tmp_path):
    config = tiny_config()
    net = build_network(config.to_dict()["space"], "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+"
                        "|nor_conv_1x1~0|none~1|nor_conv_3x3~2|", digits.shape)
    recalibrate_batch_norm(net, digits.train[0])
    card = make_card(net, config, digits.shape, "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_1x1~0|"
                     "none~1|nor_conv_3x3~2|", hparams_of([0.1, 0.05, 0.0], 5e-4, "sgd", 2), 0.5, "retrain")
    assert card.params == sum(p.numel() for p in net.parameters()) and card.flops > 0
    assert set(card.latency) == {"device", "batch_1_ms", "batch_64_ms"} and card.latency["batch_64_ms"] > 0
    assert card.hparams["lr"] == {"per_step": 3, "first": 0.1, "max": 0.1, "last": 0.0}
    assert card.classes == tuple("0123456789")
    loaded = read_model(save_model(tmp_path / "model", net, card))
    assert loaded.card == card and not loaded.module.training
    x = digits.test[0][:32]
    with torch.no_grad():
        assert torch.equal(loaded.module(x), net.eval()(x))
    # the card's preprocessing is the splits': a [0, 1] image normalised by it is the split's tensor
    raw = digits.test[0] * torch.tensor(card.std).view(1, -1, 1, 1) + torch.tensor(card.mean).view(1, -1, 1, 1)
    assert torch.allclose(card.normalize(raw), digits.test[0], atol=1e-5)


def test_a_model_file_loads_without_running_code(digits, tmp_path):
    """A weights.pt holding a pickle that would run a command is refused, and the command never runs."""
    _model("nb201", digits, tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "run" / "model" / "weights.pt").write_bytes(pickle.dumps({"net": Payload()}))
    with pytest.raises(ModelFileError, match="cannot open safely|not a weights file"):
        load_model(tmp_path / "run")
    assert not marker.exists()
    card = tmp_path / "run" / "model" / "model.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "format": 99}))
    with pytest.raises(ModelFileError, match="format 1"):
        load_model(tmp_path / "run")


def test_an_export_that_fails_leaves_no_partial_file(digits, tmp_path, monkeypatch):
    _model("nb201", digits, tmp_path)
    first = export(tmp_path / "run", "torchscript")
    before = first.read_bytes()

    def broken(module, card, path):
        path.write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setitem(FORMATS, "torchscript", (first.name, broken))
    with pytest.raises(RuntimeError, match="disk full"):
        export(tmp_path / "run", "torchscript")
    assert first.read_bytes() == before and [p.name for p in first.parent.iterdir() if "partial" in p.name] == []


def test_no_model_says_what_is_there_and_what_to_run(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a raysearch run directory.*raysearch run"):
        find_model(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "config.yaml").write_text("name: x\n")
    with pytest.raises(ModelNotFoundError, match=r"interrupted before its model.*raysearch resume"):
        find_model(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "config.yaml").write_text("name: x\nretrain: {enabled: false}\n")
    with pytest.raises(ModelNotFoundError, match="retrain.enabled: false"):
        find_model(tmp_path)
    with pytest.raises(ModelNotFoundError, match="not a comparison"):
        find_model(tmp_path, method="autohas")
    comparison = tmp_path / "cmp"
    comparison.mkdir()
    (comparison / "comparison.json").write_text("{}")
    (comparison / "compare.yaml").write_text("methods: {autohas: {}, random: {}}\n")
    with pytest.raises(ModelNotFoundError, match="name the method.*--method NAME.*autohas, random"):
        find_model(comparison)
    with pytest.raises(ModelNotFoundError, match="no method 'gdas'.*autohas, random"):
        find_model(comparison, method="gdas")
    with pytest.raises(ModelNotFoundError, match="did not run"):
        find_model(comparison, method="random", seed=3)


def test_evaluate_refuses_data_of_other_classes_or_shape(digits, tmp_path):
    from PIL import Image

    from raysearch.evaluate import EvaluationError, evaluate

    _model("nb201", digits, tmp_path)
    images = tmp_path / "photos"
    for name in ("3", "7", "cat"):
        (images / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / name / "a.png")
    with pytest.raises(EvaluationError, match=r"\['cat'\] are not classes of the model"):
        evaluate(tmp_path / "run", images)
    (images / "cat" / "a.png").unlink()
    (images / "cat").rmdir()
    result = evaluate(tmp_path / "run", images)  # resized to the model's 8 x 8, labels mapped by name
    assert result.images == 2 and set(result.per_class) == set(map(str, range(10)))
    assert result.per_class["0"] is None and (tmp_path / "run" / "evaluation" / "confusion_matrix.png").exists()
    other = tmp_path / "hard.yaml"
    other.write_text(json.dumps({**TINY, "data": {"dataset": "digits_hard"}}))
    with pytest.raises(EvaluationError, match="1 x 16"):
        evaluate(tmp_path / "run", other)


def test_card_round_trips_as_json(digits, tmp_path):
    _, _, folder = _model("nb201", digits, tmp_path)
    card = load_model(tmp_path / "run").card
    assert ModelCard.from_json(card.to_json(), "x") == card
    assert dataclasses.replace(card, latency=None).latency is None
