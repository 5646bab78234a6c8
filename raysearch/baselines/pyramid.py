"""RANK-NOSH's decisions (predictor-based search with non-uniform successive halving), in plain Python.

A pyramid of levels: level i holds the configurations trained to
`level_epochs[i-1]` epochs. Nothing is discarded; a promoted configuration
continues its training from where it paused. One round:

1. the pairwise ranker, trained on the pairs the pyramid defines, ranks
   `candidates` random configurations and proposes the best `proposals`;
   they are trained to the first level's epochs (the first round is a
   uniform random sample instead, as the thesis starts "from a pool of
   randomly selected architectures": no training result exists yet);
2. once every configuration has reached its target, the best of each level
   (by accuracy at that level's epochs) are promoted until level i+1 holds
   `promote_fraction` of level i; promoted ones train on, and this repeats
   while something can be promoted;
3. then the ranker is retrained and proposes again,

until the budget of trial-epochs is committed. Configurations scored by a
zero-cost proxy form a bottom level 0 that costs no training.

The ranker's pairs come in two groups. Training evidence: two trained
members compare by accuracy at the highest level both reached (their
learning curves are comparable there, and only there), and a trained member
beats a failed one. Proxy evidence: proxy-only members compare among
themselves by proxy score; they all carry the same mid-range HPs, so these
pairs inform the architecture part only. A proxy member is never paired with
a trained one: that would teach "the proxies' mid-range HPs are bad" and let
the proxy's pairs, far more numerous, decide. Each group's pairs share its
weight: the training group 1, the proxy group `proxy_weight` x the proxy's
agreement with training (the rank correlation between proxy scores and what
a ranker fitted on the training pairs alone says of the proxy members; 0 if
they disagree). A fixed weight is not enough: the MLP fits every pair it is
given, so even a weight of 1e-4 let an anti-correlated proxy turn its
ranking of held-out configurations from ~0.8 to ~0.3 (tests/test_rank_nosh.py).

`RankNosh` only decides. Whoever trains (a Tune scheduler and searcher, or a
plain loop in tests) hands out new configurations with `take()`, trains each
member whose `runnable()` holds, and reports with `record()` or `fail()`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass, field

import torch

from raysearch.joint import JointSpace
from raysearch.predictors import PairwiseRanker


@dataclass
class Member:
    config: dict  # the configuration (joint-space dict)
    target: int = 0  # epochs it should reach now; 0 for proxy-only members
    epochs: int = 0  # epochs trained so far
    level: int = 0  # highest completed level; 0 = not trained (proxy-scored or waiting)
    scores: dict[int, float] = field(default_factory=dict)  # level -> accuracy there (level 0: proxy score)
    failed: bool = False  # its training failed (e.g. diverged)


class RankNosh:
    def __init__(self, joint: JointSpace, level_epochs: tuple[int, ...], promote_fraction: float, proposals: int,
                 candidates: int, budget_epochs: int, ranker: PairwiseRanker, seed: int,
                 proxy_scored: list[tuple[dict, float]] = (), proxy_weight: float = 0.1):
        if list(level_epochs) != sorted(set(level_epochs)) or level_epochs[0] < 1:
            raise ValueError(f"level_epochs must be increasing positive epochs, got {level_epochs}")
        self.joint, self.level_epochs, self.promote_fraction = joint, tuple(level_epochs), promote_fraction
        self.proposals, self.candidates, self.budget_epochs = proposals, candidates, budget_epochs
        self.ranker, self.rng, self.proxy_weight = ranker, random.Random(seed), proxy_weight
        self.proxy_agreement: float | None = None  # at the last ranker fit, if proxy and training pairs existed
        self.members = [Member(dict(config), scores={0: float(score)}) for config, score in proxy_scored]
        self.queue: list[int] = []  # proposed members not handed out yet
        self.committed = 0  # trial-epochs trained or promised
        self.rounds = 0  # proposal rounds so far
        self.finished = False  # nothing left to train within the budget
        self._advance()

    # -- the trainer's side ---------------------------------------------------------------------
    def take(self) -> tuple[int, dict] | None:
        """The next proposed configuration to start training, as (member index, config)."""
        if not self.queue:
            return None
        index = self.queue.pop(0)
        return index, dict(self.members[index].config)

    def runnable(self, index: int) -> bool:
        member = self.members[index]
        return not member.failed and member.epochs < member.target

    def record(self, index: int, epochs: int, accuracy: float) -> None:
        """Member `index` has trained `epochs` epochs in total and scores `accuracy` now."""
        member = self.members[index]
        member.epochs = max(member.epochs, epochs)
        for level, level_epochs in enumerate(self.level_epochs, start=1):
            if level_epochs <= member.epochs and level not in member.scores:
                member.scores[level] = float(accuracy)
                member.level = level
        self._advance_if_idle()

    def fail(self, index: int, epochs: int = 0) -> None:
        """Member `index` failed after `epochs` epochs in total (counted as spent, if more than recorded)."""
        member = self.members[index]
        if not member.failed:
            member.failed, member.epochs = True, max(member.epochs, epochs)
            self.committed -= max(0, member.target - member.epochs)  # promised epochs it will not use
            self._advance_if_idle()

    # -- decisions ----------------------------------------------------------------------------
    def _advance_if_idle(self) -> None:
        trained = (m for m in self.members if m.target)
        if not self.queue and all(m.failed or m.epochs >= m.target for m in trained):
            self._advance()

    def _advance(self) -> None:
        self.finished = not (self._promote() or self._propose())

    def _promote(self) -> bool:
        """Top level first, so a member climbs one level per decision; True if any was promoted."""
        promoted = False
        for level in range(len(self.level_epochs) - 1, 0, -1):  # from `level` to `level + 1`
            step = self.level_epochs[level] - self.level_epochs[level - 1]
            done = [m for m in self.members if not m.failed and m.level >= level]
            above = sum(m.target >= self.level_epochs[level] for m in done)
            waiting = sorted((m for m in done if m.target < self.level_epochs[level]),
                             key=lambda m: m.scores[level], reverse=True)
            for member in waiting[: max(0, math.floor(self.promote_fraction * len(done)) - above)]:
                if self.committed + step > self.budget_epochs:
                    break
                member.target, self.committed, promoted = self.level_epochs[level], self.committed + step, True
        return promoted

    def _propose(self) -> bool:
        """Retrain the ranker and queue the best unseen of `candidates` random configurations."""
        first = self.level_epochs[0]
        count = min(self.proposals, (self.budget_epochs - self.committed) // first)
        if count <= 0:
            return False
        members = self.members
        seen = {_key(m.config) for m in members}
        pool = [c for c in (self.joint.sample(self.rng) for _ in range(self.candidates)) if _key(c) not in seen]
        if self.rounds == 0:  # a uniform sample: there is no training evidence to rank by
            best = list(range(min(count, len(pool))))
        else:
            self._fit_ranker()
            scores = self.ranker.score(torch.tensor([self.joint.features(c) for c in pool])).tolist()
            best = sorted(range(len(pool)), key=lambda i: -scores[i])[:count]
        for i in best:
            self.queue.append(len(members))
            members.append(Member(pool[i], target=first))
        self.committed += len(best) * first
        self.rounds += 1
        return bool(best)

    def _fit_ranker(self) -> None:
        groups = self.pairs()
        trained, proxy = groups["trained"], groups["proxy"]
        features = torch.tensor([self.joint.features(m.config) for m in self.members])
        if not trained:  # no training evidence (every trained member failed): the proxy alone
            self.ranker.fit(features, torch.tensor(proxy, dtype=torch.long).reshape(-1, 2))
            return
        self.ranker.fit(features, torch.tensor(trained, dtype=torch.long))
        if not proxy or not self.proxy_weight:
            return
        scored = [i for i, m in enumerate(self.members) if m.target == 0]
        self.proxy_agreement = rank_correlation(self.ranker.score(features[scored]),
                                                torch.tensor([self.members[i].scores[0] for i in scored]))
        weight = self.proxy_weight * max(0.0, self.proxy_agreement)
        if weight > 0:
            weights = [1.0 / len(trained)] * len(trained) + [weight / len(proxy)] * len(proxy)
            self.ranker.fit(features, torch.tensor(trained + proxy, dtype=torch.long), torch.tensor(weights))

    def pairs(self) -> dict[str, list[tuple[int, int]]]:
        """(winner, loser) member indices by group. "trained": two trained members by accuracy at the
        highest level both reached, and trained members over failed ones; "proxy": proxy-only members
        among themselves, by proxy score."""
        trained = [i for i, m in enumerate(self.members) if m.level >= 1 and not m.failed]
        proxy = [i for i, m in enumerate(self.members) if m.target == 0]
        failed = [i for i, m in enumerate(self.members) if m.failed]

        def by(level_of, group):
            out = []
            for a, b in itertools.combinations(group, 2):
                level = level_of(self.members[a], self.members[b])
                sa, sb = self.members[a].scores[level], self.members[b].scores[level]
                if sa != sb:
                    out.append((a, b) if sa > sb else (b, a))
            return out

        beaten = [(a, b) for a in trained for b in failed]
        return {"trained": by(lambda a, b: min(a.level, b.level), trained) + beaten, "proxy": by(lambda a, b: 0, proxy)}

    def state_dict(self) -> dict:
        """What changes as the pyramid runs, in types `torch.load(weights_only=True)` reads (no pickled
        objects: loading it runs no code); the space, levels and budget come from the config."""
        return {"members": [dataclasses.asdict(m) for m in self.members], "queue": list(self.queue),
                "committed": self.committed, "rounds": self.rounds, "finished": self.finished,
                "proxy_agreement": self.proxy_agreement, "rng": self.rng.getstate(),
                "ranker": self.ranker.net.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.members = [Member(**m) for m in state["members"]]
        self.queue, self.committed, self.rounds = list(state["queue"]), state["committed"], state["rounds"]
        self.finished, self.proxy_agreement = state["finished"], state["proxy_agreement"]
        self.rng.setstate(state["rng"])
        self.ranker.net.load_state_dict(state["ranker"])

    def level_sizes(self) -> list[int]:
        """How many live members completed each level (level 1 first)."""
        live = [m for m in self.members if not m.failed]
        return [sum(m.level >= level for m in live) for level in range(1, len(self.level_epochs) + 1)]


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-d tensors (ties broken by position)."""
    ranks = [t.argsort().argsort().double() for t in (a, b)]
    ra, rb = (r - r.mean() for r in ranks)
    norm = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / norm) if norm else 0.0


def _key(config: dict) -> tuple:
    return tuple(sorted(config.items()))
