"""How far a path-sampled NB201 supernet's shared weights train on digits_hard: why AutoHAS's and GDAS's
derived cells there depend on the seed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shared_weights.py [--epochs 30] [--lrs 0.1 0.025] [--seed 0]

Trains the supernet of configs/gdas_nb201_digits_hard.yaml (its space, data, batch size, and its weight
optimizer: SGD with the search's momentum, weight decay, gradient clipping and cosine lr) on search-train
for `--epochs` (the searches run 40-60), each step on one path, the path drawn per step by a rule:

    all 3x3     the same path every step: as training the fixed cell
    3x3 at 0.9  each edge 3x3 with probability 0.9, else a uniform op
    convs       each edge 1x1 or 3x3, uniform
    uniform     each edge any op, uniform (a search's paths before its encodings move)

and prints the rule's training accuracy over its last epoch and the search-val accuracy its shared
weights give the all-3x3 path, a mixed path and (mean, best of 20) random paths. A supernet that can rank
cells scores the all-3x3 path well above the others; one whose weights do not train cannot.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysearch.config import load_config  # noqa: E402
from raysearch.data import BatchStream, load_splits  # noqa: E402
from raysearch.spaces import build_space  # noqa: E402
from raysearch.training import scheduled_lr, set_lr  # noqa: E402

CONFIG = ROOT / "configs" / "gdas_nb201_digits_hard.yaml"
EDGES = 6
MIXED = ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_3x3")


def rules(ops: tuple[str, ...]) -> dict:
    """Path rules: (generator) -> the op index of every edge for one step."""
    conv3, conv1 = ops.index("nor_conv_3x3"), ops.index("nor_conv_1x1")

    def mostly_3x3(gen):
        keep = torch.rand(EDGES, generator=gen) < 0.9
        return torch.where(keep, torch.full((EDGES,), conv3), torch.randint(len(ops), (EDGES,), generator=gen))

    return {
        "all 3x3": lambda gen: torch.full((EDGES,), conv3),
        "3x3 at 0.9": mostly_3x3,
        "convs": lambda gen: torch.tensor([conv1, conv3])[torch.randint(2, (EDGES,), generator=gen)],
        "uniform": lambda gen: torch.randint(len(ops), (EDGES,), generator=gen),
    }


def forward(net, space, x, path):
    """The supernet on one path: hard one-hot weights, only the active op computed on each edge."""
    encoding = next(iter(space.encodings))
    return net(x, {encoding: F.one_hot(path, len(space.op_names)).float()}, {encoding: path})


def train(config, splits, space, rule, epochs: int, lr: float, seed: int):
    """The supernet's weights trained on `rule`'s paths; (it, the last epoch's training accuracy)."""
    o = config.search.options
    torch.manual_seed(seed)
    net = space.supernet()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=o.weight_momentum, weight_decay=o.weight_decay)
    batches, paths = BatchStream(*splits.train, config.search.batch_size, seed), torch.Generator().manual_seed(seed + 1)
    total, last_epoch = epochs * batches.batches_per_pass, []  # the last pass's batch accuracies
    for step in range(total):
        set_lr(optimizer, scheduled_lr(lr, step, total, "cosine", 0, o.weight_lr_min))
        x, y = next(batches)
        logits = forward(net, space, x, rule(paths))
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
        optimizer.step()
        if step >= total - batches.batches_per_pass:
            last_epoch.append((logits.argmax(1) == y).float().mean().item())
    return net, sum(last_epoch) / len(last_epoch)  # equal batches: the pass's accuracy


@torch.no_grad()
def val_accuracy(net, space, splits, path) -> float:
    x, y = splits.val
    logits = forward(net, space, x, path)
    return (logits.argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.025], help="initial weight lrs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config(CONFIG)
    splits = load_splits(config.data)
    space = build_space(config.space, splits.shape)
    ops = space.op_names
    all_3x3, mixed = torch.full((EDGES,), ops.index("nor_conv_3x3")), torch.tensor([ops.index(op) for op in MIXED])
    print(f"{config.space.name} supernet of {CONFIG.name}, {args.epochs} epochs of "
          f"{len(splits.train[0]) // config.search.batch_size} steps, seed {args.seed}; accuracies on search-val")
    print(f"{'paths':<12} {'lr':>6} {'train':>6} {'all 3x3':>8} {'mixed':>6} {'random':>7} {'best':>5} {'s':>5}")
    for lr in args.lrs:
        for name, rule in rules(ops).items():
            started = time.perf_counter()
            net, train_acc = train(config, splits, space, rule, args.epochs, lr, args.seed)
            net.eval()
            gen = torch.Generator().manual_seed(args.seed + 2)
            randoms = [val_accuracy(net, space, splits, torch.randint(len(ops), (EDGES,), generator=gen))
                       for _ in range(20)]
            print(f"{name:<12} {lr:>6g} {train_acc:>6.3f} {val_accuracy(net, space, splits, all_3x3):>8.3f} "
                  f"{val_accuracy(net, space, splits, mixed):>6.3f} {sum(randoms) / len(randoms):>7.3f} "
                  f"{max(randoms):>5.3f} {time.perf_counter() - started:>5.1f}", flush=True)


if __name__ == "__main__":
    main()
