"""Inference latency of a fixed network: eager PyTorch vs TorchScript vs ONNX Runtime, side by side in one run
on this machine's CPU, as ratios to eager (below 1: faster than eager).

    .venv/bin/python benchmarks/export_latency.py [--repeats 50] [--threads 1]

Models: the demo's (`make demo`'s NB201 cell, C=8, 2 cells, on 8x8 digits) and a DARTS-space network (DARTS
V2's cells, C=16, 8 layers, on 32x32 RGB, the DARTS search network's size), both untrained (latency does
not depend on the weights), at batch 1 and 64. Each format's forwards interleave with the others' so that
the machine's drift hits all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from raysearch.export import FORMATS, example_input
from raysearch.model import ModelCard, build_network, hparams_of
from raysearch.model.cost import time_forward

DEMO = ({"name": "nb201", "channels": 8, "cells_per_stage": 2, "stages": 1,
         "ops": ["skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]},
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|nor_conv_3x3~0|avg_pool_3x3~1|nor_conv_3x3~2|", 1, 8)
DARTS_V2 = ({"name": "darts", "channels": 16, "layers": 8, "stem_multiplier": 3},
            "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])", 3, 32)


def _card(space: dict, genotype: str, channels: int, size: int) -> ModelCard:
    return ModelCard(space, genotype, channels, size, tuple("0123456789"), (0.0,) * channels, (1.0,) * channels,
                     "-", hparams_of(0.1, 0.0, "sgd", 1), None, 0, 0.0, None, "benchmark")


def _runners(module, card: ModelCard, folder: Path) -> dict:
    """format -> (batch -> a call of one forward)."""
    import onnxruntime

    scripted = {}
    for fmt, (name, write) in FORMATS.items():
        write(module, card, folder / name)
        scripted[fmt] = folder / name
    jit = torch.jit.load(str(scripted["torchscript"]))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(scripted["onnx"]), options, providers=["CPUExecutionProvider"])

    def eager(x):
        with torch.no_grad():
            return module(x)

    def script(x):
        with torch.no_grad():
            return jit(x)

    return {"eager": eager, "torchscript": script, "onnxruntime": lambda x: session.run(None, {"images": x.numpy()})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed forwards per format and batch (rounds)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, {args.repeats} rounds; median ms per forward, ratio to eager")
    print(f"{'model':8} {'batch':>5} {'eager ms':>9} {'torchscript':>12} {'onnxruntime':>12}")
    for label, (space, genotype, channels, size) in (("demo", DEMO), ("darts", DARTS_V2)):
        card = _card(space, genotype, channels, size)
        module = build_network(space, genotype, card.shape).eval()
        with tempfile.TemporaryDirectory() as folder:
            runners = _runners(module, card, Path(folder))
            for batch in (1, 64):
                x = example_input(card, batch)
                for run in runners.values():  # warm-up
                    time_forward(lambda: run(x), torch.device("cpu"), 1, 0.0)
                times = {name: [] for name in runners}
                for _ in range(args.repeats):  # interleaved: one forward of each format per round
                    for name, run in runners.items():
                        started = time.perf_counter()
                        run(x)
                        times[name].append((time.perf_counter() - started) * 1000.0)
                median = {name: statistics.median(t) for name, t in times.items()}
                print(f"{label:8} {batch:>5} {median['eager']:>9.3f} {median['torchscript'] / median['eager']:>12.2f} "
                      f"{median['onnxruntime'] / median['eager']:>12.2f}")


if __name__ == "__main__":
    main()
