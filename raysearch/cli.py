"""The `raysearch` command: a thin layer over raysearch.load_config / raysearch.run.

Exit codes: 0 success, 1 a trial failed, 2 bad input (config, flag, data path).
"""

from __future__ import annotations

import argparse
import signal
import sys

from raysearch.config import ConfigError, load_config
from raysearch.data import DatasetNotFoundError, check_available


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(cmd):
        cmd.add_argument("config", help="experiment YAML, e.g. configs/autohas_nb201_digits.yaml")
        cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a field, e.g. --set search.epochs=5 (repeatable; values are YAML)")
        return cmd

    run = with_config(sub.add_parser("run", help="search, retrain and test an experiment"))
    run.add_argument("--output-dir", help="run directory (default runs/<experiment>-<timestamp>)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store in the run directory)")
    run.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    with_config(sub.add_parser("validate", help="check a config and its data without running anything"))
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        check_available(config.data.dataset, config.data.root)
    except (ConfigError, DatasetNotFoundError) as err:
        print(f"raysearch: error: {err}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(f"{args.config}: valid ({config.search.algorithm} on {config.space.name} / {config.data.dataset})")
        return 0

    from raysearch.runner import RunFailed, run

    # SIGTERM unwinds like Ctrl-C, so the run's `finally` ends MLflow runs and stops the Ray it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        summary = run(config, args.output_dir, args.tracking_uri, args.address)
    except RunFailed as err:
        print(f"raysearch: {err}", file=sys.stderr)
        return 1
    except ConnectionError as err:  # ray.init could not reach --address / ray.address
        print(f"raysearch: error: cannot connect to the Ray cluster: {err}", file=sys.stderr)
        return 2
    print("\n" + summary.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
