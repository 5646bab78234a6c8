"""`raysearch compare`: differentiable searches and black-box baselines at an equal budget of search seconds.

raysearch.compare.config reads a comparison (methods, shared sections, budget,
seeds), raysearch.compare.budget picks a phase's incumbent at any point of its
budget, raysearch.compare.report writes and renders comparison.parquet (table,
plots) and raysearch.compare.run runs it on Ray (imported on demand: the
others need no Ray).
"""

from raysearch.compare.config import CompareConfig, Comparison, load_comparison

__all__ = ["CompareConfig", "Comparison", "load_comparison"]
