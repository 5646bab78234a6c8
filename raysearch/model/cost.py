"""What a fixed network costs: parameters and multiply-accumulates from its shapes, and inference latency
measured on the device that holds it."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from raysearch.proxies import flops, num_params
from raysearch.shapes import DataShape

LATENCY_BATCHES = (1, 64)  # the batch sizes whose latency a model's card gives
LATENCY_REPEATS = 20  # timed forwards per batch size (the median is reported), after warm-up ones
LATENCY_BUDGET_S = 2.0  # ... or fewer, once this many seconds are spent (at least 3): a large model on a CPU
_WARMUP = 2


def size(net: nn.Module, shape: DataShape) -> tuple[int, float]:
    """(trainable parameters, multiply-accumulates per image of the conv and linear layers)."""
    device = next(net.parameters()).device
    x = torch.zeros(1, shape.in_channels, shape.image_size, shape.image_size, device=device)
    return int(num_params(net)), flops(net, x)


def device_name(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's model and the threads torch computes with."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    threads = torch.get_num_threads()
    return f"{model or platform.processor() or platform.machine()} ({threads} thread{'s' * (threads > 1)})"


@torch.no_grad()
def measure_latency(net: nn.Module, shape: DataShape, batches=LATENCY_BATCHES, repeats: int = LATENCY_REPEATS,
                    budget_s: float = LATENCY_BUDGET_S) -> dict:
    """Median milliseconds of one eval-mode forward of each batch size in `batches` on the net's device,
    and the device named: {"device": ..., "batch_1_ms": ..., "batch_64_ms": ...}."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = {"device": device_name(device)}
    for batch in batches:
        x = torch.zeros(batch, shape.in_channels, shape.image_size, shape.image_size, device=device)
        out[f"batch_{batch}_ms"] = statistics.median(time_forward(lambda: net(x), device, repeats, budget_s))
    net.train(was_training)
    return out


def time_forward(forward, device: torch.device, repeats: int, budget_s: float) -> list[float]:
    """Milliseconds of each of up to `repeats` calls of `forward` (after warm-up calls), stopping early once
    `budget_s` seconds are spent and 3 calls are timed; CUDA work is waited for."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(_WARMUP):
        forward()
    sync()
    times, started = [], time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - started < budget_s):
        begin = time.perf_counter()
        forward()
        sync()
        times.append((time.perf_counter() - begin) * 1000.0)
    return times
