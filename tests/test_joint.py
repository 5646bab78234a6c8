"""The joint space: NB201 choices, sampling, mutation, features, and its Tune and ConfigSpace forms."""

import math
import random

import ConfigSpace
import pytest
from ray.tune.search.sample import Categorical as TuneCategorical
from ray.tune.search.sample import Float as TuneFloat

from raysearch.baselines.sweep import to_configspace, to_tune
from raysearch.joint import Categorical, JointSpace, LogUniform
from raysearch.spaces import NB201SpaceConfig, NB201Space
from raysearch.spaces.nb201 import NB201Genotype


@pytest.fixture
def joint():
    return JointSpace(NB201Space(NB201SpaceConfig()), (0.01, 0.5), (1e-5, 1e-2))


def test_nb201_choices_round_trip_every_cell():
    space = NB201Space(NB201SpaceConfig())
    assert list(space.choices()) == ["edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2"]
    for genotype in NB201Genotype.all():
        assert space.from_choices(space.to_choices(genotype)) == genotype


def test_samples_are_in_range_and_seeded(joint):
    a = [joint.sample(random.Random(3)) for _ in range(2)]
    assert a[0] == a[1]
    configs = [joint.sample(rng) for rng in [random.Random(0)] for _ in range(300)]
    assert all(0.01 <= c["lr"] <= 0.5 and 1e-5 <= c["weight_decay"] <= 1e-2 for c in configs)
    assert {c["edge_1_0"] for c in configs} == set(NB201Space(NB201SpaceConfig()).op_names)
    # log-uniform: about half of the draws fall below the geometric midpoint
    assert 0.4 < sum(c["lr"] < math.sqrt(0.01 * 0.5) for c in configs) / len(configs) < 0.6


def test_mutation_changes_exactly_one_dimension(joint):
    rng = random.Random(1)
    parent = joint.sample(rng)
    changed = set()
    for _ in range(200):
        child = joint.mutate(parent, rng)
        diff = [k for k in parent if child[k] != parent[k]]
        assert len(diff) == 1
        changed.add(diff[0])
    assert changed == {dim.name for dim in joint.dims}


def test_features_one_hot_then_log_positions(joint):
    config = {**NB201Space(NB201SpaceConfig()).to_choices(NB201Genotype.from_indices([0, 1, 2, 3, 4, 0])),
              "lr": 0.5, "weight_decay": math.sqrt(1e-5 * 1e-2)}
    features = joint.features(config)
    assert len(features) == joint.num_features == 6 * 5 + 2
    assert features[:30] == [float(i == op) for op in (0, 1, 2, 3, 4, 0) for i in range(5)]
    assert features[30] == pytest.approx(1.0) and features[31] == pytest.approx(0.5)


def test_decode_encode_round_trip(joint):
    config = joint.sample(random.Random(2))
    genotype, hparams = joint.decode(config)
    assert joint.encode(genotype, hparams) == config


def test_tune_and_configspace_forms_match_the_joint_space(joint):
    tune_space, cs = to_tune(joint), to_configspace(joint, seed=0)
    assert list(tune_space) == [dim.name for dim in joint.dims] == list(cs.keys())
    for dim in joint.dims:
        if isinstance(dim, Categorical):
            assert isinstance(tune_space[dim.name], TuneCategorical)
            assert tune_space[dim.name].categories == list(dim.choices) == list(cs[dim.name].choices)
        else:
            assert isinstance(dim, LogUniform) and isinstance(tune_space[dim.name], TuneFloat)
            assert (tune_space[dim.name].lower, tune_space[dim.name].upper) == (dim.low, dim.high)
            hp = cs[dim.name]
            assert isinstance(hp, ConfigSpace.UniformFloatHyperparameter) and hp.log
            assert (hp.lower, hp.upper) == (dim.low, dim.high)
    # ConfigSpace samples decode into valid configurations
    for sample in cs.sample_configuration(5):
        joint.decode(dict(sample))
