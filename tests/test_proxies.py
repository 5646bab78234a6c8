"""Zero-cost proxies against closed forms on tiny networks, and the caller's network left untouched."""

import math

import pytest
import torch
from torch import nn

from raysearch.proxies import PROXIES, flops, grad_norm, jacob_cov, naswot, num_params, snip, synflow
from raysearch.registry import UnknownNameError
from raysearch.spaces import DataShape, NB201SpaceConfig, NB201Space
from raysearch.spaces.nb201 import NB201Genotype

W1 = [[0.5, -1.0, 2.0], [-0.25, 0.75, -1.5], [1.0, 0.0, -0.5], [0.3, -0.2, 0.1]]  # 4 x 3
B1 = [0.1, -0.2, 0.3, -0.4]
W2 = [[1.0, -2.0, 0.5, 0.25], [-0.5, 1.5, -1.0, 2.0]]  # 2 x 4
B2 = [0.7, -0.3]
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def linear(weight, bias) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


def test_synflow_of_one_linear_layer_is_the_sum_of_absolute_weights():
    # dR/dW_ij = |x_j| = 1 for the all-ones input, so the score is sum |W|.
    x = torch.randn(5, 3)
    expected = sum(abs(w) for row in W2 for w in row[:3])
    assert synflow(linear([row[:3] for row in W2], B2), x, None) == pytest.approx(expected)


def test_synflow_of_two_linear_layers():
    # R = sum_k sum_j |W2_kj| (r_j + |b1_j|) + const, with r_j = sum_i |W1_ji|:
    # layer 1 gives sum_j s_j r_j (s_j = sum_k |W2_kj|), layer 2 gives sum_j s_j (r_j + |b1_j|).
    r = [sum(abs(w) for w in row) for row in W1]
    s = [sum(abs(W2[k][j]) for k in range(2)) for j in range(4)]
    expected = sum(s[j] * (2 * r[j] + abs(B1[j])) for j in range(4))
    net = nn.Sequential(linear(W1, B1), linear(W2, B2))
    assert synflow(net, torch.randn(5, 3), None) == pytest.approx(expected)


def test_synflow_switches_batchnorm_off():
    bn = nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.weight.fill_(3.0), bn.bias.fill_(-2.0), bn.running_mean.fill_(5.0), bn.running_var.fill_(0.01)
    plain = nn.Sequential(linear(W1, B1), linear(W2, B2))
    with_bn = nn.Sequential(linear(W1, B1), bn, linear(W2, B2)).train()  # train BN would fail on one sample
    x = torch.randn(5, 3)
    assert synflow(with_bn, x, None) == pytest.approx(synflow(plain, x, None))


def _ce_weight_grad(weight, bias, x, y):
    """dCE/dW of a linear layer: mean over samples of (softmax(z) - onehot(y)) x^T."""
    W, b = torch.tensor(weight), torch.tensor(bias)
    p = torch.softmax(x @ W.T + b, dim=1)
    delta = p - nn.functional.one_hot(y, len(bias)).float()
    return W, delta.T @ x / len(x)


def test_grad_norm_and_snip_of_one_linear_layer():
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])
    weight = [row[:3] for row in W2]
    W, grad = _ce_weight_grad(weight, B2, x, y)
    assert grad_norm(linear(weight, B2), x, y) == pytest.approx(math.sqrt((grad**2).sum().item()), rel=1e-5)
    assert snip(linear(weight, B2), x, y) == pytest.approx((W * grad).abs().sum().item(), rel=1e-5)


def test_jacob_cov_of_a_linear_network():
    # Every sample's Jacobian is W^T 1: correlations all 1, eigenvalues n and n-1 zeros.
    n, k = 5, 1e-5
    expected = -(math.log(n + k) + 1 / (n + k)) - (n - 1) * (math.log(k) + 1 / k)
    net = nn.Sequential(linear(W1, B1), linear(W2, B2))
    assert jacob_cov(net, torch.randn(n, 3), None) == pytest.approx(expected, rel=1e-6)


def test_jacob_cov_of_a_network_blind_to_its_input_is_minus_infinity():
    net = linear([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [1.0, -1.0])  # zero Jacobian: correlation undefined
    assert jacob_cov(net, torch.randn(4, 3), None) == -math.inf


@pytest.mark.parametrize("inplace", [False, True])
def test_naswot_counts_agreeing_relu_units(inplace):
    identity = linear([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [0.0, 0.0, 0.0])
    net = nn.Sequential(identity, nn.ReLU(inplace=inplace))
    x = torch.tensor([[1.0, -1.0, 2.0], [3.0, -2.0, -1.0], [-1.0, -1.0, 1.0]])
    # Codes 101, 100, 001: K = [[3, 2, 2], [2, 3, 1], [2, 1, 3]], det = 24 - 8 - 8 = 8.
    assert naswot(net, x, None) == pytest.approx(math.log(8))


def test_num_params_and_flops_of_a_conv_linear_network():
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),  # 72 + 4 params; 4*6*6 outputs x 2*3*3 = 2592 MACs
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, bias=False),  # 4*2*3*3 = 72; 4*3*3 x 2*3*3 = 648
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),  # 12 + 3 params; 12 MACs
    )
    net[-1].bias.requires_grad_(False)  # frozen: not counted
    x = torch.randn(5, 2, 6, 6)
    assert num_params(net, x, None) == 72 + 4 + 72 + 12
    assert flops(net, x, None) == 2592 + 648 + 12


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", sorted(PROXIES))
def test_proxy_leaves_the_network_unchanged_and_is_finite(name, training):
    torch.manual_seed(0)
    net = NB201Space(NB201SpaceConfig(4, 1, 1), DataShape(1, 8, 10)).network(NB201Genotype.from_string(EXAMPLE)).train(training)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x_before = x.clone()
    score = PROXIES[name](net, x, y)
    assert isinstance(score, float) and math.isfinite(score)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())
    assert all(m.training == training for m in net.modules())
    assert torch.equal(x, x_before) and x.grad is None and not x.requires_grad


def test_unknown_proxy_lists_the_known_names():
    assert set(PROXIES) == {"synflow", "grad_norm", "snip", "jacob_cov", "naswot", "num_params", "flops"}
    with pytest.raises(UnknownNameError, match="unknown proxy 'zen'; known: flops, grad_norm"):
        PROXIES["zen"]
