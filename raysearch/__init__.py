"""raysearch: joint architecture, hyper-parameter and augmentation search on Ray Tune.

    import raysearch
    summary = raysearch.run(raysearch.load_config("configs/autohas_nb201_digits.yaml", ["search.epochs=5"]))
"""

from raysearch.config import ConfigError, ExperimentConfig, load_config

__all__ = ["ConfigError", "ExperimentConfig", "Summary", "load_config", "resume", "run", "sweep"]


def __getattr__(name):
    # Ray and MLflow load only when a run starts, so `load_config` stays light.
    if name in ("run", "resume", "sweep"):
        from raysearch import runner

        return getattr(runner, name)
    if name == "Summary":
        from raysearch.results import Summary

        return Summary
    raise AttributeError(f"module 'raysearch' has no attribute {name!r}")
