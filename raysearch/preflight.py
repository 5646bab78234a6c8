"""Preflight: refuse a config that cannot run, before any trial starts, with one error naming the field.

Two stages, both raising `raysearch.config.ConfigError` (the CLI exits 2):

- `check_config(config, address)`, without Ray (`raysearch validate`, and `run`/`resume`
  before Ray starts): the batch fits the splits it is drawn from, the space can be
  built, and one step's memory fits the memory a worker can have. For a local run
  that is this machine's RAM; when a cluster address is known the comparison waits
  for `check_cluster`, which sees the cluster's nodes.
- `check_cluster(config)`, after `ray.init`: every resource bundle of a trial fits
  some node (present, or of a type the autoscaler can add), the trial as a whole fits
  the cluster, and one step's memory fits a node that can host it. Otherwise Tune
  would wait forever for resources that never come.

The memory of one step is estimated without allocating the model: the network is
built on torch's meta device (parameters are counted, and the build is stopped as
soon as they alone exceed the limit), then two forwards at 2 and 3 examples count
the bytes autograd saves for backward (per example, and fixed). Small models run
these forwards on CPU with zero weights (fast), large ones on meta (no storage at
all). The estimate is parameters x 4 (weights, gradients, two optimizer moments)
+ saved activations at the per-worker batch + the dataset every worker holds; a
second-order DARTS step holds more, and the limits are generous (a machine's whole
RAM, a node's whole Ray memory), so only configs far out of reach are refused.
Only host memory is compared: the driver cannot see a GPU's memory, so a step
that fits the host may still exceed a small GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from raysearch.config import ConfigError, ExperimentConfig

__all__ = ["ClusterView", "NodeType", "StepMemory", "check_cluster", "check_config", "check_resources", "cluster_view",
           "estimate_step_memory"]

OPTIMIZER_FACTOR = 4  # bytes held per parameter byte: weights, gradients, two optimizer moments (Adam)
MAX_MODULES = 50_000  # 10x the DARTS search supernet (8 cells: ~5k); building this many takes seconds
REAL_FORWARD_BYTES = 256 * 2**20  # up to this many parameter bytes the counting forwards run on CPU (fast)
EPS = 1e-9


# ---------------------------------------------------------------------------------------------- sizes


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _count(x: float, what: str) -> str:
    return f"{_num(x)} {what}" + ("" if x == 1 else "s")


@dataclass(frozen=True)
class _SplitInfo:
    train: int  # examples in search-train
    val: int  # examples in search-val
    shape: object  # raysearch.spaces.DataShape
    nbytes: int  # bytes of all three splits (every trial and worker process holds them)


@functools.lru_cache(maxsize=4)
def _split_info(data) -> _SplitInfo:
    # Only the sizes are kept: caching the tensors would hold a whole dataset in the driver.
    from raysearch.data import load_splits

    splits = load_splits(data)
    nbytes = sum(t.numel() * t.element_size() for pair in (splits.train, splits.val, splits.test) for t in pair)
    return _SplitInfo(len(splits.train[0]), len(splits.val[0]), splits.shape, nbytes)


def _check_batch(config: ExperimentConfig, info: _SplitInfo) -> None:
    """The batch must fit every split it is drawn from (a BatchStream of fewer examples has no batch)."""
    from raysearch.algorithms import ALGORITHMS

    drawn = [("search-train", info.train)]  # weights (searches), or a baseline trial's training
    if config.search.algorithm in ALGORITHMS:
        drawn.append(("search-val", info.val))  # encoding steps; a baseline evaluates val in chunks instead
    if config.retrain.enabled:
        drawn.append(("search-train + search-val", info.train + info.val))  # the retraining
    batch = config.search.batch_size
    for name, size in drawn:
        if batch > size:
            raise ConfigError(f"search.batch_size: {batch} is larger than {name} ({size} examples)")


# --------------------------------------------------------------------------------------------- memory


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


def _saved_bytes(fn, exclude: set) -> int:
    """Bytes of distinct tensors autograd saves while `fn()` runs, skipping storages in `exclude` (the
    weights). Tensors are told apart by their storage object, which meta tensors also have (they have no
    address; raysearch.memory keys on addresses, so it needs real tensors)."""
    import torch

    seen, alive, total = set(), [], 0

    def pack(t):
        nonlocal total
        storage = t.untyped_storage()._cdata
        key = (storage, t.storage_offset(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if storage not in exclude and key not in seen:
            seen.add(key)
            alive.append(t)  # a freed storage could be reused and miscounted as seen
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def _measure(build, space, shape, mixed: bool, param_limit: float | None) -> tuple[int, int, int]:
    """(parameter bytes, saved bytes per example, fixed saved bytes) of the network `build()` makes."""
    import torch

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
    weights = {p.untyped_storage()._cdata for p in net.parameters()}

    def saved(n: int) -> int:
        x = torch.zeros(n, shape.in_channels, shape.image_size, shape.image_size, device=device)
        if not mixed:
            return _saved_bytes(lambda: net(x), weights)
        # The full mixture (every op of every edge computed): the largest step of any relaxation.
        mix = {name: torch.full(s, 1.0 / s[1], device=device, requires_grad=True)
               for name, s in space.encoding_shapes().items()}
        return _saved_bytes(lambda: net(x, mix, None), weights)

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
    import torch

    from raysearch.spaces import GenotypeError

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


def _space_field(config: ExperimentConfig) -> str:
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
    from raysearch.algorithms import ALGORITHMS
    from raysearch.spaces import build_space

    info = _split_info(config.data)
    batch = config.search.batch_size // config.ray.workers
    field = _space_field(config)
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


def _options(config: ExperimentConfig) -> str:
    values = dataclasses.asdict(config.space.options)
    return ", ".join(f"space.{k} = {v}" for k, v in values.items())


def _check_memory(config: ExperimentConfig, memory: StepMemory, limit: float, where: str) -> None:
    need = memory.total()
    if need <= limit:
        return
    per = f"{memory.batch} examples per worker"
    if not memory.complete:  # the build stopped on the parameters
        raise ConfigError(f"{_space_field(config)}: {memory.what} needs more than ~{_bytes(need)} for its "
                          f"parameters, gradients and optimizer state alone; a worker has at most "
                          f"{_bytes(limit)} ({where})")
    if memory.total(1) > limit:  # even one example does not fit: the space is too large
        raise ConfigError(
            f"{_space_field(config)}: {memory.what} needs ~{_bytes(need)} for one step at {per}; a worker "
            f"has at most {_bytes(limit)} ({where}; parameters, gradients and optimizer state "
            f"~{_bytes(OPTIMIZER_FACTOR * memory.parameters)}, activations ~"
            f"{_bytes(memory.fixed + memory.per_example * memory.batch)})")
    fits = memory.max_batch(limit)
    raise ConfigError(
        f"search.batch_size: {memory.what} needs ~{_bytes(need)} for one step at {per}; a worker has at most "
        f"{_bytes(limit)} ({where}); at most {fits} examples per worker fit: lower search.batch_size "
        f"(now {config.search.batch_size}) or raise ray.workers (now {config.ray.workers})")


def _physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_config(config: ExperimentConfig, address: str | None = None) -> StepMemory:
    """The checks that need no Ray; returns the step's memory estimate.

    `address` (or `ray.address`): the run goes to that cluster, whose nodes only
    `check_cluster` sees, so memory is compared there; otherwise against this
    machine's RAM, shared by `ray.workers` workers.
    """
    info = _split_info(config.data)
    _check_batch(config, info)
    if address or config.ray.address:
        return estimate_step_memory(config)
    workers = config.ray.workers
    limit = _physical_memory() / workers
    memory = estimate_step_memory(config, limit)
    where = "this machine's memory" + (f" shared by {workers} workers" if workers > 1 else "")
    _check_memory(config, memory, limit, where)
    return memory


# -------------------------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler can add."""

    name: str
    resources: dict  # resources of one node of this type (CPU, GPU, memory, ...); may be incomplete
    max_count: int  # nodes of this type it may add; -1: no limit


@dataclass(frozen=True)
class ClusterView:
    nodes: tuple  # the total resources of every alive node
    addable: tuple = ()  # NodeType: what the autoscaler can add
    autoscaler: bool = False  # an autoscaler that can add nodes is running (its node types may be unknown)

    @property
    def unknown_types(self) -> bool:
        return self.autoscaler and not self.addable


def _print(message: str) -> None:
    print(message, flush=True)


def _fits(bundle: dict, node: dict) -> bool:
    return all(node.get(k, 0.0) + EPS >= v for k, v in bundle.items() if v > 0)


_READONLY_TYPE = re.compile(r"node_[0-9a-f]{16,}")  # the types a monitor without autoscaling config mirrors


def _autoscaler_running() -> bool:
    """Whether an autoscaler that can add nodes runs: autoscaler v2's flag in the GCS, or the v1 monitor's
    status report naming node types of a launcher config (a cluster without one, e.g. a local
    `ray.init()`, reports one mirrored `node_<id>` type per node, none of which can be added)."""
    import json

    import ray._raylet as raylet
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        v2 = _internal_kv_get(raylet.GCS_AUTOSCALER_V2_ENABLED_KEY.encode(),
                              namespace=raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode())
        if v2 == b"1":
            return True
        status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        report = (json.loads(status) if status else {}).get("autoscaler_report") or {}
    except Exception:  # private interfaces: a change in Ray must not break a run
        return False
    types = {*report.get("active_nodes", {}), *report.get("pending_launches", {}),
             *(report.get("node_type_mapping") or {}).values()}
    return any(not _READONLY_TYPE.fullmatch(t) for t in types)


def _types_from_gcs() -> list[NodeType]:
    """Node groups an autoscaler reported to the GCS (Ray's ClusterConfig; Ray 2.60's launcher does not
    report one, KubeRay and later autoscalers may)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:
        return []
    if config is None:
        return []
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, g.max_count)
            for g in config.node_group_configs if g.max_count != 0]


def _types_from_launcher_config(path: Path = Path("~/ray_bootstrap_config.yaml")) -> list[NodeType]:
    """Node types of the autoscaling config `ray up` puts on the head (`--autoscaling-config`), read when
    this driver runs on the head of the cluster it is connected to. Their `resources` are what
    cluster.yaml declares plus what `ray up` detected from the instance type (CPU, GPU, memory)."""
    import ray
    import yaml

    path = path.expanduser()
    try:
        gcs_host = ray.get_runtime_context().gcs_address.rpartition(":")[0]
        if not path.is_file() or gcs_host not in (ray.util.get_node_ip_address(), "127.0.0.1", "localhost"):
            return []
        config = yaml.safe_load(path.read_text()) or {}
        head = config.get("head_node_type")
        return [NodeType(name, {k: float(v) for k, v in (t.get("resources") or {}).items()},
                         int(t.get("max_workers", config.get("max_workers", 0))))
                for name, t in (config.get("available_node_types") or {}).items()
                if name != head and int(t.get("max_workers", config.get("max_workers", 0))) != 0]
    except Exception:
        return []


def cluster_view() -> ClusterView:
    """The cluster Ray is connected to: its alive nodes and what its autoscaler can add."""
    import ray

    nodes = tuple(dict(n["Resources"]) for n in ray.nodes() if n.get("Alive"))
    addable = tuple(_types_from_gcs() or _types_from_launcher_config())
    return ClusterView(nodes, addable, bool(addable) or _autoscaler_running())


def _capacity(view: ClusterView, resource: str) -> float:
    total = sum(n.get(resource, 0.0) for n in view.nodes)
    if view.unknown_types:
        return math.inf
    for t in view.addable:
        per_node = t.resources.get(resource, 0.0)
        if per_node:
            total = math.inf if t.max_count < 0 else total + t.max_count * per_node
    return total


def _no_fit(who: str, cpu_field: str, gpu_field: str, bundle: dict, view: ClusterView) -> str:
    shapes = [*view.nodes, *(t.resources for t in view.addable)]
    largest = {r: max((s.get(r, 0.0) for s in shapes), default=0.0) for r in ("CPU", "GPU")}
    total = {r: sum(n.get(r, 0.0) for n in view.nodes) for r in ("CPU", "GPU")}
    node = "the largest node the autoscaler can add or the cluster has" if view.addable else "the largest node"
    if bundle["GPU"] > 0 and largest["GPU"] == 0:
        extra = " and the autoscaler can add none" if view.addable else ""
        return f"{gpu_field}: a {who} needs {_count(bundle['GPU'], 'GPU')}; no node has a GPU{extra}"
    for resource, field in (("CPU", cpu_field), ("GPU", gpu_field)):
        if bundle[resource] > largest[resource] + EPS:
            return (f"{field}: a {who} needs {_count(bundle[resource], resource)}; {node} has "
                    f"{_num(largest[resource])} (cluster total {_num(total[resource])})")
    kinds = ", ".join(sorted({f"{_num(s.get('CPU', 0))} CPUs + {_num(s.get('GPU', 0))} GPUs" for s in shapes}))
    return (f"{cpu_field}: a {who} needs {_count(bundle['CPU'], 'CPU')} and {_count(bundle['GPU'], 'GPU')} on "
            f"one node; no node has both (nodes: {kinds})")


def _step_bundle(config: ExperimentConfig) -> dict:
    r = config.ray
    if r.workers > 1:
        return {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}
    return {"CPU": r.cpus_per_trial, "GPU": r.gpus_per_trial}


def check_resources(config: ExperimentConfig, view: ClusterView, warn=None) -> None:
    """Every bundle of a trial fits some node, and the trial fits the cluster (ConfigError otherwise).
    With an autoscaler whose node types are unknown, a bundle no present node fits is accepted with a
    warning: the autoscaler may add a node for it."""
    r, warn = config.ray, warn or _print
    bundles = [("trial", "ray.cpus_per_trial", "ray.gpus_per_trial",
                {"CPU": r.cpus_per_trial, "GPU": r.gpus_per_trial})]
    if r.workers > 1:
        bundles.append(("worker", "ray.cpus_per_worker", "ray.gpus_per_worker",
                        {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}))
    shapes = [*view.nodes, *(t.resources for t in view.addable)]
    for who, cpu_field, gpu_field, bundle in bundles:
        if any(_fits(bundle, s) for s in shapes):
            continue
        if view.unknown_types:
            warn(f"raysearch: no node has the {_count(bundle['CPU'], 'CPU')} and {_count(bundle['GPU'], 'GPU')} "
                 f"a {who} needs; an autoscaler runs whose node types the driver cannot read, so the trial "
                 "waits until it adds a node that fits")
            continue
        raise ConfigError(_no_fit(who, cpu_field, gpu_field, bundle, view))
    if r.workers == 1:
        return  # one bundle: it fits a node, so it fits the cluster
    for resource, per_trial, per_worker in (("CPU", r.cpus_per_trial, r.cpus_per_worker),
                                            ("GPU", r.gpus_per_trial, r.gpus_per_worker)):
        need, have = per_trial + r.workers * per_worker, _capacity(view, resource)
        if need > have + EPS:
            raise ConfigError(
                f"ray.workers: a trial needs {_num(per_trial)} + {r.workers} x {_num(per_worker)} = "
                f"{_count(need, resource)} (ray.{resource.lower()}s_per_trial + ray.workers x "
                f"ray.{resource.lower()}s_per_worker); the cluster has {_num(have)}")


def check_cluster(config: ExperimentConfig, view: ClusterView | None = None, warn=None) -> None:
    """The checks that need the cluster (call after ray.init): resources, then one step's memory against
    the largest Ray `memory` of a node that can host the step (the trial, or a Train worker)."""
    view, warn = (cluster_view() if view is None else view), warn or _print
    check_resources(config, view, warn)
    if config.ray.storage_path is None and (len(view.nodes) > 1 or view.autoscaler):
        warn("raysearch: warning: ray.storage_path is not set, so Tune stores into the run directory on "
             "this machine; a trial on another node fails at its first checkpoint unless every node mounts "
             "that directory (set ray.storage_path to s3://... or a shared file system)")
    bundle = _step_bundle(config)
    hosts = [s for s in (*view.nodes, *(t.resources for t in view.addable)) if _fits(bundle, s)]
    if not hosts or view.unknown_types or any("memory" not in h for h in hosts):
        return  # a node the autoscaler may add, whose memory is unknown, may fit
    limit = max(h["memory"] for h in hosts)
    _check_memory(config, estimate_step_memory(config, limit), limit,
                  "the most Ray memory of a node that can host it")
