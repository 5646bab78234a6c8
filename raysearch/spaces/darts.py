"""The DARTS space: normal and reduction cells of 4 intermediate nodes over 14 edges, 8 ops each.

Follows the DARTS code base (Liu et al., 2019): two preprocessed inputs per
cell (the outputs of the two previous cells), node i sums one op per earlier
state, the cell concatenates its intermediate nodes; reduction cells sit at
1/3 and 2/3 of the layers and double the width; edges from the inputs of a
reduction cell are strided. In the supernet the cells' BN is non-affine
(batch statistics only); the stem's BN stays affine, as in the DARTS code.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch
from torch import nn

from raysearch.schema import spec
from raysearch.spaces.base import GenotypeError, Space, one_hot_rows
from raysearch.spaces.mixed import Edge
from raysearch.spaces.ops import OPS, FactorizedReduce, ReLUConvBN, normed_op

OP_NAMES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
            "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
NODES = (2, 3, 4, 5)  # intermediate nodes; states 0 and 1 are the cell's two inputs
EDGES = tuple((node, src) for node in NODES for src in range(node))  # the 14 encoding rows, in DARTS's order
CELL_TYPES = ("normal", "reduce")  # the two encodings, one [14, 8] each
CONCAT = (2, 3, 4, 5)

_PAIR = r"\(\s*['\"]([a-z0-9_]+)['\"]\s*,\s*(\d+)\s*\)"
_CONCAT = r"\[[\d,\s]*\]|range\(\s*\d+\s*,\s*\d+\s*\)"
_GENOTYPE = re.compile(
    r"Genotype\(\s*normal\s*=\s*\[(.*?)\]\s*,\s*normal_concat\s*=\s*(" + _CONCAT + r")\s*,"
    r"\s*reduce\s*=\s*\[(.*?)\]\s*,\s*reduce_concat\s*=\s*(" + _CONCAT + r")\s*\)", re.S)


def _concat(text: str) -> tuple[int, ...]:
    if text.startswith("range"):
        low, high = map(int, re.findall(r"\d+", text))
        return tuple(range(low, high))
    return tuple(int(v) for v in re.findall(r"\d+", text))


def _pairs(text: str, cell: str) -> tuple[tuple[str, int], ...]:
    pairs = tuple((op, int(src)) for op, src in re.findall(_PAIR, text))
    if re.sub(_PAIR, "", text).replace(",", "").strip():
        raise GenotypeError(f"{cell}: expected a list of ('op', input) pairs, got [{text}]")
    return pairs


@dataclass(frozen=True)
class DartsGenotype:
    """The DARTS code base's Genotype: 2 (op, input) pairs per node and the concatenated nodes, per cell type.

    Input 0 and 1 are the cell's inputs, input k >= 2 is node k. A node's two
    inputs are distinct, and `none` is never kept (the derivation excludes it).
    """

    normal: tuple[tuple[str, int], ...]
    reduce: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...] = CONCAT
    reduce_concat: tuple[int, ...] = CONCAT

    def __post_init__(self):
        for cell in CELL_TYPES:
            pairs, concat = getattr(self, cell), getattr(self, f"{cell}_concat")
            if len(pairs) != 2 * len(NODES):
                raise GenotypeError(f"{cell}: a DARTS cell has {2 * len(NODES)} (op, input) pairs, got {len(pairs)}")
            for k, (op, src) in enumerate(pairs):
                node = NODES[k // 2]
                if op not in OP_NAMES or op == "none":
                    raise GenotypeError(f"{cell}: unknown op {op!r}; known: {', '.join(OP_NAMES[1:])}")
                if not 0 <= src < node:
                    raise GenotypeError(f"{cell}: node {node} reads inputs 0..{node - 1}, got {src}")
            for node in NODES:
                a, b = pairs[2 * (node - 2)][1], pairs[2 * (node - 2) + 1][1]
                if a == b:
                    raise GenotypeError(f"{cell}: node {node} reads input {a} twice")
            if not concat or any(n not in NODES for n in concat):
                raise GenotypeError(f"{cell}_concat: expected nodes among {list(NODES)}, got {list(concat)}")

    def to_string(self) -> str:
        def pairs(p):
            return "[" + ", ".join(f"('{op}', {src})" for op, src in p) + "]"

        return (f"Genotype(normal={pairs(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={pairs(self.reduce)}, reduce_concat={list(self.reduce_concat)})")

    @classmethod
    def from_string(cls, text: str) -> "DartsGenotype":
        """Reads `to_string`'s form and the DARTS code's printouts (`range(2, 6)` concat); no eval."""
        match = _GENOTYPE.fullmatch(text.strip())
        if not match:
            raise GenotypeError(f"expected Genotype(normal=[...], normal_concat=[...], reduce=[...], "
                                f"reduce_concat=[...]), got {text!r}")
        normal, normal_concat, reduce, reduce_concat = match.groups()
        return cls(_pairs(normal, "normal"), _pairs(reduce, "reduce"), _concat(normal_concat), _concat(reduce_concat))

    def __str__(self) -> str:
        return self.to_string()


class Cell(nn.Module):
    """A DARTS cell over `edges`: (node, input, candidate op names) triples.

    A supernet cell holds all 14 edges with every op (rows of the [14, 8]
    weights); a fixed cell holds the genotype's 8 edges with one op each.
    """

    def __init__(self, edges, concat, c_pp, c_p, c, reduction, reduction_prev, affine, track, partial=1,
                 op_norm=False):
        super().__init__()
        self.pre0 = (FactorizedReduce(c_pp, c, 2, affine, track) if reduction_prev
                     else ReLUConvBN(c_pp, c, 1, 1, 0, affine, track))
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine, track)
        self.reduction, self.concat = reduction, tuple(concat)
        self.routes = tuple((node, src) for node, src, _ in edges)
        strides = [2 if reduction and src < 2 else 1 for _, src, _ in edges]
        self.edges = nn.ModuleList(
            Edge([self._op(name, c // partial, stride, affine, track, op_norm) for name in names], partial, stride)
            for (_, _, names), stride in zip(edges, strides))

    @staticmethod
    def _op(name, c, stride, affine, track, op_norm):
        if op_norm:
            return normed_op(name, c, stride, affine, track, True)
        op = OPS[name](c, c, stride, affine, track)
        # DARTS appends a non-affine BN to pooling in the supernet, so its scale matches the convs'.
        if "pool" in name and not affine:
            op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False, track_running_stats=track))
        return op

    def forward(self, s0, s1, weights=None, active=None):
        states = [self.pre0(s0), self.pre1(s1)]
        for node in NODES:
            total = 0
            for k, (dst, src) in enumerate(self.routes):
                if dst == node:
                    total = total + self.edges[k].mix(states[src], None if weights is None else weights[k],
                                                      None if active is None else active[k])
            states.append(total)
        return torch.cat([states[n] for n in self.concat], dim=1)


class DartsNetwork(nn.Module):
    """Stem -> `layers` cells (reductions at 1/3 and 2/3) -> global pooling -> linear, as DARTS's search network.

    `cells` gives the (edges, concat) of the normal and of the reduction cell.
    """

    def __init__(self, channels, layers, stem_multiplier, in_channels, num_classes, cells, affine, track, partial=1,
                 op_norm=False):
        super().__init__()
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_curr, track_running_stats=track))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells, reduction_prev = nn.ModuleList(), False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c_curr *= 2 if reduction else 1
            edges, concat = cells["reduce" if reduction else "normal"]
            self.cells.append(Cell(edges, concat, c_pp, c_p, c_curr, reduction, reduction_prev, affine, track,
                                   partial, op_norm))
            c_pp, c_p, reduction_prev = c_p, len(concat) * c_curr, reduction
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_p, num_classes)

    def edges(self):
        """(encoding name, row, candidate ops) of every mixed edge."""
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            yield from ((kind, EDGES.index(route), ops) for route, ops in zip(cell.routes, cell.edges))

    def forward(self, x, weights: dict | None = None, active: dict | None = None):
        if active is not None:  # one device-to-host copy per forward, not one per edge
            active = {k: v.tolist() if torch.is_tensor(v) else list(v) for k, v in active.items()}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, None if weights is None else weights[kind],
                              None if active is None else active[kind])
        return self.classifier(self.head(s1))


@dataclass(frozen=True)
class DartsSpaceConfig:
    channels: int = spec(16, ge=1)  # initial width C (DARTS search: 16)
    layers: int = spec(8, ge=3)  # cells, reductions at layers//3 and 2*layers//3 (DARTS search: 8)
    stem_multiplier: int = spec(3, ge=1)  # stem width = this x C (DARTS: 3)
    op_norm: bool = False  # a batch norm after every op that lacks one (skip, pools), in the supernet and the network (ISTA-NAS, DHA)


class DartsSpace(Space):
    """Derivation: per node the 2 incoming edges whose strongest non-`none` op is largest, each with
    its argmax non-`none` op, in the order of strength (as DARTS's `_parse`)."""

    name = "darts"
    op_names = OP_NAMES
    excluded_ops = ("none",)
    edge_names = tuple(f"{node}<-{src}" for node, src in EDGES)

    @property
    def encodings(self):
        return {cell: (self.edge_names, self.op_names) for cell in CELL_TYPES}

    def _network(self, cells, affine, track, partial=1):
        o = self.options
        if o.channels % partial:
            raise ValueError(f"space.channels={o.channels} is not divisible into {partial} partial-channel slices")
        return DartsNetwork(o.channels, o.layers, o.stem_multiplier, self.data.in_channels, self.data.num_classes,
                            cells, affine, track, partial, o.op_norm)

    def supernet(self, partial: int = 1, affine: bool = False) -> DartsNetwork:
        full = ([(node, src, self.op_names) for node, src in EDGES], CONCAT)
        return self._network({cell: full for cell in CELL_TYPES}, affine=affine, track=False, partial=partial)

    def network(self, genotype: DartsGenotype) -> DartsNetwork:
        cells = {}
        for cell in CELL_TYPES:
            pairs = getattr(genotype, cell)
            cells[cell] = ([(NODES[k // 2], src, (op,)) for k, (op, src) in enumerate(pairs)],
                           getattr(genotype, f"{cell}_concat"))
        return self._network(cells, affine=True, track=True)

    def derive(self, weights) -> DartsGenotype:
        keep = [k for k, op in enumerate(self.op_names) if op not in self.excluded_ops]
        cells = {}
        for cell in CELL_TYPES:
            w = weights[cell].detach().cpu()[:, keep]
            pairs = []
            for node in NODES:
                rows = [k for k, (dst, _) in enumerate(EDGES) if dst == node]
                strongest = sorted(rows, key=lambda r: -w[r].max().item())[:2]
                pairs += [(self.op_names[keep[int(w[r].argmax())]], EDGES[r][1]) for r in strongest]
            cells[cell] = tuple(pairs)
        return DartsGenotype(cells["normal"], cells["reduce"])

    def node_groups(self):
        return [(cell, tuple(k for k, (dst, _) in enumerate(EDGES) if dst == node), 2)
                for cell in CELL_TYPES for node in NODES]

    def derived_weights(self, genotype: DartsGenotype):
        out = {}
        for cell in CELL_TYPES:
            chosen = [None] * len(EDGES)
            for k, (op, src) in enumerate(getattr(genotype, cell)):
                chosen[EDGES.index((NODES[k // 2], src))] = op
            out[cell] = one_hot_rows(self.op_names, chosen)
        return out

    def parse(self, text: str) -> DartsGenotype:
        return DartsGenotype.from_string(text)

    # Per cell type and node: the pair of inputs (one categorical over "i_j") and one op per input.
    def choices(self) -> dict[str, tuple[str, ...]]:
        ops = tuple(op for op in self.op_names if op not in self.excluded_ops)
        out = {}
        for cell, node in itertools.product(CELL_TYPES, NODES):
            out[f"{cell}_node{node}_inputs"] = tuple(f"{a}_{b}" for a, b in itertools.combinations(range(node), 2))
            out[f"{cell}_node{node}_op_a"] = out[f"{cell}_node{node}_op_b"] = ops
        return out

    def from_choices(self, values: dict) -> DartsGenotype:
        cells = {}
        for cell in CELL_TYPES:
            pairs = []
            for node in NODES:
                a, b = (int(v) for v in str(values[f"{cell}_node{node}_inputs"]).split("_"))
                pairs += [(str(values[f"{cell}_node{node}_op_a"]), a), (str(values[f"{cell}_node{node}_op_b"]), b)]
            cells[cell] = tuple(pairs)
        return DartsGenotype(cells["normal"], cells["reduce"])

    def to_choices(self, genotype: DartsGenotype) -> dict[str, str]:
        """The node's two pairs sorted by input: a genotype listing them in another order (DARTS lists
        them by strength) maps to the same choices and the same network."""
        if genotype.normal_concat != CONCAT or genotype.reduce_concat != CONCAT:
            raise GenotypeError(f"choices describe cells that concatenate nodes {list(CONCAT)}")
        out = {}
        for cell in CELL_TYPES:
            pairs = getattr(genotype, cell)
            for node in NODES:
                (op_a, a), (op_b, b) = sorted(pairs[2 * (node - 2): 2 * (node - 1)], key=lambda p: p[1])
                out.update({f"{cell}_node{node}_inputs": f"{a}_{b}", f"{cell}_node{node}_op_a": op_a,
                            f"{cell}_node{node}_op_b": op_b})
        return out
