"""Set-up of every worker process of the Ray that raysearch starts or joins (Ray's
`worker_process_setup_hook`): Ray's own per-trial INFO lines stay off the console.

Kept free of heavy imports: every Ray worker process runs it first.
"""

from __future__ import annotations

import logging

# "Restored on <ip> from checkpoint: Checkpoint(...)": once per trial whenever a trial continues from a
# checkpoint (each search of a resumed sweep, each resumed BOHB trial); warnings and errors still show.
QUIET = ("ray.tune.trainable.trainable",)
HOOK = f"{__name__}.quiet"


def quiet() -> None:
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
