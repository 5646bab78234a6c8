"""Regularized evolution through Tune's Searcher interface, without running Tune."""

import pytest

from raysearch.baselines.rea import RegularizedEvolution
from raysearch.joint import JointSpace
from raysearch.spaces import NB201SpaceConfig, NB201Space


def _joint():
    return JointSpace(NB201Space(NB201SpaceConfig()), (0.01, 0.5), (1e-5, 1e-2))


def score(config) -> float:
    """A known objective: reward 3x3 convs and an lr near 0.1."""
    return sum(v == "nor_conv_3x3" for v in config.values()) - abs(config["lr"] - 0.1)


def drive(searcher, n: int, fail_every: int = 0) -> list[dict]:
    """Suggest and complete `n` trials one after another; every `fail_every`-th one fails."""
    configs = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        failed = fail_every and i % fail_every == fail_every - 1
        searcher.on_trial_complete(f"t{i}", None if failed else {"val_acc": score(config)}, error=bool(failed))
    return configs


def test_first_population_random_then_one_mutation_from_a_member():
    searcher = RegularizedEvolution(_joint(), population=5, sample_size=3, seed=0)
    configs = drive(searcher, 40)
    for i in range(5, 40):
        earlier = configs[i - 5:i]  # the population: the 5 latest finished
        assert any(sum(configs[i][k] != p[k] for k in p) == 1 for p in earlier), i
    assert len(searcher.population) == 5
    assert [c for c, _ in searcher.population] == configs[-5:]  # the oldest died, not the worst


def test_evolution_improves_on_random():
    evolved = drive(RegularizedEvolution(_joint(), population=10, sample_size=5, seed=0), 150)
    assert sum(map(score, evolved[-30:])) / 30 > sum(map(score, evolved[:10])) / 10 + 1.0


def test_same_seed_same_suggestions_and_other_seed_differs():
    assert drive(RegularizedEvolution(_joint(), 4, 2, seed=7), 20) == drive(RegularizedEvolution(_joint(), 4, 2, 7), 20)
    assert drive(RegularizedEvolution(_joint(), 4, 2, seed=7), 5) != drive(RegularizedEvolution(_joint(), 4, 2, 8), 5)


def test_failed_trials_never_join_the_population():
    searcher = RegularizedEvolution(_joint(), population=50, sample_size=3, seed=0)
    configs = drive(searcher, 12, fail_every=3)
    assert [c for c, _ in searcher.population] == [c for i, c in enumerate(configs) if i % 3 != 2]


def test_waits_while_the_whole_initial_population_is_running():
    searcher = RegularizedEvolution(_joint(), population=2, sample_size=2, seed=0)
    assert searcher.suggest("a") and searcher.suggest("b")
    assert searcher.suggest("c") is None
    searcher.on_trial_complete("a", {"val_acc": 0.5})
    assert searcher.suggest("c") is not None


def test_save_and_restore_continue_the_same_sequence(tmp_path):
    straight = RegularizedEvolution(_joint(), 4, 2, seed=3)
    expected = drive(straight, 20)
    first = RegularizedEvolution(_joint(), 4, 2, seed=3)
    head = drive(first, 10)
    first.save(str(tmp_path / "rea.pkl"))
    second = RegularizedEvolution(_joint(), 4, 2, seed=99)
    second.restore(str(tmp_path / "rea.pkl"))
    tail = []
    for i in range(10, 20):
        config = second.suggest(f"t{i}")
        tail.append(config)
        second.on_trial_complete(f"t{i}", {"val_acc": score(config)})
    assert head + tail == expected


@pytest.mark.parametrize("mode", ["max", "min"])
def test_tournament_follows_the_mode(mode):
    searcher = RegularizedEvolution(_joint(), population=2, sample_size=2, seed=0, mode=mode)
    a, b = searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", {"val_acc": 1.0})
    searcher.on_trial_complete("b", {"val_acc": 0.0})
    child = searcher.suggest("c")
    parent = a if mode == "max" else b
    assert sum(child[k] != parent[k] for k in parent) == 1
