"""`raysearch sweep`: Ray Tune over a differentiable search's own meta-hyper-parameters.

The config's `sweep:` section (raysearch.config.SweepConfig) names dotted
fields and their distributions. Here they become a `MetaSpace` (one
raysearch.joint dimension per field, so the baselines' converters and builders
in raysearch.baselines.sweep serve it too), the Tune parts of the chosen
algorithm (`SWEEPERS`: random, ASHA or BOHB, as in the baselines table, on the
searches' per-epoch `sweep.metric`), how many searches fit at once, and the
end-of-sweep table. Each trial is one whole search (trainables/sweep.py); the
phase itself is raysearch.phases.meta_sweep.
"""

from __future__ import annotations

import json

from raysearch.config import ExperimentConfig, SweepParam, apply_fields
from raysearch.joint import Categorical, IntUniform, LogUniform, Uniform
from raysearch.search import planned_epochs


def _scalar_kind(values) -> str | None:
    """"str" or "number" when every choice is one (Tune and ConfigSpace take them as they are), else None."""
    if all(isinstance(v, str) for v in values):
        return "str"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "number"
    return None


def _plain(value):
    """Tuples as lists, numpy scalars (Tune's samples) as Python numbers: JSON- and YAML-ready."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


class MetaSpace:
    """The swept fields as dimensions, and a trial's Tune config <-> the fields' values.

    A trial's Tune config is {dotted field: value}, e.g. {"search.tau": 5.0}.
    Choices that are not all strings or all numbers (lists such as
    `search.lr_multipliers`, booleans, null) travel as their JSON text, which
    ConfigSpace (BOHB) can hold and MLflow shows as written; `values` turns
    them back.
    """

    def __init__(self, params: tuple[SweepParam, ...]):
        self.params = tuple(params)
        self._decode: dict[str, dict] = {}  # field -> {JSON text: value} for choices that travel as text
        dims = []
        for p in self.params:
            if p.kind == "choice":
                if _scalar_kind(p.values) is None:
                    self._decode[p.field] = {json.dumps(v): v for v in p.values}
                    dims.append(Categorical(p.field, tuple(self._decode[p.field])))
                else:
                    dims.append(Categorical(p.field, p.values))
            else:
                kind = {"uniform": Uniform, "loguniform": LogUniform, "randint": IntUniform}[p.kind]
                dims.append(kind(p.field, *p.values))
        self.dims = tuple(dims)

    @property
    def fields(self) -> list[str]:
        return [p.field for p in self.params]

    def values(self, trial_config: dict) -> dict:
        """{dotted field: value} of a trial (choices decoded, lists as lists)."""
        out = {}
        for name in self.fields:
            value = trial_config[name]
            if name in self._decode:
                value = self._decode[name][value]
            out[name] = _plain(value)
        return out

    def experiment(self, base: dict, trial_config: dict) -> dict:
        """The experiment dict one search runs: `base` (no sweep section) with the trial's values set."""
        return apply_fields(base, self.values(trial_config))


# A sharded search's trial computes nothing: it waits for its Train workers and passes their reports on.
# It reserves memory for its process but no CPU or GPU, so a search whose workers wait for a placement
# holds nothing another search's workers need (a Train worker group is placed all at once or not at
# all). With a CPU each, two searches restarted onto the one node a node loss left took both its CPUs
# and waited for their workers forever (tests/test_node_loss.py).
SHARDED_TRIAL_MEMORY = 512 * 2**20


def tune_resources(config: ExperimentConfig, sharded: bool) -> dict:
    """What Tune reserves for a trial of `config`: `ray.cpus_per_trial` and `ray.gpus_per_trial`, or, for
    the trial of a search `sharded` over `ray.workers` > 1, only SHARDED_TRIAL_MEMORY."""
    r = config.ray
    if sharded and r.workers > 1:
        return {"cpu": 0, "gpu": 0, "memory": SHARDED_TRIAL_MEMORY}
    return {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial}


def trial_resources(config: ExperimentConfig) -> tuple[float, float]:
    """(CPUs, GPUs) one search takes: its trial's, or its Ray Train workers' when it is sharded."""
    r = config.ray
    if r.workers > 1:
        return r.workers * r.cpus_per_worker, r.workers * r.gpus_per_worker
    return r.cpus_per_trial, r.gpus_per_trial


def concurrency(config: ExperimentConfig) -> int:
    """Searches run at once: `sweep.max_concurrent`, capped by what the Ray cluster holds, so that a
    sharded search's workers always find their resources (Tune reserves none for them)."""
    from raysearch.baselines.sweep import trial_slots

    slots = trial_slots(*trial_resources(config))
    return min(config.sweep.max_concurrent or slots, slots)


def max_epochs(config: ExperimentConfig) -> int:
    """The most epochs a search of the sweep can report (search plus selection epochs, which some swept
    fields change): the schedulers' max_t. Epoch counts grow with each field, so bounds suffice."""
    most = planned_epochs(config.without_sweep())
    for p in config.sweep.params:
        for value in p.values:
            most = max(most, planned_epochs(config.without_sweep({p.field: value})))
    return most


def _random(config, space: MetaSpace, max_t: int, limit: int):
    from ray.tune.schedulers import FIFOScheduler

    from raysearch.baselines.sweep import sampler, to_tune

    return sampler(config.seed, limit), FIFOScheduler(), to_tune(space.dims)


def _asha(config, space: MetaSpace, max_t: int, limit: int):
    from raysearch.baselines.sweep import asha_scheduler, sampler, to_tune

    sweep = config.sweep
    return (sampler(config.seed, limit), asha_scheduler(max_t, sweep.grace_period, sweep.reduction_factor),
            to_tune(space.dims))


def _bohb(config, space: MetaSpace, max_t: int, limit: int):
    from raysearch.baselines.sweep import bohb_parts

    sweep = config.sweep
    searcher, scheduler = bohb_parts(space.dims, config.seed, max_t, sweep.reduction_factor, limit,
                                     sweep.metric, sweep.mode)
    return searcher, scheduler, {}


# sweep.algorithm -> (config, MetaSpace, max_t, concurrency) -> (search_alg, scheduler, param_space)
SWEEPERS = {"random": _random, "asha": _asha, "bohb": _bohb}


def build_parts(config: ExperimentConfig, space: MetaSpace, max_t: int, limit: int):
    """The `raysearch.baselines.sweep.TuneParts` of the sweep: `num_samples` searches, at most `limit` at once."""
    from raysearch.baselines.sweep import TuneParts

    sweep = config.sweep
    search_alg, scheduler, param_space = SWEEPERS[sweep.algorithm](config, space, max_t, limit)
    # A reused actor saves a process start per search; a sharded search's trial launches its own workers.
    return TuneParts(search_alg, scheduler, param_space, num_samples=sweep.num_samples, metric=sweep.metric,
                     mode=sweep.mode, time_budget_s=config.search.budget_seconds,
                     reuse_actors=config.ray.workers == 1)


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def trial_number(trial_id) -> str:
    """The trial's number in its id (`<experiment>_00004` -> `00004`), as the progress lines show it."""
    return str(trial_id).rsplit("_", 1)[-1]


def entries(rows: list[dict], metric: str, scheduler: str, best_trial: str | None) -> list[dict]:
    """The end-of-sweep table's entries from the searches' results.parquet rows (raysearch.phases.row)."""
    out = []
    for r in rows:
        metrics = json.loads(r["metrics"])
        status = ("failed" if r["status"] == "ERROR" else
                  "finished" if metrics.get("search_done") else f"stopped by {scheduler}")
        out.append({"trial": trial_number(r["trial_id"]), "values": json.loads(r["config"]), "epochs": r["epochs"],
                    "metric": metrics.get(metric), "status": status, "best": r["trial_id"] == best_trial})
    return out


def table(entries: list[dict], fields: list[str], metric: str) -> str:
    """The end-of-sweep table: one row per search, with its sampled values, epochs, metric and status.

    `entries`: {"trial": number, "values": {field: value}, "epochs", "metric", "status", "best"}.
    """
    header = ["trial", *fields, "epochs", metric, "status"]
    lines = [[e["trial"], *(_text(e["values"].get(f, "-")) for f in fields), str(e["epochs"] or 0),
              "-" if e["metric"] is None else f"{e['metric']:.4f}", e["status"] + ("  <- best" if e["best"] else "")]
             for e in entries]
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in [header, *lines])
