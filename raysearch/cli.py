"""The `raysearch` command: a thin layer over raysearch.load_config / run / sweep / resume and
raysearch.compare.

Exit codes: 0 success, 1 a trial failed, 2 bad input (config, flag, data path).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from raysearch.compare.config import STATE_FILE as COMPARISON_STATE, load_comparison
from raysearch.config import ConfigError, check_command, load_config, read_yaml
from raysearch.data import DatasetNotFoundError, check_available, root_unset
from raysearch.export import FORMATS, export
from raysearch.model import ModelFileError, ModelNotFoundError
from raysearch.preflight import check_config
from raysearch.ui import UiError, serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(cmd):
        cmd.add_argument("config", help="experiment YAML, e.g. configs/autohas_nb201_digits.yaml")
        cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a field, e.g. --set search.epochs=5 (repeatable; values are YAML)")
        return cmd

    for name, text in (("run", "search, retrain and test an experiment"),
                       ("sweep", "tune a search's meta-hyper-parameters (the config's sweep: section) over "
                                 "whole searches, then retrain and test the best search's result")):
        cmd = with_config(sub.add_parser(name, help=text))
        cmd.add_argument("--output-dir", help="run directory (default runs/<experiment>-<timestamp>)")
        cmd.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store in the run directory)")
        cmd.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
        cmd.add_argument("--register-model", metavar="NAME", help="register the trained model in MLflow's Model "
                                                                  "Registry under NAME (tracking.register_model)")
    cmd = with_config(sub.add_parser("compare", help="run differentiable searches and baselines at an equal "
                                                       "budget, retrain their choices and compare them"))
    cmd.add_argument("--output-dir", help="run directory (default runs/<comparison>-<timestamp>)")
    cmd.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store in the run directory)")
    cmd.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    cmd.add_argument("--register-model", metavar="NAME", help="register each method x seed's model as a version of "
                                                              "NAME, tagged with its method and seed "
                                                              "(shared.tracking.register_model)")
    with_config(sub.add_parser("validate", help="check a config (or a comparison) and its data without running "
                                                "anything"))
    resume = sub.add_parser("resume", help="continue an interrupted run, sweep or comparison")
    resume.add_argument("run_dir", help="the run directory printed by `raysearch run`, `sweep` or `compare`")
    resume.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    report = sub.add_parser("report", help="print the tables of a finished run, sweep or comparison and draw its "
                                           "plots again, from its files (nothing runs)")
    report.add_argument("run_dir", help="the run directory printed by `raysearch run`, `sweep` or `compare`")
    for name, text in (("export", "write a run's model as TorchScript or ONNX"),
                       ("evaluate", "test a run's model on its test split or on other data of its classes")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("run_dir", help="the run directory printed by `raysearch run`, `sweep` or `compare`")
        cmd.add_argument("--method", help="a comparison's method whose model to use")
        cmd.add_argument("--seed", type=int, default=0, help="a comparison's search seed index (default 0)")
    export = sub.choices["export"]
    export.add_argument("--format", required=True, choices=tuple(FORMATS))
    export.add_argument("--output", help="the file to write (default: in the model folder)")
    evaluate = sub.choices["evaluate"]
    evaluate.add_argument("--data", help="an experiment config (its test split) or a folder of class folders "
                                         "(default: the run's own test split)")
    evaluate.add_argument("--output", help="folder for evaluation.json and confusion_matrix.png "
                                           "(default: beside the model)")
    ui = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 over a run's store, on its runs table "
                                   "(or print the URL of the tracking server the run used)")
    ui.add_argument("run_dir", help="the run directory printed by `raysearch run`, `sweep` or `compare`")
    ui.add_argument("--port", type=int, default=5000, help="port of the UI on 127.0.0.1 (default 5000)")
    return parser


def _ui(args) -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # unwinds to serve()'s stop of the UI
    try:
        return serve(args.run_dir, args.port, announce=lambda line: print(line, flush=True))
    except UiError as err:
        print(f"raysearch: error: {err}", file=sys.stderr)
        return 2


def _is_comparison(path: str) -> bool:
    """A comparison config names `methods:`; an experiment config does not."""
    try:
        return "methods" in read_yaml(path)
    except ConfigError:
        return False  # load_config reports the problem


def _report(run_dir: str) -> int:
    from raysearch.report import render

    try:
        text, files = render(run_dir)
    except FileNotFoundError as err:
        print(f"raysearch: error: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"raysearch: wrote {', '.join(f.name for f in files)} in {run_dir}", file=sys.stderr)
    return 0


def _run_or_resume(args) -> int:
    """`run` or `resume`, with failures turned into exit codes and one-line messages."""
    from raysearch.runner import RunDirError, RunFailed, RunInterrupted, resume, run, sweep

    # SIGTERM unwinds like Ctrl-C, so the run's `finally` ends MLflow runs and stops the Ray it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if args.command == "resume" and (Path(args.run_dir) / COMPARISON_STATE).exists():
            from raysearch.compare.run import resume_comparison

            summary = resume_comparison(args.run_dir, args.address)
        elif args.command == "resume":
            summary = resume(args.run_dir, args.address)
        elif args.command == "compare":
            from raysearch.compare.run import compare

            summary = compare(args.config_obj, args.output_dir, args.tracking_uri, args.address)
        else:
            start = sweep if args.command == "sweep" else run
            summary = start(args.config_obj, args.output_dir, args.tracking_uri, args.address)
    except RunFailed as err:
        print(f"raysearch: {err}", file=sys.stderr)
        return 1
    except (RunInterrupted, KeyboardInterrupt) as err:
        where = args.run_dir if args.command == "resume" else "RUN_DIR (printed above)"
        print(f"raysearch: interrupted{': ' + str(err) if str(err) else ''}; continue with "
              f"`raysearch resume {where}`", file=sys.stderr)
        return 130
    except (RunDirError, ConfigError, DatasetNotFoundError) as err:
        print(f"raysearch: error: {err}", file=sys.stderr)
        return 2
    except ConnectionError as err:  # ray.init could not reach --address / ray.address
        print(f"raysearch: error: cannot connect to the Ray cluster: {err}", file=sys.stderr)
        return 2
    print("\n" + summary.table())
    return 0


def _model_command(args) -> int:
    """`export` or `evaluate`: one line on stderr and exit 2 when the model or the data will not do."""
    from raysearch.evaluate import EvaluationError, evaluate  # matplotlib: loaded only to draw

    try:
        if args.command == "export":
            print(export(args.run_dir, args.format, args.output, args.method, args.seed))
        else:
            print(evaluate(args.run_dir, args.data, args.method, args.seed, args.output).table())
    except (ModelNotFoundError, ModelFileError, EvaluationError, ConfigError, DatasetNotFoundError) as err:
        print(f"raysearch: error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "report":
        return _report(args.run_dir)
    if args.command in ("export", "evaluate"):
        return _model_command(args)
    if args.command == "ui":
        return _ui(args)
    registered = getattr(args, "register_model", None)
    if registered:
        key = "shared.tracking.register_model" if args.command == "compare" else "tracking.register_model"
        args.overrides = [*args.overrides, f"{key}={registered}"]
    if args.command in ("compare", "validate") and _is_comparison(args.config):
        return _comparison(args)
    if args.command == "compare":
        print(f"raysearch: error: {args.config} is an experiment, not a comparison (it names no `methods:`); "
              "run it with `raysearch run`, or see configs/compare_digits.yaml", file=sys.stderr)
        return 2
    if args.command != "resume":
        try:
            args.config_obj = load_config(args.config, args.overrides)
            data_checked = _check_data(args.config_obj, args.command)
            check_command(args.config_obj, args.command)
            if args.command == "validate" and data_checked:
                check_config(args.config_obj)  # the checks that need no Ray: batch vs splits, one step's memory
        except (ConfigError, DatasetNotFoundError) as err:
            print(f"raysearch: error: {err}", file=sys.stderr)
            return 2
    if args.command == "validate":
        c = args.config_obj
        sweep = "" if c.sweep is None else (f"; `raysearch sweep`: {c.sweep.num_samples} searches over "
                                            f"{', '.join(p.field for p in c.sweep.params)}")
        print(f"{args.config}: valid ({c.search.algorithm} on {c.space.name} / {c.data.dataset}{sweep})"
              + ("" if data_checked else _DATA_UNCHECKED.format(dataset=c.data.dataset, key="data.root")))
        return 0
    return _run_or_resume(args)


# `validate` of a config whose data.root is unset: the shipped GPU configs are templates that each machine
# completes, so their fields are checked without the files; `run` refuses them until data.root is set.
_DATA_UNCHECKED = ("; its data was not checked: {dataset} is read from data.root, which is not set "
                   "(`--set {key}=DIR`; the batch and memory checks need the data too)")


def _check_data(config, command: str) -> bool:
    """Raise DatasetNotFoundError unless the config's data is there; False, without a check, when `validate`
    meets a dataset read from files with no data.root."""
    if command == "validate" and root_unset(config.data.dataset, config.data.root):
        return False
    check_available(config.data.dataset, config.data.root)
    return True


def _comparison(args) -> int:
    """`compare` or `validate` of a comparison config: load and check every method first."""
    unchecked = []
    try:
        args.config_obj = comparison = load_comparison(args.config, args.overrides)
        for method in comparison.methods:
            config = comparison.experiment(method, 0)
            if _check_data(config, args.command):
                check_config(config)
            else:
                unchecked.append(config.data.dataset)
    except (ConfigError, DatasetNotFoundError) as err:
        print(f"raysearch: error: {err}", file=sys.stderr)
        return 2
    if args.command == "validate":
        c = comparison.compare
        note = _DATA_UNCHECKED.format(dataset=unchecked[0], key="shared.data.root") if unchecked else ""
        print(f"{args.config}: valid (comparison of {', '.join(comparison.methods)}: {c.seeds} seeds, "
              f"{c.budget_seconds:g} s each){note}")
        return 0
    return _run_or_resume(args)


if __name__ == "__main__":
    sys.exit(main())
