"""The incumbent of a search phase at any point of its budget, from what its trials reported and when.

A record is one reported epoch of one trial: {"t": seconds since the phase
began, "trial": trial id, "epoch": the trial's epochs so far, "val": its
search-val accuracy, "genotype", "hparams", and for a search whose trained model is the result (DHA)
"test": that model's test accuracy then}. A differentiable search has one
trial, whose derived configuration at each epoch is the record's; a baseline's
trials each train one configuration. The rule is the one the phases use at the
end (raysearch.phases.sweep): among the trials' latest records by then, the
best search-val accuracy of those that reached the most epochs (the top
fidelity, as BOHB's incumbent is chosen); for one trial, its latest epoch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Incumbent:
    """What a phase would have returned had it been stopped at `seconds`."""

    genotype: str  # the architecture, in the space's string format
    hparams: dict  # lr (a number or a per-step list) and weight_decay, as the phase derives them
    val_accuracy: float | None  # search-val accuracy behind the choice
    seconds: float  # when the chosen record was reported (seconds since the phase began)
    trial_epochs: int  # epochs every trial had reported by the budget point: the cost in trial-epochs
    test_accuracy: float | None = None  # a final-model search's (DHA) model's test accuracy then; else None


def incumbent(records: list[dict], at: float) -> Incumbent | None:
    """The incumbent at `at` seconds (None: no trial had reported an epoch by then)."""
    latest: dict[str, dict] = {}
    for record in records:
        if record["t"] <= at:
            latest[record["trial"]] = record  # records arrive in time order
    if not latest:
        return None
    top = max(r["epoch"] for r in latest.values())
    best = max((r for r in latest.values() if r["epoch"] == top), key=lambda r: r["val"] or 0.0)
    return Incumbent(best["genotype"], best["hparams"], best["val"], best["t"], sum(r["epoch"] for r in latest.values()),
                     best.get("test"))
