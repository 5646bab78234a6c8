"""Memory accounting that works on CPU, where torch has no allocator statistics, and the estimate of one
training step's memory that preflight compares with what a worker has.

The step's memory is estimated without allocating the model: the network is
built on torch's meta device (parameters are counted, and the build is stopped
as soon as they alone exceed a limit), then two forwards at 2 and 3 examples
count the bytes autograd saves for backward (per example, and fixed). Small
models run these forwards on CPU with zero weights (fast), large ones on meta
(no storage at all). The estimate is parameters x 4 (weights, gradients, two
optimizer moments) + saved activations at the per-worker batch + the dataset
every worker holds; a second-order DARTS step holds more.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from raysearch.algorithms import ALGORITHMS
from raysearch.config import ConfigError, ExperimentConfig
from raysearch.data import load_splits
from raysearch.spaces import GenotypeError, build_space

OPTIMIZER_FACTOR = 4  # bytes held per parameter byte: weights, gradients, two optimizer moments (Adam)
MAX_MODULES = 50_000  # 10x the DARTS search supernet (8 cells: ~5k); building this many takes seconds
REAL_FORWARD_BYTES = 256 * 2**20  # up to this many parameter bytes the counting forwards run on CPU (fast)


def saved_tensor_bytes(fn, exclude=frozenset()) -> int:
    """Bytes of distinct tensors autograd saves for backward while `fn()` runs, skipping storages in
    `exclude` (ids as `storage_id` gives them, e.g. the weights').

    This is the memory a training step holds beyond its inputs and weights, and
    what would grow if a step kept one weight copy per basis value. Tensors are
    told apart by their storage, which meta tensors also have (they have no
    address), so the count works on the meta device too.
    """
    seen, alive, total = set(), [], 0

    def pack(t):
        nonlocal total
        storage = storage_id(t)
        key = (storage, t.storage_offset(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if storage not in exclude and key not in seen:
            seen.add(key)
            alive.append(t)  # a freed storage could be reused and miscounted as seen
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def storage_id(t: torch.Tensor) -> int:
    """The identity of a tensor's storage (shared by its views), on any device, meta included."""
    return t.untyped_storage()._cdata


@dataclass(frozen=True)
class SplitInfo:
    train: int  # examples in search-train
    val: int  # examples in search-val
    shape: object  # raysearch.spaces.DataShape
    nbytes: int  # bytes of all three splits (every trial and worker process holds them)


@functools.lru_cache(maxsize=4)
def split_info(data) -> SplitInfo:
    """Sizes of the splits `data` makes, cached."""
    # Only the sizes are kept: caching the tensors would hold a whole dataset in the driver.
    splits = load_splits(data)
    nbytes = sum(t.numel() * t.element_size() for pair in (splits.train, splits.val, splits.test) for t in pair)
    return SplitInfo(len(splits.train[0]), len(splits.val[0]), splits.shape, nbytes)


@dataclass(frozen=True)
class StepMemory:
    """Bytes one worker holds for one training step of the space's largest network."""

    what: str  # "the supernet" or "the space's largest network"
    batch: int  # examples per worker
    parameters: int  # bytes of the weights
    per_example: int  # bytes autograd saves for backward, per example
    fixed: int  # bytes autograd saves independently of the batch (weights excluded)
    data: int  # bytes of the dataset splits
    complete: bool = True  # False: the build stopped once the parameters alone exceeded the limit

    def total(self, batch: int | None = None) -> int:
        batch = self.batch if batch is None else batch
        return OPTIMIZER_FACTOR * self.parameters + self.fixed + self.data + self.per_example * batch

    def max_batch(self, limit: float) -> int:
        """Examples per worker that fit `limit` bytes."""
        room = limit - self.total(0)
        return int(room // self.per_example) if self.per_example else (1 << 62 if room >= 0 else 0)


class _TooLarge(Exception):
    def __init__(self, reason: str, parameters: int = 0):
        super().__init__(reason)
        self.parameters = parameters


@contextmanager
def _build_guard(param_limit: float | None):
    """Stop a network's construction when it has too many modules, or when its parameters alone exceed
    `param_limit` bytes (x OPTIMIZER_FACTOR), instead of building it to the end."""
    from torch.nn.modules import module as torch_module

    counts = {"modules": 0, "bytes": 0}

    def on_module(parent, name, child):
        counts["modules"] += 1
        if counts["modules"] > MAX_MODULES:
            raise _TooLarge(f"it has more than {MAX_MODULES:,} modules")

    def on_parameter(parent, name, param):
        if param is not None:
            counts["bytes"] += param.numel() * param.element_size()
            if param_limit is not None and OPTIMIZER_FACTOR * counts["bytes"] > param_limit:
                raise _TooLarge("parameters", counts["bytes"])

    handles = [torch_module.register_module_module_registration_hook(on_module),
               torch_module.register_module_parameter_registration_hook(on_parameter)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _measure(build, space, shape, mixed: bool, param_limit: float | None) -> tuple[int, int, int]:
    """(parameter bytes, saved bytes per example, fixed saved bytes) of the network `build()` makes."""
    with _build_guard(param_limit), torch.device("meta"):
        net = build()
    parameters = sum(p.numel() * p.element_size() for p in net.parameters())
    device = "meta"
    if parameters <= REAL_FORWARD_BYTES:
        # Zero CPU weights: no init cost and none of the meta kernels' slow first call (not to_empty's
        # empty_like, which takes that path; nor uninitialised memory, whose denormals crawl).
        device = "cpu"
        net = net._apply(lambda t: torch.zeros(t.shape, dtype=t.dtype))
    net.train()
    weights = {storage_id(p) for p in net.parameters()}

    def saved(n: int) -> int:
        x = torch.zeros(n, shape.in_channels, shape.image_size, shape.image_size, device=device)
        if not mixed:
            return saved_tensor_bytes(lambda: net(x), weights)
        # The full mixture (every op of every edge computed): the largest step of any relaxation.
        mix = {name: torch.full(s, 1.0 / s[1], device=device, requires_grad=True)
               for name, s in space.encoding_shapes().items()}
        return saved_tensor_bytes(lambda: net(x, mix, None), weights)

    # Two batch sizes separate what grows with the batch from what does not (2, not 1: batch norm
    # needs two values per channel when a feature map is 1x1). One thread: the ops are tiny, and
    # several threads on a busy machine wait for each other far longer than they compute.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        two, three = saved(2), saved(3)
    finally:
        torch.set_num_threads(threads)
    per_example = max(three - two, 0)
    return parameters, per_example, max(two - 2 * per_example, 0)


def _uniform_genotypes(space):
    """The space's genotypes that use one op everywhere (as far as its derivation allows), one per op."""
    width = max(len(ops) for _, ops in space.encodings.values())
    found = {}
    for k in range(width):
        weights = {}
        for name, (rows, ops) in space.encodings.items():
            w = torch.zeros(len(rows), len(ops))
            w[:, min(k, len(ops) - 1)] = 1.0
            weights[name] = w
        try:
            genotype = space.derive(weights)
        except GenotypeError:
            continue
        found.setdefault(str(genotype), genotype)
    return list(found.values())


def largest_space_field(config: ExperimentConfig) -> str:
    """The space option furthest above its default: the likely cause of a space that is too large."""
    options, best, ratio = config.space.options, None, -math.inf
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        default = f.default if isinstance(f.default, (int, float)) and f.default else 1
        if value / default > ratio:
            best, ratio = f.name, value / default
    return f"space.{best}" if best else "space.name"


def _options(config: ExperimentConfig) -> str:
    values = dataclasses.asdict(config.space.options)
    return ", ".join(f"space.{k} = {v}" for k, v in values.items())


def estimate_step_memory(config: ExperimentConfig, param_limit: float | None = None) -> StepMemory:
    """Memory of one training step at the per-worker batch, for the supernet of a differentiable search,
    or for the largest one-op-everywhere network of the space for a baseline (which trains fixed
    networks). With `param_limit`, the build stops once 4 x the parameters exceed it: the result is
    then incomplete, its `parameters` a lower bound. A space that cannot be built is a ConfigError.
    Cached per config (`run` checks before Ray starts, and again against the cluster)."""
    try:
        hash((config, param_limit))
    except TypeError:  # a config holding a mutable value: no cache
        return _estimate(config, param_limit)
    return _cached_estimate(config, param_limit)


def _estimate(config: ExperimentConfig, param_limit: float | None) -> StepMemory:
    info = split_info(config.data)
    batch = config.search.batch_size // config.ray.workers
    field = largest_space_field(config)
    searched = config.search.algorithm in ALGORITHMS
    what = "the supernet" if searched else "the space's largest network"
    try:
        space = build_space(config.space, info.shape)
        if searched:
            sizes = [_measure(space.supernet, space, info.shape, True, param_limit)]
        else:
            sizes = [_measure(functools.partial(space.network, g), space, info.shape, False, param_limit)
                     for g in _uniform_genotypes(space)]
    except _TooLarge as err:
        if err.parameters:
            return StepMemory(what, batch, err.parameters, 0, 0, info.nbytes, complete=False)
        raise ConfigError(f"{field}: this {config.space.name} space is too large to build ({err}); "
                          f"{_options(config)}") from None
    except (RuntimeError, ValueError, OverflowError, MemoryError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{field}: this {config.space.name} space cannot be built ({reason}); "
                          f"{_options(config)}") from None
    parameters, per_example, fixed = max(sizes, key=lambda s: OPTIMIZER_FACTOR * s[0] + s[1] * batch + s[2])
    return StepMemory(what, batch, parameters, per_example, fixed, info.nbytes)


_cached_estimate = functools.lru_cache(maxsize=16)(_estimate)
