"""DHA's augmentation ops, pair sampler and policy update (raysearch.augment)."""

import pytest
import torch

from raysearch.augment import OP_NAMES, OPS, Augmenter, PairPolicy
from raysearch.registry import UnknownNameError

NO_MAGNITUDE = {"AutoContrast", "Equalize", "Identity"}


def rand01(c, n=4, h=16, w=20, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def blob(c):
    """Black 32x32 image with a white 6x6 square off-centre: rows 6-11, columns 20-25."""
    x = torch.zeros(1, c, 32, 32)
    x[..., 6:12, 20:26] = 1.0
    return x


def centroid(x):
    """(row, column) centre of mass of the first image's summed channels."""
    mass = x[0].sum(0)
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    return float((mass * rows).sum() / mass.sum()), float((mass * cols).sum() / mass.sum())


def variation(x):
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., 1:] - x[..., :-1]).abs().sum())


def test_op_names_are_the_papers_fourteen_in_order_and_unknown_names_list_them():
    assert OP_NAMES == ("AutoContrast", "Equalize", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
                        "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Identity")
    with pytest.raises(UnknownNameError, match="Brightness, Color"):
        OPS["Invert"]


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_keeps_shape_dtype_and_range_and_is_deterministic(name, c):
    x = rand01(c)
    for m in (0.37, 1.0):
        for sign in (1, -1):
            y = OPS[name](x, m, sign)
            assert y.shape == x.shape and y.dtype == x.dtype
            assert y.min() >= 0 and y.max() <= 1
            assert torch.equal(y, OPS[name](x, m, sign))
    if name not in NO_MAGNITUDE:  # magnitude 0 is "no change" for every op that has one
        torch.testing.assert_close(OPS[name](x, 0.0, 1), x, atol=1e-5, rtol=0)


def check_autocontrast(x, c):
    low = 0.4 + 0.2 * rand01(c)
    y = OPS["AutoContrast"](low, 1.0, 1)
    torch.testing.assert_close(y.amin((2, 3)), torch.zeros(4, c))
    torch.testing.assert_close(y.amax((2, 3)), torch.ones(4, c))


def check_equalize(x, c):
    low = 0.4 + 0.2 * rand01(c)
    y = OPS["Equalize"](low, 1.0, 1)
    assert y.std() > 3 * low.std() and y.max() - y.min() > 0.9  # a narrow histogram spread out


def check_rotate(x, c):
    row, col = centroid(blob(c))
    (r1, c1), (r2, c2) = centroid(OPS["Rotate"](blob(c), 1.0, 1)), centroid(OPS["Rotate"](blob(c), 1.0, -1))
    assert abs(r1 - row) + abs(c1 - col) > 3 and abs(r2 - row) + abs(c2 - col) > 3
    assert abs(r1 - r2) + abs(c1 - c2) > 3  # the sign picks the direction


def check_posterize(x, c):
    assert len(OPS["Posterize"](x, 1.0, 1).unique()) <= 16  # 4 bits kept
    assert len(OPS["Posterize"](x, 0.5, 1).unique()) <= 64  # 6 bits kept


def check_solarize(x, c):
    threshold = 128 / 255
    expected = torch.where(x >= threshold, 1 - x, x)
    torch.testing.assert_close(OPS["Solarize"](x, 0.5, 1), expected)
    assert torch.equal(OPS["Solarize"](x, 1.0, 1), 1 - x)  # threshold 0: every pixel inverted


def check_color(x, c):
    y_up, y_down = OPS["Color"](x, 1.0, 1), OPS["Color"](x, 1.0, -1)
    if c == 1:  # no colour to change, as in PIL
        assert torch.equal(y_up, x) and torch.equal(y_down, x)
    else:
        spread = lambda z: float(z.std(1).mean())  # distance of pixels from grey
        assert spread(y_down) < 0.2 * spread(x) and spread(y_up) > 1.3 * spread(x)


def check_contrast(x, c):
    low = 0.3 + 0.4 * x
    assert OPS["Contrast"](low, 1.0, 1).std() > 1.5 * low.std()
    assert OPS["Contrast"](low, 1.0, -1).std() < 0.2 * low.std()


def check_brightness(x, c):
    assert OPS["Brightness"](0.5 * x, 1.0, 1).mean() > 1.8 * (0.5 * x).mean()
    torch.testing.assert_close(OPS["Brightness"](x, 1.0, -1), 0.1 * x)


def check_sharpness(x, c):
    assert variation(OPS["Sharpness"](x, 1.0, -1)) < 0.8 * variation(x)
    assert variation(OPS["Sharpness"](0.25 + 0.5 * x, 1.0, 1)) > 1.2 * variation(0.25 + 0.5 * x)


def check_shear_x(x, c):
    (row, col), (r, cl) = centroid(blob(c)), centroid(OPS["ShearX"](blob(c), 1.0, 1))
    assert abs(r - row) < 0.2 and abs(cl - col) > 1  # columns move, rows stay


def check_shear_y(x, c):
    (row, col), (r, cl) = centroid(blob(c)), centroid(OPS["ShearY"](blob(c), 1.0, 1))
    assert abs(cl - col) < 0.2 and abs(r - row) > 1


def check_translate_x(x, c):
    (row, col), (r, cl) = centroid(blob(c)), centroid(OPS["TranslateX"](blob(c), 1.0, -1))
    assert abs(r - row) < 1e-3 and abs(cl - (col - 0.45 * 32)) < 1e-2  # 0.45 of the width, to the left


def check_translate_y(x, c):
    (row, col), (r, cl) = centroid(blob(c)), centroid(OPS["TranslateY"](blob(c), 1.0, 1))
    assert abs(cl - col) < 1e-3 and abs(r - (row + 0.45 * 32)) < 1e-2


def check_identity(x, c):
    assert OPS["Identity"](x, 1.0, 1) is x


CHECKS = {"AutoContrast": check_autocontrast, "Equalize": check_equalize, "Rotate": check_rotate,
          "Posterize": check_posterize, "Solarize": check_solarize, "Color": check_color,
          "Contrast": check_contrast, "Brightness": check_brightness, "Sharpness": check_sharpness,
          "ShearX": check_shear_x, "ShearY": check_shear_y, "TranslateX": check_translate_x,
          "TranslateY": check_translate_y, "Identity": check_identity}


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name", OP_NAMES)
def test_each_op_changes_an_image_as_expected(name, c):
    CHECKS[name](rand01(c), c)


def normaliser(c):
    return torch.tensor([0.49, 0.48, 0.45][:c]).view(1, c, 1, 1), torch.tensor([0.25, 0.24, 0.26][:c]).view(1, c, 1, 1)


def pairs_of(*names):
    return torch.tensor([[OP_NAMES.index(a), OP_NAMES.index(b)] for a, b in names])


@pytest.mark.parametrize("c", [1, 3])
def test_identity_pair_round_trips_a_normalised_batch(c):
    mean, std = normaliser(c)
    x = (rand01(c) - mean) / std
    y = Augmenter(mean, std)(x, pairs_of(*[("Identity", "Identity")] * 4), torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_augmenter_applies_each_images_pair_and_keeps_the_normalised_range():
    mean, std = normaliser(3)
    x = ((rand01(3, n=1) - mean) / std).expand(6, -1, -1, -1)
    pairs = pairs_of(("Identity", "Identity"), ("Solarize", "Identity"), ("Identity", "Identity"),
                     ("Solarize", "Identity"), ("Rotate", "Brightness"), ("Rotate", "Brightness"))
    y = Augmenter(mean, std, max_level=1.0)(x, pairs, torch.Generator().manual_seed(3))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y[0], x[0], atol=1e-5) and torch.allclose(y[2], x[2], atol=1e-5)
    assert not torch.allclose(y[1], x[1], atol=1e-3) and not torch.allclose(y[4], x[4], atol=1e-3)
    torch.testing.assert_close(y[1], y[3])  # a group shares its magnitude
    torch.testing.assert_close(y[4], y[5])
    pixels = y * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_augmenter_is_reproducible_and_advances_the_generator_the_same_whatever_the_pairs():
    mean, std = normaliser(3)
    x = (rand01(3, n=8) - mean) / std
    augment = Augmenter(mean, std)
    pairs, _ = PairPolicy().sample(8, torch.Generator().manual_seed(1))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(augment(x, pairs, g1), augment(x, pairs, g2))
    augment(x, pairs_of(*[("Identity", "Identity")] * 8), g1)
    augment(x, pairs, g2)
    assert torch.equal(g1.get_state(), g2.get_state())  # ranks stay in step


def test_policy_starts_uniform_and_samples_reproducibly():
    policy = PairPolicy()
    assert policy.logits.shape == (14, 14)
    torch.testing.assert_close(policy.probabilities(), torch.full((14, 14), 1 / 196))
    pairs, index = policy.sample(50, torch.Generator().manual_seed(7))
    again, index_again = policy.sample(50, torch.Generator().manual_seed(7))
    assert torch.equal(pairs, again) and torch.equal(index, index_again)
    assert pairs.dtype == torch.long and pairs.shape == (50, 2)
    assert torch.equal(pairs[:, 0] * 14 + pairs[:, 1], index)
    assert not torch.equal(index, policy.sample(50, torch.Generator().manual_seed(8))[1])


def test_sample_frequencies_follow_the_softmax_of_a_peaked_matrix():
    policy = PairPolicy()
    with torch.no_grad():
        policy.logits[2, 5], policy.logits[7, 1] = 3.0, 2.0
    pairs, index = policy.sample(20000, torch.Generator().manual_seed(0))
    frequency = torch.bincount(index, minlength=196).float().view(14, 14) / 20000
    expected = policy.probabilities().detach()
    assert expected[2, 5] > 0.08 and expected[7, 1] > 0.03
    torch.testing.assert_close(frequency, expected, atol=0.006, rtol=0)
    assert torch.equal(pairs[index == 2 * 14 + 5][0], torch.tensor([2, 5]))  # row = first op


@pytest.mark.parametrize("optimiser", ["sgd", "adam"])
def test_policy_update_moves_probability_to_the_pair_with_the_higher_loss(optimiser):
    policy = PairPolicy()
    index = torch.arange(196)  # every pair once; pair 40 = (Rotate, TranslateY) is the hard one
    per_image_loss = torch.ones(196, requires_grad=True)
    hard_loss = per_image_loss.detach().clone()
    hard_loss[40] = 3.0
    opt = (torch.optim.SGD(policy.parameters(), lr=1e4) if optimiser == "sgd"
           else torch.optim.Adam(policy.parameters(), lr=0.05))
    for _ in range(5):
        opt.zero_grad()
        policy.loss(index, per_image_loss * 0 + hard_loss).backward()
        opt.step()
    p = policy.probabilities().detach().flatten()
    assert p[40] > 1.2 / 196
    others = torch.cat([p[:40], p[41:]])
    assert (others < 1 / 196).all() and torch.allclose(others, others[0].expand(195))
    assert per_image_loss.grad is None  # Eq. 2 treats the losses as constants
