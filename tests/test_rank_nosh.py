"""RANK-NOSH's pyramid and pairwise ranker in a plain loop on a synthetic benchmark (no Ray)."""

import math
import random

import pytest
import torch
from scipy.stats import spearmanr

from raysearch.baselines.pyramid import Member, RankNosh
from raysearch.joint import JointSpace
from raysearch.predictors import LOSSES, PairwiseRanker
from raysearch.spaces import NB201SpaceConfig, NB201Space

SPACE = NB201Space(NB201SpaceConfig())
JOINT = JointSpace(SPACE, (0.01, 0.5), (1e-5, 1e-2))
_VALUES = random.Random(42)
OP_VALUE = {(key, op): _VALUES.gauss(0, 1) for key, ops in SPACE.choices().items() for op in ops}


def quality(config: dict) -> float:
    """The benchmark's known final quality: additive op values, an edge interaction, an lr optimum at 0.1."""
    arch = sum(OP_VALUE[key, config[key]] for key in SPACE.choice_keys)
    interaction = 1.0 if config["edge_1_0"] == config["edge_3_2"] == "nor_conv_3x3" else 0.0
    return arch + interaction - (math.log10(config["lr"]) + 1.0) ** 2


def accuracy(config: dict, epochs: int) -> float:
    """Learning curves that keep their order and flatten: accuracy at `epochs`."""
    return quality(config) * (1.0 - math.exp(-epochs / 3.0))


def ranker(seed: int = 0, loss: str = "logistic") -> PairwiseRanker:
    return PairwiseRanker(JOINT.num_features, hidden=32, epochs=150, lr=0.01, loss=loss, seed=seed)


def features(configs) -> torch.Tensor:
    return torch.tensor([JOINT.features(c) for c in configs])


def held_out(n: int = 300, seed: int = 123) -> list[dict]:
    rng = random.Random(seed)
    return [JOINT.sample(rng) for _ in range(n)]


def train_loop(nosh: RankNosh, seen: dict[int, list[int]] | None = None, steps: int | None = None) -> dict[int, list[int]]:
    """Trains (one epoch at a time) whatever the pyramid asks for, `steps` epochs or to the end; returns each
    member's epoch sequence (`seen`: those of members handed out before)."""
    seen = {} if seen is None else {i: list(e) for i, e in seen.items()}
    while steps is None or steps > 0:
        steps = None if steps is None else steps - 1
        while (taken := nosh.take()) is not None:
            seen[taken[0]] = []
        runnable = [i for i in seen if nosh.runnable(i)]
        if not runnable:
            assert nosh.finished and not nosh.queue
            return seen
        index = runnable[0]
        epochs = nosh.members[index].epochs + 1  # continues where it paused: never restarts
        seen[index].append(epochs)
        nosh.record(index, epochs, accuracy(nosh.members[index].config, epochs))
    return seen


def nosh(budget: int = 80, seed: int = 0, proxy: int = 30, **kwargs) -> RankNosh:
    rng = random.Random(seed + 1000)
    proxied = [(c, quality(c) + rng.gauss(0, 1.0)) for c in (JOINT.sample(rng) for _ in range(proxy))]
    options = dict(level_epochs=(1, 3, 9), promote_fraction=0.5, proposals=6, candidates=200) | kwargs
    return RankNosh(JOINT, budget_epochs=budget, ranker=ranker(seed), seed=seed, proxy_scored=proxied, **options)


@pytest.mark.parametrize("loss", LOSSES)
def test_ranker_learns_an_order_from_pairs_only(loss):
    train = held_out(80, seed=1)
    truth = [quality(c) for c in train]
    pairs = [(a, b) for a in range(80) for b in range(80) if truth[a] > truth[b]]
    model = ranker(loss=loss).fit(features(train), torch.tensor(pairs))
    test = held_out()
    rho = spearmanr(model.score(features(test)).tolist(), [quality(c) for c in test])[0]
    assert rho > 0.7


def test_ranker_fit_is_seeded_and_leaves_the_global_rng_alone():
    train, pairs = features(held_out(20, seed=1)), torch.tensor([(0, 1), (2, 3), (4, 5)])
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    a = ranker(seed=3).fit(train, pairs).score(train)
    assert torch.equal(torch.rand(1), expected)
    assert torch.equal(a, ranker(seed=3).fit(train, pairs).score(train))
    assert not torch.equal(a, ranker(seed=4).fit(train, pairs).score(train))


def test_pyramid_trains_within_budget_and_never_restarts():
    search = nosh(budget=80)
    seen = train_loop(search)
    for index, epochs in seen.items():
        assert epochs == list(range(1, len(epochs) + 1)), index  # paused, then continued
        assert search.members[index].epochs == search.members[index].target or search.members[index].failed
    spent = sum(len(e) for e in seen.values())
    assert spent == search.committed and 80 - 1 < spent <= 80
    sizes = search.level_sizes()
    assert sizes[0] >= 6 and all(0 < sizes[i + 1] <= math.floor(0.5 * sizes[i]) for i in range(len(sizes) - 1))
    assert search.rounds >= 2 and all(m.level == 0 for m in search.members[:30])  # proxy level never trained


def test_ranking_of_held_out_configurations_beats_random():
    search = nosh(budget=120)
    train_loop(search)
    test = held_out()
    truth = [quality(c) for c in test]
    rho = spearmanr(search.ranker.score(features(test)).tolist(), truth)[0]
    shuffled = truth[:]
    random.Random(0).shuffle(shuffled)
    assert rho > 0.6 > 0.2 > abs(spearmanr(shuffled, truth)[0])
    # and what it proposed after the first round is better than random configurations
    proposed = [m.config for m in search.members[30 + 6:]]
    assert sum(map(quality, proposed)) / len(proposed) > sum(truth) / len(truth) + 1.5


def test_same_seed_same_decisions():
    def trace(seed):
        search = nosh(budget=40, seed=seed)
        train_loop(search)
        return [(m.config, m.epochs) for m in search.members]

    assert trace(0) == trace(0)
    assert trace(0) != trace(1)


def test_pairs_at_the_highest_common_level_and_proxies_only_among_themselves():
    search = nosh(budget=0, proxy=0)  # nothing affordable: an empty pyramid to fill by hand
    assert search.finished
    c = held_out(6)
    search.members = [
        Member(c[0], target=3, epochs=3, level=2, scores={1: 0.2, 2: 0.5}),  # 0: level 2, weak at level 1
        Member(c[1], target=1, epochs=1, level=1, scores={1: 0.9}),  # 1: level 1, best there
        Member(c[2], target=1, epochs=1, level=1, scores={1: 0.1}),  # 2: level 1
        Member(c[3], target=1, epochs=0, failed=True),  # 3: diverged
        Member(c[4], scores={0: 5.0}),  # 4: proxy-only, better proxy score
        Member(c[5], scores={0: 1.0}),  # 5: proxy-only
    ]
    pairs = search.pairs()
    assert set(pairs["trained"]) == {
        (1, 0), (0, 2), (1, 2),  # by accuracy at level 1, the highest both reached (not by level alone)
        (0, 3), (1, 3), (2, 3),  # trained members beat failed ones
    }
    assert pairs["proxy"] == [(4, 5)]  # proxy-only members never meet trained ones


def test_a_failed_member_releases_its_budget_and_is_not_promoted():
    search = nosh(budget=12, proxy=0, proposals=3, level_epochs=(1, 3), promote_fraction=1.0)
    indices = [search.take()[0] for _ in range(3)]
    assert search.committed == 3
    search.fail(indices[0])
    assert search.committed == 2 and not search.runnable(indices[0])
    search.record(indices[1], 1, 0.5)
    search.record(indices[2], 1, 0.4)  # idle now: both survivors are promoted (r = 1), the failed one is not
    assert [search.members[i].target for i in indices] == [1, 3, 3]
    assert search.committed == 2 + 2 * 2


def arch_quality(config: dict) -> float:
    return sum(OP_VALUE[key, config[key]] for key in SPACE.choice_keys)


def anti_proxied(count: int = 30, seed: int = 0) -> list[tuple[dict, float]]:
    """Proxy-scored members as raysearch.baselines.sweep makes them (mid-range HPs), by a proxy that is
    anti-correlated with the architecture's true quality."""
    rng = random.Random(seed + 2000)
    mid = {dim.name: math.sqrt(dim.low * dim.high) for dim in JOINT.hparams}
    configs = [{**JOINT.sample(rng), **mid} for _ in range(count)]
    return [(c, -arch_quality(c) + rng.gauss(0, 0.5)) for c in configs]


def test_the_ranker_learns_from_training_even_when_the_proxy_misleads():
    """Trained evidence dominates: proxy members pair only among themselves, with a small weight, so an
    anti-correlated proxy and the proxy members' shared mid-range HPs cannot turn the ranker around."""
    search = RankNosh(JOINT, level_epochs=(1, 3, 9), promote_fraction=0.5, proposals=6, candidates=200,
                      budget_epochs=120, ranker=ranker(0), seed=0, proxy_scored=anti_proxied())
    train_loop(search)
    test = held_out()
    rho = spearmanr(search.ranker.score(features(test)).tolist(), [quality(c) for c in test])[0]
    assert rho > 0.5, rho


def test_the_first_round_is_a_uniform_sample_of_the_joint_space():
    """As the thesis starts "from a pool of randomly selected architectures": the ranker, fitted on
    proxy pairs alone, proposes from the second round on."""
    search = RankNosh(JOINT, level_epochs=(1, 3, 9), promote_fraction=0.5, proposals=6, candidates=200,
                      budget_epochs=120, ranker=ranker(0), seed=7, proxy_scored=anti_proxied())
    first = [search.take()[1] for _ in range(6)]
    rng = random.Random(7)
    assert first == [JOINT.sample(rng) for _ in range(6)]


def test_a_pyramid_saved_midway_and_loaded_makes_the_same_decisions(tmp_path):
    """The searcher's state file holds plain values and tensors (read with weights_only=True): a pyramid
    saved midway and loaded into a fresh one of the same config continues as the straight run."""
    from raysearch.baselines.state import load_state, save_state

    straight = nosh(budget=40)
    expected = train_loop(straight)
    first = nosh(budget=40)
    seen = train_loop(first, steps=10)
    save_state(str(tmp_path / "state.pt"), first.state_dict())
    second = nosh(budget=40)
    assert second.committed < first.committed
    second.load_state_dict(load_state(str(tmp_path / "state.pt")))
    assert train_loop(second, seen) == expected
    assert [(m.config, m.epochs, m.scores) for m in second.members] == [
        (m.config, m.epochs, m.scores) for m in straight.members]
