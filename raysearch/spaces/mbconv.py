"""The MobileNetV2-like space AutoHAS searches: kernel {3, 5, 7} x expansion {3, 6} per MBConv block.

The skeleton is MobileNetV2's stage table with the CIFAR strides (stem and
second stage unstrided, since the inputs are small); the width multiplier
scales every width (rounded to multiples of 8) and the depth multiplier every
stage's block count (rounded up). The first stage's expansion-1 block is fixed,
as in MobileNetV2; every later block is searched.

In the supernet the six choices of a block share one set of weights, those of
its largest choice (kernel 7, expansion 6): a smaller kernel is the centre of
the depthwise kernel, a smaller expansion the first hidden channels (as in
single-path NAS and TuNAS, the weight sharing the AutoHAS authors build on).
ALGORITHMS.md leaves this open. With independent weights per choice, each
sampled path rewired every block's channels to unrelated features, and
single-path training on digits was at 0.18 val accuracy after 30 epochs;
with shared weights it trains like the fixed network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raysearch.schema import spec
from raysearch.spaces.base import GenotypeError, Space, one_hot_rows
from raysearch.spaces.mixed import Edge
from raysearch.spaces.ops import MBCONV_EXPANSIONS, MBCONV_KERNELS, MBCONV_OPS, OPS, InvertedResidual, mbconv_choice

ENCODING = "blocks"  # one row per searched block
# (expansion, width, blocks, stride) per stage: MobileNetV2's table, second stage unstrided for small images.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM, HEAD = 32, 1280
SEPARATOR = "-"


def _width(channels: float) -> int:
    """MobileNetV2's rounding: the nearest multiple of 8, at least 8, and not below 90% of the request."""
    rounded = max(8, int(channels + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels else rounded


@dataclass(frozen=True)
class MBConvGenotype:
    """One op name per searched block, e.g. `mb_k5_e6`; the string joins them with '-'."""

    ops: tuple[str, ...]

    def __post_init__(self):
        bad = [op for op in self.ops if op not in MBCONV_OPS]
        if bad or not self.ops:
            raise GenotypeError(f"unknown MBConv op(s) {bad or 'none given'}; known: {', '.join(MBCONV_OPS)}")

    def to_string(self) -> str:
        return SEPARATOR.join(self.ops)

    def __str__(self) -> str:
        return self.to_string()


class SharedMBConv(nn.Module):
    """The weights of a supernet block's largest choice, which all its choices slice."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        hidden, kernel = c_in * max(MBCONV_EXPANSIONS), max(MBCONV_KERNELS)
        self.c_in, self.stride, self.residual = c_in, stride, stride == 1 and c_in == c_out
        self.expand = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.depthwise = nn.Conv2d(hidden, hidden, kernel, groups=hidden, bias=False)
        self.project = nn.Conv2d(hidden, c_out, 1, bias=False)


class MBConvChoice(nn.Module):
    """One choice (kernel, expansion) of a supernet block, computed with its slice of the shared weights:
    the same layers as ops.InvertedResidual."""

    def __init__(self, shared: SharedMBConv, kernel: int, expansion: int):
        super().__init__()
        # Referenced, not registered: the network registers each SharedMBConv once. A module registered
        # under several parents is left half-swapped by torch.func.functional_call (AutoHAS, DARTS 2nd order).
        self.__dict__["shared"] = shared
        self.kernel, self.hidden = kernel, shared.c_in * expansion
        # Non-affine, batch statistics only, as in every supernet: modules, so that a sharded search can
        # synchronise them (raysearch.distributed); they hold no parameters.
        self.bn = nn.ModuleList(nn.BatchNorm2d(c, affine=False, track_running_stats=False)
                                for c in (self.hidden, self.hidden, shared.project.out_channels))

    def forward(self, x):
        s, h, k = self.shared, self.hidden, self.kernel
        crop = (s.depthwise.kernel_size[0] - k) // 2
        out = F.relu6(self.bn[0](F.conv2d(x, s.expand.weight[:h])))
        depthwise = s.depthwise.weight[:h, :, crop:crop + k, crop:crop + k]
        out = F.relu6(self.bn[1](F.conv2d(out, depthwise, stride=s.stride, padding=k // 2, groups=h)))
        out = self.bn[2](F.conv2d(out, s.project.weight[:, :h]))
        return x + out if s.residual else out


class MBConvNetwork(nn.Module):
    """Stem -> fixed first block -> searched blocks (one mixed row each) -> 1x1 conv head -> linear."""

    def __init__(self, blocks, candidates, in_channels, num_classes, width, affine, track):
        """Supernet (affine and track false): each block's candidates share weights (`MBConvChoice`)."""
        super().__init__()
        stem = _width(STEM * width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(stem, track_running_stats=track), nn.ReLU6())
        first = _width(STAGES[0][1] * width)
        self.first = InvertedResidual(stem, first, 3, 1, 1, True, track)
        if affine or track:
            self.blocks = nn.ModuleList(Edge([OPS[name](c_in, c_out, stride, affine, track) for name in names])
                                        for (c_in, c_out, stride), names in zip(blocks, candidates))
        else:
            self.shared = nn.ModuleList(SharedMBConv(c_in, c_out, stride) for c_in, c_out, stride in blocks)
            self.blocks = nn.ModuleList(Edge([MBConvChoice(shared, *mbconv_choice(name)) for name in names])
                                        for shared, names in zip(self.shared, candidates))
        head = _width(HEAD * width)  # scaled too, so that small variants stay small
        self.head = nn.Sequential(nn.Conv2d(blocks[-1][1], head, 1, bias=False),
                                  nn.BatchNorm2d(head, track_running_stats=track), nn.ReLU6(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(head, num_classes)

    def edges(self):
        """(encoding name, row, candidate ops) of every mixed block."""
        return ((ENCODING, k, ops) for k, ops in enumerate(self.blocks))

    def forward(self, x, weights: dict | None = None, active: dict | None = None):
        weights = None if weights is None else weights[ENCODING]
        active = None if active is None else active[ENCODING]
        if active is not None:  # one device-to-host copy per forward, not one per block
            active = active.tolist() if torch.is_tensor(active) else list(active)
        x = self.first(self.stem(x))
        for k, ops in enumerate(self.blocks):
            x = ops.mix(x, None if weights is None else weights[k], None if active is None else active[k])
        return self.classifier(self.head(x))


@dataclass(frozen=True)
class MBConvSpaceConfig:
    width_multiplier: float = spec(1.0, gt=0.0, le=10.0)  # scales every width (AutoHAS's small variant: 0.3)
    depth_multiplier: float = spec(1.0, gt=0.0, le=10.0)  # scales every stage's block count, rounded up (small variant: 0.3)


class MBConvSpace(Space):
    """Derivation: argmax per block."""

    name = "mbconv"
    op_names = MBCONV_OPS

    def __init__(self, options: MBConvSpaceConfig, data=None):
        super().__init__(options, data)
        self.layout = []  # (c_in, c_out, stride) of every searched block
        c_in = _width(STAGES[0][1] * options.width_multiplier)
        for _, width, count, stride in STAGES[1:]:
            c_out = _width(width * options.width_multiplier)
            for i in range(math.ceil(count * options.depth_multiplier)):
                self.layout.append((c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.block_names = tuple(f"block_{k}" for k in range(len(self.layout)))

    @property
    def encodings(self):
        return {ENCODING: (self.block_names, self.op_names)}

    def _network(self, candidates, affine, track):
        return MBConvNetwork(self.layout, candidates, self.data.in_channels, self.data.num_classes,
                             self.options.width_multiplier, affine, track)

    def supernet(self, partial: int = 1, affine: bool = False) -> MBConvNetwork:
        if partial != 1:
            raise ValueError("partial channels need a cell space whose edges keep their width (nb201, darts), "
                             "not mbconv")
        return self._network([self.op_names] * len(self.layout), affine=affine, track=False)

    def network(self, genotype: MBConvGenotype) -> MBConvNetwork:
        self._check(genotype)
        return self._network([(op,) for op in genotype.ops], affine=True, track=True)

    def _check(self, genotype: MBConvGenotype) -> MBConvGenotype:
        if len(genotype.ops) != len(self.layout):
            raise GenotypeError(f"this mbconv space searches {len(self.layout)} blocks, the genotype has "
                                f"{len(genotype.ops)}")
        return genotype

    def derive(self, weights) -> MBConvGenotype:
        return MBConvGenotype(tuple(self.op_names[i] for i in weights[ENCODING].argmax(-1).tolist()))

    def derived_weights(self, genotype: MBConvGenotype):
        return {ENCODING: one_hot_rows(self.op_names, self._check(genotype).ops)}

    def parse(self, text: str) -> MBConvGenotype:
        return self._check(MBConvGenotype(tuple(text.strip().split(SEPARATOR))))

    def choices(self) -> dict[str, tuple[str, ...]]:
        return {key: self.op_names for key in self.block_names}

    def from_choices(self, values: dict) -> MBConvGenotype:
        return MBConvGenotype(tuple(str(values[key]) for key in self.block_names))

    def to_choices(self, genotype: MBConvGenotype) -> dict[str, str]:
        return dict(zip(self.block_names, self._check(genotype).ops))
