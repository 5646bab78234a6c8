import subprocess
import sys

import pytest
import yaml

from raysearch.config import ConfigError, load_config
from tests.helpers import EXPERIMENT_CONFIGS, ROOT

DEFAULT = ROOT / "configs" / "autohas_nb201_digits.yaml"


def test_every_shipped_config_is_valid():
    for path in EXPERIMENT_CONFIGS:
        load_config(path)


def test_overrides_are_typed_and_applied():
    config = load_config(DEFAULT, ["search.epochs=5", "training.lr=0.05", "search.lr_multipliers=[0.5, 1, 2]",
                                   "data.root=null"])
    assert config.search.epochs == 5
    assert config.training.lr == 0.05
    assert config.search.options.lr_multipliers == (0.5, 1.0, 2.0)
    assert config.data.root is None


def test_to_dict_round_trips_and_config_is_frozen():
    config = load_config(DEFAULT)
    from raysearch.config import from_dict

    assert from_dict(config.to_dict()) == config
    assert from_dict(yaml.safe_load(config.to_yaml())) == config
    with pytest.raises(AttributeError):
        config.seed = 3


BAD = [
    (["search.epochs=0"], "search.epochs", ">= 1"),
    (["search.epochs=ten"], "search.epochs", "integer"),
    (["search.epochs=2.5"], "search.epochs", "integer"),
    (["search.algorithm=darts_v9"], "search.algorithm", "autohas"),
    (["space.name=resnet"], "space.name", "nb201"),
    (["data.dataset=mnist"], "data.dataset", "digits"),
    (["data.val_fraction=1.5"], "data.val_fraction", "< 1.0"),
    (["training.lr=-0.1"], "training.lr", "> 0.0"),
    (["training.lr_schedule=step"], "training.lr_schedule", "cosine"),
    (["training.nesterov=maybe"], "training.nesterov", "true or false"),
    (["search.tau=0"], "search.tau", "> 0.0"),
    (["search.lr_multipliers=[]"], "search.lr_multipliers", "non-empty list"),
    (["search.lr_multipliers=[1, -2]"], "search.lr_multipliers", "> 0.0"),
    (["search.encoding_betas=[0.5, 1.5]"], "search.encoding_betas", "< 1.0"),
    (["search.encoding_betas=[0.5]"], "search.encoding_betas", "expected 2 values"),
    (["search.colour=red"], "search.colour", "encoding_lr"),
    (["spaces.name=nb201"], "spaces", "accepted: name, seed, data"),
    (["space=3"], "space", "mapping"),
    (["ray.max_failures=-1"], "ray.max_failures", ">= 0"),
    (["space.stages=4"], "space.stages", "<= 3"),
    (["nonsense"], "--set 'nonsense'", "KEY=VALUE"),
]


@pytest.mark.parametrize("overrides, field, accepted", BAD, ids=[b[0][0] for b in BAD])
def test_bad_values_name_the_field_and_what_is_accepted(overrides, field, accepted):
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT, overrides)
    message = str(err.value)
    assert message.startswith(field), message
    assert accepted in message, message


def test_missing_name_and_missing_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="^name: required"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_validate_command_exits_2_with_one_line_and_no_traceback():
    cmd = [sys.executable, "-m", "raysearch.cli", "validate", str(DEFAULT), "--set", "search.epochs=-3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "raysearch: error: search.epochs: must be >= 1, got -3"
    ok = subprocess.run(cmd[:-2], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("name, key", [("dha_darts_cifar10.yaml", "data.root"),
                                       ("compare_cifar10.yaml", "shared.data.root")])
def test_validate_checks_a_gpu_config_without_its_data_and_run_refuses_it(name, key, tmp_path, capsys):
    """The shipped CIFAR configs leave data.root unset: `validate` passes their fields and says the data
    was not checked; a root given is checked; `run` and `compare` need one."""
    from raysearch.cli import main

    config = str(ROOT / "configs" / name)
    assert main(["validate", config]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{config}: valid (") and "its data was not checked" in out and f"--set {key}=DIR" in out
    assert main(["validate", config, "--set", f"{key}={tmp_path}"]) == 2  # an empty directory
    assert "missing data_batch_1" in capsys.readouterr().err
    assert main(["validate", config, "--set", "search.epochs=0" if key == "data.root" else "compare.seeds=0"]) == 2
    assert main(["compare" if key.startswith("shared") else "run", config]) == 2
    assert "needs data.root" in capsys.readouterr().err


def test_an_override_that_is_not_yaml_names_the_field():
    with pytest.raises(ConfigError, match=r"space.ops: --set value '\[skip_connect' is not YAML"):
        load_config(DEFAULT, ["space.ops=[skip_connect"])
