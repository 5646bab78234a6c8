"""One differentiable search as a Ray Tune function trainable, in the trial or sharded over Ray Train workers.

    raysearch run configs/autohas_nb201_digits.yaml
    raysearch run configs/gdas_nb201_digits.yaml --set ray.workers=2 --set ray.cpus_per_worker=1

Tune config: {"experiment": <ExperimentConfig.to_dict()>}. Reports once per
epoch with a checkpoint holding the whole search state (weights, encodings,
optimizer states, RNG states, step, stream positions) and `derived.json`,
the configuration the search selects at that point.

The search runs in a thread of its own and hands each epoch over to the
trial's thread, which reports it: a function trainable's report returns only
when the driver calls the trial again, after every callback on the driver has
seen the result (MLflow's logging, the progress line, Tune's experiment
snapshot), and that round trip would otherwise stall the search every epoch.
The search runs one epoch ahead of Tune at most; when Tune stops the trial,
the search halts at its next batch (`SearchLoop.halt`), so an early-stopped
trial wastes only the steps it ran while Tune decided, and a reused actor
never runs two searches.

With `ray.workers` N > 1 the trial launches a Ray Train TorchTrainer of N
workers (Train V2: the trainer runs inside the trial, never under the Tuner)
and the search runs in them, each on its shard of every global batch
(raysearch.distributed). Rank 0 hands each epoch's metrics and state to the
trial through a queue, and the trial reports them to Tune as a 1-worker
search would: Tune alone owns the checkpoints, so pausing, restarting after a
lost node and `raysearch resume` work the same for any worker count, and a
checkpoint holds no rank state (a search may resume on another worker count).
A failed worker fails the Train run at once (Train retries off) and with it
the trial, which Tune restarts from its last checkpoint (`ray.max_failures`).
"""

from __future__ import annotations

import atexit
import io
import queue as queue_module
import threading

import torch

from raysearch.config import ExperimentConfig, from_dict
from raysearch.data import Halted, load_splits
from raysearch.model import hparams_of, make_card, model_files
from raysearch.search import SearchLoop
from raysearch.training import pick_device
from trainables.common import checkpoint_state, report, restore, set_up_trial

DERIVED_FILE = "derived.json"
_POLL_S = 0.5  # how often the trial, waiting for an epoch, checks that the search still runs
_EXIT_WAIT_S = 10.0  # how long a process that ends waits for its halted search (it halts at its next batch)


def epoch_report(loop: SearchLoop, metrics: dict) -> tuple[dict, dict]:
    """(Tune result, checkpoint files) of the epoch the loop just ran."""
    result = loop.algorithm.derive()
    # a copy of the history: the thread that reports it writes it while the search appends the next epoch
    derived = {"genotype": result.genotype.to_string(), "hparams": result.hparams, "history": list(loop.history),
               "labels": loop.algorithm.encoding_labels()}
    files = {DERIVED_FILE: derived}
    if loop.model is not None:  # a final-model search's (DHA) model, in every checkpoint: a budget may end it anywhere
        cfg = loop.config
        hparams = hparams_of(result.hparams["lr"], result.hparams["weight_decay"], "sgd", cfg.search.epochs)
        card = make_card(loop.model, cfg, loop.splits.shape, derived["genotype"], hparams, metrics["test_acc"],
                         cfg.search.algorithm, latency=loop.done)  # measured once, after the last epoch
        files.update(model_files(loop.model, card))
    return ({**metrics, "epoch": loop.epoch, "search_done": loop.done, "genotype": derived["genotype"]}, files)


def run_epochs(loop: SearchLoop, hand_over=None, **extra) -> None:
    """Run the loop to its end; after each epoch, `hand_over((metrics + extra, saved state, files))`.

    Without `hand_over` (the ranks but 0 of a sharded search: every rank holds the same state) the
    epochs are only run. The state is saved to bytes here, between epochs, so the checkpoint is the
    epoch's whatever the thread that reports it does meanwhile.
    """
    while not loop.done:
        metrics = loop.run_epoch()
        if hand_over is not None:
            result, files = epoch_report(loop, metrics)
            buffer = io.BytesIO()
            torch.save(loop.state_dict(), buffer)
            hand_over(({**result, **extra}, buffer.getvalue(), files))


class Producer(threading.Thread):
    """A daemon thread that runs `target` and keeps the exception it raised (a halt is no error)."""

    def __init__(self, target, name: str):
        super().__init__(name=name, daemon=True)
        self.target, self.error = target, None

    def run(self) -> None:
        try:
            self.target()
        except Halted:
            pass
        except BaseException as err:  # noqa: BLE001 - re-raised in the trial's thread by finish()
            self.error = err

    def finish(self) -> None:
        """Wait for the thread to end, then raise the exception it raised, if any."""
        self.join()
        if self.error is not None:
            raise self.error


def relay(reports, producer: Producer) -> None:
    """Report every epoch the sharded search's rank 0 puts in `reports` until `producer` (the Train
    fit) has ended, then raise its error. It polls instead of waiting for an end marker: workers that
    die put none, and after a stop the trial no longer reads one."""
    while True:
        try:
            report(*reports.get(timeout=_POLL_S))
        except queue_module.Empty:
            if not producer.is_alive() and reports.empty():
                break
    producer.finish()


def search_trainable(config: dict) -> None:
    set_up_trial()
    # 1. the Tune config becomes typed objects once, here at the boundary
    cfg = from_dict(config["experiment"])
    if cfg.ray.workers > 1:
        return _sharded(cfg, config["experiment"])
    loop = SearchLoop.from_config(cfg, load_splits(cfg.data), pick_device())
    # 2. continue from the last checkpoint after a failure, pause or restore
    restore(loop)
    # 3. epochs (search, then selection), each reported with a checkpoint
    run_and_report(loop)


_END = None  # what the search's thread puts last


def run_and_report(loop: SearchLoop) -> None:
    """The loop's epochs in a thread of their own, reported from this one as they end.

    The search hands an epoch over only once the previous one is reported, so it runs one epoch ahead
    of Tune at most. When reporting ends first (Tune stops the trial: its report raises SystemExit),
    the search is halted before its waiting hand-over goes through, so its thread ends at its next
    epoch or batch, before the trial does.
    """
    epochs = queue_module.Queue()  # unbounded: a hand-over waits in join(), never in a put

    def hand_over(item) -> None:
        epochs.join()  # the previous epoch is reported
        epochs.put(item)

    def search() -> None:
        try:
            run_epochs(loop, hand_over)
        finally:
            epochs.put(_END)

    def halt_at_exit() -> None:
        # Tune may end the trial's process while this thread waits for an epoch (a time budget that
        # runs out): the search must stop first, or the interpreter's exit kills its thread inside
        # torch and the process aborts with a native stack trace on the console.
        loop.halt()
        producer.join(timeout=_EXIT_WAIT_S)

    producer = Producer(search, "raysearch-search")
    producer.start()
    atexit.register(halt_at_exit)
    try:
        while (item := epochs.get()) is not _END:
            report(*item)
            epochs.task_done()
    finally:
        # The one item taken and not done (the end, or the epoch whose report raised) is done only
        # after the halt, so a hand-over waiting for it sees the halt at its search's next epoch.
        loop.halt()  # no-op for a search that has ended
        epochs.task_done()
        producer.join()
        atexit.unregister(halt_at_exit)
    producer.finish()  # the search's error, unless Tune's stop is already on its way up


def shard_worker(train_config: dict) -> None:
    """The search on one Ray Train worker: rank r of N steps on its shard of every global batch."""
    import ray.train.torch

    from raysearch.callbacks import SHARDS_PLACEMENT_GROUP, register_shard_group
    from raysearch.distributed import TorchDistributed

    set_up_trial()
    cfg = from_dict(train_config["experiment"])
    dist = TorchDistributed(cfg.ray.batch_norm)  # Ray Train set up the group: gloo on CPU, NCCL on CUDA
    # The driver removes the workers' placement group once the trial stops or dies (callbacks.ReleaseShards).
    group = {SHARDS_PLACEMENT_GROUP: ray.util.get_current_placement_group().id.hex()}
    if dist.rank == 0:
        register_shard_group(train_config["trial_id"], group[SHARDS_PLACEMENT_GROUP])
    loop = SearchLoop.from_config(cfg, load_splits(cfg.data), ray.train.torch.get_device(), dist)
    if train_config["state"] is not None:  # the trial's last checkpoint, the same on every rank
        loop.load_state_dict(train_config["state"])
    run_epochs(loop, train_config["reports"].put if dist.rank == 0 else None, **group)


def _state_api_up() -> bool:
    """Whether the cluster serves Ray's state API (it comes with the dashboard)."""
    from ray.util.state import list_nodes

    try:
        list_nodes(limit=1, timeout=2)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def _trainer_class(keep_cleaner: bool):
    """TorchTrainer, without Train's placement-group cleaner where it cannot work.

    The cleaner is a detached actor that polls the state API; without the
    dashboard (local runs start none) it never sees the controller die, warns
    every second and outlives the trial. `callbacks.ReleaseShards` removes the
    group from the driver instead. (`_create_default_callbacks` is private:
    tests/test_sharded_ray.py fails if ray moves it.)
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    if keep_cleaner:
        return TorchTrainer

    class Trainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks() if not isinstance(c, PlacementGroupCleanerCallback)]

    return Trainer


def _sharded(cfg: ExperimentConfig, experiment: dict) -> None:
    from ray import tune
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.util.queue import Queue

    r = cfg.ray
    # One report in flight: rank 0 waits for the trial to take an epoch before it hands over the next.
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = _trainer_class(_state_api_up())(
        shard_worker,
        train_loop_config={"experiment": experiment, "state": checkpoint_state(), "reports": reports,
                           "trial_id": tune.get_context().get_trial_id()},
        scaling_config=ScalingConfig(num_workers=r.workers, use_gpu=r.gpus_per_worker > 0,
                                     resources_per_worker={"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}),
        run_config=RunConfig(name="shards", storage_path=tune.get_context().get_trial_dir(),
                             failure_config=FailureConfig(max_failures=0),
                             logging_config=LoggingConfig(log_level="WARNING")),  # no worker-group lines per trial
    )
    runner = Producer(trainer.fit, "raysearch-shards")
    runner.start()
    relay(reports, runner)  # a stopped trial's workers go with their placement group (ReleaseShards)
