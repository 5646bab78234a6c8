import pytest
import torch

from raysearch.spaces import DartsGenotype, GenotypeError
from raysearch.spaces.darts import EDGES, OP_NAMES
from tests.conftest import tiny_space

# DARTS (2nd order) as published in the DARTS code base's genotypes.py.
DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def test_published_genotype_round_trips_exactly():
    genotype = DartsGenotype.from_string(DARTS_V2)
    assert genotype.normal[7] == ("dil_conv_3x3", 2) and genotype.reduce_concat == (2, 3, 4, 5)
    assert genotype.to_string() == DARTS_V2


def test_the_darts_search_printout_with_range_concat_is_read():
    printed = DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)").replace("'", '"')
    assert DartsGenotype.from_string(printed) == DartsGenotype.from_string(DARTS_V2)


@pytest.mark.parametrize("text, fragment", [
    ("Genotype(normal=[], reduce=[])", "expected Genotype"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "node 5 reads inputs 0..4"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 0)"), "reads input 0 twice"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)", "('none', 2)"), "unknown op 'none'"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)", "__import__('os').system('true')"), "list of"),
    (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[1, 2]"), "normal_concat"),
])
def test_malformed_genotypes_are_rejected_without_evaluating_them(text, fragment):
    with pytest.raises(GenotypeError, match=fragment.replace("(", r"\(")):
        DartsGenotype.from_string(text)


def test_derivation_keeps_two_strongest_edges_per_node_and_never_none():
    space = tiny_space("darts")
    weights = torch.zeros(14, 8)
    weights[:, 0] = 10.0  # `none` dominates every edge, and must still be ignored
    strength = {(3, 2): 0.9, (3, 0): 0.5, (3, 1): 0.2, (5, 4): 0.8, (5, 1): 0.7}
    for (node, src), value in strength.items():
        weights[EDGES.index((node, src)), OP_NAMES.index("sep_conv_5x5")] = value
    genotype = space.derive({"normal": weights, "reduce": weights})
    node3 = genotype.normal[2:4]
    assert node3 == (("sep_conv_5x5", 2), ("sep_conv_5x5", 0))  # by strength, as DARTS's _parse
    assert genotype.normal[6:8] == (("sep_conv_5x5", 4), ("sep_conv_5x5", 1))
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)


def test_choices_name_input_pairs_and_ops():
    space = tiny_space("darts")
    choices = space.choices()
    assert len(choices) == 2 * 4 * 3
    assert choices["normal_node5_inputs"] == ("0_1", "0_2", "0_3", "0_4", "1_2", "1_3", "1_4", "2_3", "2_4", "3_4")
    assert "none" not in choices["reduce_node2_op_a"]
