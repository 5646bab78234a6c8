"""One search of a meta-sweep as a Ray Tune function trainable: the sampled meta-hyper-parameters set
in the experiment, then the search itself (trainables/search.py, unchanged).

    raysearch sweep configs/sweep_autohas_digits.yaml

Tune config: the sampled values only, {dotted field: value}, e.g.
`{"search.tau": 5.0, "search.encoding_lr": 0.003, "search.lr_multipliers": "[0.5, 1, 2]"}`
(list choices travel as JSON text, see raysearch.meta_sweep.MetaSpace). The
experiment (`ExperimentConfig.to_dict()` without its sweep section) and the
MetaSpace come through `tune.with_parameters` (Ray's object store), so every
trial's config, MLflow params and results hold only what was sampled.
Reports, checkpoints and resumes exactly like a search under `raysearch run`.
"""

from __future__ import annotations

from trainables.search import search_trainable


def sweep_trainable(config: dict, experiment: dict, space) -> None:
    search_trainable({"experiment": space.experiment(experiment, config)})
