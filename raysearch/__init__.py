"""raysearch: joint architecture, hyper-parameter and augmentation search on Ray Tune.

    import raysearch
    summary = raysearch.run(raysearch.load_config("configs/autohas_nb201_digits.yaml", ["search.epochs=5"]))
"""

__all__ = ["ConfigError", "ExperimentConfig", "Summary", "build_network", "load_config", "load_model", "resume", "run",
           "sweep"]


def __getattr__(name):
    # Nothing loads with the package itself: every Ray worker process (queues and other helper actors
    # too) imports raysearch.worker_logs as its set-up hook, and torch would cost each of them seconds
    # and hundreds of MB there. Ray and MLflow load only when a run starts.
    if name in ("ConfigError", "ExperimentConfig", "load_config"):
        from raysearch import config

        return getattr(config, name)
    if name in ("run", "resume", "sweep"):
        from raysearch import runner

        return getattr(runner, name)
    if name in ("build_network", "load_model"):
        from raysearch import model

        return getattr(model, name)
    if name == "Summary":
        from raysearch.results import Summary

        return Summary
    raise AttributeError(f"module 'raysearch' has no attribute {name!r}")
