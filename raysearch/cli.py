"""The `raysearch` command: a thin layer over raysearch.load_config / run / sweep / resume.

Exit codes: 0 success, 1 a trial failed, 2 bad input (config, flag, data path).
"""

from __future__ import annotations

import argparse
import signal
import sys

from raysearch.config import ConfigError, check_command, load_config
from raysearch.data import DatasetNotFoundError, check_available
from raysearch.preflight import check_config


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
    with_config(sub.add_parser("validate", help="check a config and its data without running anything"))
    resume = sub.add_parser("resume", help="continue an interrupted run from its trials' last checkpoints")
    resume.add_argument("run_dir", help="the run directory printed by `raysearch run`")
    resume.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    return parser


def _run_or_resume(args) -> int:
    """`run` or `resume`, with failures turned into exit codes and one-line messages."""
    from raysearch.runner import RunDirError, RunFailed, RunInterrupted, resume, run, sweep

    # SIGTERM unwinds like Ctrl-C, so the run's `finally` ends MLflow runs and stops the Ray it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if args.command == "resume":
            summary = resume(args.run_dir, args.address)
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


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "resume":
        try:
            args.config_obj = load_config(args.config, args.overrides)
            check_available(args.config_obj.data.dataset, args.config_obj.data.root)
            check_command(args.config_obj, args.command)
        except (ConfigError, DatasetNotFoundError) as err:
            print(f"raysearch: error: {err}", file=sys.stderr)
            return 2
    if args.command == "validate":
        try:  # the checks that need no Ray: batch vs splits, one step's memory
            check_config(args.config_obj)
        except ConfigError as err:
            print(f"raysearch: error: {err}", file=sys.stderr)
            return 2
        c = args.config_obj
        sweep = "" if c.sweep is None else (f"; `raysearch sweep`: {c.sweep.num_samples} searches over "
                                            f"{', '.join(p.field for p in c.sweep.params)}")
        print(f"{args.config}: valid ({c.search.algorithm} on {c.space.name} / {c.data.dataset}{sweep})")
        return 0
    return _run_or_resume(args)


if __name__ == "__main__":
    sys.exit(main())
