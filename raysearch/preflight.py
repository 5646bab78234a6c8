"""Preflight: refuse a config that cannot run, before any trial starts, with one error naming the field.

Two stages, both raising `raysearch.config.ConfigError` (the CLI exits 2), and for a sweep both hold
for every search it can make (each swept value, one field at a time):

- `check_config(config, address)`, without Ray (`raysearch validate`, and `run`/`resume`
  before Ray starts): the batch fits the splits it is drawn from, the space can be
  built, and one step's memory fits the memory a worker can have. For a local run
  that is this machine's RAM; when a cluster address is known the comparison waits
  for `check_cluster`, which sees the cluster's nodes.
- `check_cluster(config)`, after `ray.init`: every resource bundle of a trial fits
  some node (present, or of a type the autoscaler can add), the trial as a whole fits
  the cluster, and one step's memory fits a node that can host it. Otherwise Tune
  would wait forever for resources that never come.

One step's memory comes from `raysearch.memory.estimate_step_memory` (built on the
meta device, activations counted at two batch sizes); the limits are generous (a
machine's whole RAM, a node's whole Ray memory), so only configs far out of reach
are refused. Only host memory is compared: the driver cannot see a GPU's memory,
so a step that fits the host may still exceed a small GPU.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from raysearch.algorithms import ALGORITHMS
from raysearch.config import ConfigError, ExperimentConfig
from raysearch.memory import (OPTIMIZER_FACTOR, SplitInfo, StepMemory, estimate_step_memory, largest_space_field,
                              split_info)

__all__ = ["ClusterView", "NodeType", "check_cluster", "check_config", "check_resources", "cluster_view"]

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


def _check_batch(config: ExperimentConfig, info: SplitInfo) -> None:
    """The batch must fit every split it is drawn from (a BatchStream of fewer examples has no batch)."""
    drawn = [("search-train", info.train)]  # weights (searches), or a baseline trial's training
    if config.search.algorithm in ALGORITHMS:
        drawn.append(("search-val", info.val))  # encoding steps; a baseline evaluates val in chunks instead
    if config.retrain.enabled:
        drawn.append(("search-train + search-val", info.train + info.val))  # the retraining
    batch = config.search.batch_size
    for name, size in drawn:
        if batch > size:
            raise ConfigError(f"search.batch_size: {batch} is larger than {name} ({size} examples)")


def _check_memory(config: ExperimentConfig, memory: StepMemory, limit: float, where: str) -> None:
    need = memory.total()
    if need <= limit:
        return
    per = f"{memory.batch} examples per worker"
    if not memory.complete:  # the build stopped on the parameters
        raise ConfigError(f"{largest_space_field(config)}: {memory.what} needs more than ~{_bytes(need)} for its "
                          f"parameters, gradients and optimizer state alone; a worker has at most "
                          f"{_bytes(limit)} ({where})")
    if memory.total(1) > limit:  # even one example does not fit: the space is too large
        raise ConfigError(
            f"{largest_space_field(config)}: {memory.what} needs ~{_bytes(need)} for one step at {per}; a worker "
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


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _searches(config: ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """(prefix of an error, experiment) for every experiment the checks must hold for: the config itself,
    or for a sweep its base search and, one field at a time, each choice and both bounds of every swept
    field (a swept `search.batch_size` or `space.channels` sizes the searches as much as the base does)."""
    if config.sweep is None:
        return [("", config)]
    searches = [("", config.without_sweep())]
    for p in config.sweep.params:
        for value in p.values:
            searches.append((f"sweep.params.{p.field} = {_value_text(value)}: ", config.without_sweep({p.field: value})))
    return searches


def _each_search(check, config: ExperimentConfig, *args):
    """`check(search, *args)` for every search of `config`; an error names the swept value that caused it.
    Returns what the check of the base search returned."""
    first = None
    for i, (prefix, search) in enumerate(_searches(config)):
        try:
            result = check(search, *args)
        except ConfigError as err:
            raise ConfigError(prefix + str(err)) from None
        first = result if i == 0 else first
    return first


def check_config(config: ExperimentConfig, address: str | None = None) -> StepMemory:
    """The checks that need no Ray, for every search a sweep can make; returns the (base) step's memory.

    `address` (or `ray.address`): the run goes to that cluster, whose nodes only
    `check_cluster` sees, so memory is compared there; otherwise against this
    machine's RAM, shared by `ray.workers` workers.
    """
    return _each_search(_check_search, config, address)


def _check_search(config: ExperimentConfig, address: str | None) -> StepMemory:
    info = split_info(config.data)
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
    """Every bundle of a trial fits some node, and a sharded search's workers fit the cluster together
    (ConfigError otherwise).
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
    for resource, per_worker in (("CPU", r.cpus_per_worker), ("GPU", r.gpus_per_worker)):
        need, have = r.workers * per_worker, _capacity(view, resource)
        if need > have + EPS:  # the search's trial reserves none (meta_sweep.tune_resources)
            raise ConfigError(
                f"ray.workers: a search's workers need {r.workers} x {_num(per_worker)} = {_count(need, resource)} "
                f"(ray.workers x ray.{resource.lower()}s_per_worker); the cluster has {_num(have)}")


def check_cluster(config: ExperimentConfig, view: ClusterView | None = None, warn=None) -> None:
    """The checks that need the cluster (call after ray.init): resources, then one step's memory against
    the largest Ray `memory` of a node that can host the step (the trial, or a Train worker)."""
    view, warn = (cluster_view() if view is None else view), warn or _print
    check_resources(config, view, warn)
    if config.ray.storage_path is None and (len(view.nodes) > 1 or view.autoscaler):
        warn("raysearch: warning: ray.storage_path is not set, so Tune stores into the run directory on "
             "this machine; a trial on another node fails at its first checkpoint unless every node mounts "
             "that directory (set ray.storage_path to s3://... or a shared file system)")
    _each_search(_check_node_memory, config, view)


def _check_node_memory(config: ExperimentConfig, view: ClusterView) -> None:
    bundle = _step_bundle(config)
    hosts = [s for s in (*view.nodes, *(t.resources for t in view.addable)) if _fits(bundle, s)]
    if not hosts or view.unknown_types or any("memory" not in h for h in hosts):
        return  # a node the autoscaler may add, whose memory is unknown, may fit
    limit = max(h["memory"] for h in hosts)
    _check_memory(config, estimate_step_memory(config, limit), limit,
                  "the most Ray memory of a node that can host it")
