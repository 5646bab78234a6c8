"""NAS-Bench-201: the 4-node cell, its genotype string, supernet and fixed network, and the space."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from raysearch.schema import ConfigError, spec
from raysearch.spaces.base import GenotypeError, Space, one_hot_rows
from raysearch.spaces.mixed import Edge
from raysearch.spaces.ops import ReLUConvBN, normed_op

ENCODING = "cell"  # the one architecture encoding: the op of each edge, shared by all cells
OP_NAMES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to, from) per edge; the row order of the [6, 5] architecture encoding.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_ENTRY = re.compile(r"([a-z0-9_]+)~(\d+)")


@dataclass(frozen=True)
class NB201Genotype:
    """One NB201 cell: an op name per edge, in EDGES order."""

    ops: tuple[str, ...]

    def __post_init__(self):
        if len(self.ops) != len(EDGES):
            raise GenotypeError(f"an NB201 genotype has {len(EDGES)} edges, got {len(self.ops)}")
        bad = [op for op in self.ops if op not in OP_NAMES]
        if bad:
            raise GenotypeError(f"unknown NB201 op(s) {bad}; known: {', '.join(OP_NAMES)}")

    space = "nb201"

    @classmethod
    def from_indices(cls, indices) -> "NB201Genotype":
        return cls(tuple(OP_NAMES[int(i)] for i in indices))

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(OP_NAMES.index(op) for op in self.ops)

    def to_string(self) -> str:
        """The `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` string NB201 tools look up."""
        nodes = []
        for node in (1, 2, 3):
            entries = [f"{op}~{src}" for (dst, src), op in zip(EDGES, self.ops) if dst == node]
            nodes.append("|" + "|".join(entries) + "|")
        return "+".join(nodes)

    @classmethod
    def from_string(cls, text: str) -> "NB201Genotype":
        nodes = text.strip().split("+")
        if len(nodes) != 3:
            raise GenotypeError(f"an NB201 string has 3 nodes separated by '+', got {len(nodes)} in {text!r}")
        ops = []
        for node, part in enumerate(nodes, start=1):
            if not (part.startswith("|") and part.endswith("|")):
                raise GenotypeError(f"node {node} must be wrapped in '|': {part!r}")
            entries = part[1:-1].split("|")
            if len(entries) != node:
                raise GenotypeError(f"node {node} takes {node} inputs, got {len(entries)}: {part!r}")
            for src, entry in enumerate(entries):
                match = _ENTRY.fullmatch(entry)
                if not match or int(match.group(2)) != src:
                    raise GenotypeError(f"node {node} entry {src} must read 'op~{src}', got {entry!r}")
                ops.append(match.group(1))
        return cls(tuple(ops))

    @classmethod
    def all(cls):
        """Every cell of the space (5^6 = 15,625)."""
        for ops in itertools.product(OP_NAMES, repeat=len(EDGES)):
            yield cls(ops)

    def __str__(self) -> str:
        return self.to_string()


class Cell(nn.Module):
    """Node i = sum_{j<i} edge_ij(node j); the output is node 3."""

    def __init__(self, channels: int, candidates, affine: bool, track: bool, partial: int = 1, op_norm: bool = False):
        super().__init__()
        c = channels // partial
        self.edges = nn.ModuleList(
            Edge([normed_op(name, c, 1, affine, track, op_norm) for name in names], partial) for names in candidates)

    def forward(self, x, weights=None, active: list[int] | None = None):
        nodes = [x]
        for node in (1, 2, 3):
            total = 0
            for k, (dst, src) in enumerate(EDGES):
                if dst == node:
                    w = None if weights is None else weights[k]
                    a = None if active is None else active[k]
                    total = total + self.edges[k].mix(nodes[src], w, a)
            nodes.append(total)
        return nodes[3]


class ResidualReduction(nn.Module):
    """NB201's reduction block: two 3x3 ReLUConvBN (first strided) + pooled 1x1 shortcut."""

    def __init__(self, c_in, c_out, affine, track):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine, track)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine, track)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


@dataclass(frozen=True)
class NB201Skeleton:
    """Macro skeleton: `stages` stages of N cells at C, 2C, 4C, joined by reduction blocks.

    The benchmark uses 3 stages. On tiny inputs (8x8 digits) the reduction
    blocks' own 3x3 convs make any cell look good, so one stage of cells lets
    the cell's quality show.
    """

    channels: int  # C, width of the first stage
    cells_per_stage: int  # N
    stages: int  # 1 to 3
    in_channels: int  # image channels of the dataset
    num_classes: int  # classifier outputs
    candidates: tuple = field(repr=False)  # op names per edge: all ops (supernet) or one (fixed)
    partial: int = 1  # supernets: 1/partial of each edge's channels go through its ops (PC-DARTS)
    op_norm: bool = False  # every op ends in a batch norm (the space's `op_norm`)


class NB201Network(nn.Module):
    """Stem -> N cells -> (reduction -> N cells) per further stage -> head.

    A supernet when every edge holds all candidates (forward takes {"cell": [6, 5]
    mixing weights} and, for hard sampling, {"cell": the active op per edge}); a fixed
    network when every edge holds one op (forward takes only the input).
    As in the NB201 search code, only the cells' BN is non-affine in a supernet
    (`cell_affine=False`); stem, reductions and head keep affine BN.
    """

    def __init__(self, skeleton: NB201Skeleton, cell_affine: bool, track: bool):
        super().__init__()
        c = skeleton.channels
        self.stem = nn.Sequential(
            nn.Conv2d(skeleton.in_channels, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c, track_running_stats=track),
        )
        blocks = []
        for stage in range(skeleton.stages):
            width = c * 2**stage
            if stage:
                blocks.append(ResidualReduction(width // 2, width, True, track))
            blocks += [Cell(width, skeleton.candidates, cell_affine, track, skeleton.partial, skeleton.op_norm)
                       for _ in range(skeleton.cells_per_stage)]
        self.blocks = nn.ModuleList(blocks)
        width = c * 2 ** (skeleton.stages - 1)
        self.head = nn.Sequential(
            nn.BatchNorm2d(width, track_running_stats=track), nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(width, skeleton.num_classes)

    def edges(self):
        """(encoding name, row, candidate ops) of every mixed edge."""
        for block in self.blocks:
            if isinstance(block, Cell):
                yield from ((ENCODING, k, ops) for k, ops in enumerate(block.edges))

    def forward(self, x, weights: dict | None = None, active: dict | None = None):
        weights = None if weights is None else weights[ENCODING]
        active = None if active is None else active[ENCODING]
        if active is not None:  # one device-to-host copy per forward, not one per edge
            active = active.tolist() if torch.is_tensor(active) else list(active)
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, weights, active) if isinstance(block, Cell) else block(x)
        return self.classifier(self.head(x))


@dataclass(frozen=True)
class NB201SpaceConfig:
    channels: int = spec(16, ge=1)  # width C of the first stage (NB201: 16)
    cells_per_stage: int = spec(5, ge=1)  # cells N per stage (NB201: 5)
    stages: int = spec(3, ge=1, le=3)  # stages at C, 2C, 4C joined by residual reductions (NB201: 3)
    ops: tuple[str, ...] = OP_NAMES  # candidate ops of every edge, e.g. all but none (checked below)
    op_norm: bool = False  # a batch norm after every op that lacks one (skip, pool), in the supernet and the network (ISTA-NAS, DHA)

    def __post_init__(self):
        bad = [op for op in self.ops if op not in OP_NAMES]
        if bad or len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"space.ops: distinct NB201 ops among {', '.join(OP_NAMES)}, got {list(self.ops)}")


class NB201Space(Space):
    """NAS-Bench-201 cells in the NB201 macro skeleton; derivation is argmax per edge over `space.ops`
    (all five by default, `none` included; leaving `none` out, as many NB201 searches do, is that option)."""

    name = "nb201"
    edge_names = tuple(f"{dst}<-{src}" for dst, src in EDGES)
    # Plain identifiers: they become Tune config keys, ConfigSpace names and MLflow params.
    choice_keys = tuple(f"edge_{dst}_{src}" for dst, src in EDGES)

    @property
    def op_names(self) -> tuple[str, ...]:
        return self.options.ops

    @property
    def encodings(self):
        return {ENCODING: (self.edge_names, self.op_names)}

    def _skeleton(self, candidates, partial=1):
        o = self.options
        if o.channels % partial:
            raise ValueError(f"space.channels={o.channels} is not divisible into {partial} partial-channel slices")
        return NB201Skeleton(o.channels, o.cells_per_stage, o.stages, self.data.in_channels,
                             self.data.num_classes, tuple(candidates), partial, o.op_norm)

    def supernet(self, partial: int = 1, affine: bool = False) -> NB201Network:
        return NB201Network(self._skeleton([self.op_names] * len(EDGES), partial), cell_affine=affine, track=False)

    def network(self, genotype: NB201Genotype) -> NB201Network:
        return NB201Network(self._skeleton([(op,) for op in genotype.ops]), cell_affine=True, track=True)

    def derive(self, weights) -> NB201Genotype:
        return NB201Genotype(tuple(self.op_names[k] for k in weights[ENCODING].argmax(-1).tolist()))

    def node_groups(self):
        """Every node keeps all its incoming edges (one op each)."""
        return [(ENCODING, tuple(k for k, (dst, _) in enumerate(EDGES) if dst == node), node) for node in (1, 2, 3)]

    def derived_weights(self, genotype: NB201Genotype):
        return {ENCODING: one_hot_rows(self.op_names, genotype.ops)}

    def parse(self, text: str) -> NB201Genotype:
        return NB201Genotype.from_string(text)

    def choices(self) -> dict[str, tuple[str, ...]]:
        return {key: self.op_names for key in self.choice_keys}

    def from_choices(self, values: dict) -> NB201Genotype:
        return NB201Genotype(tuple(str(values[key]) for key in self.choice_keys))

    def to_choices(self, genotype: NB201Genotype) -> dict[str, str]:
        return dict(zip(self.choice_keys, genotype.ops))
