"""DHA's data-augmentation policy: a learnable 14x14 matrix over ordered op pairs.

DHA (Zhou et al., TMLR 2022) gives each training image an ordered pair of ops
drawn from softmax(tau) over all 14 x 14 pairs, and updates tau with Eq. 2:
L_tau = mean_k p(pair_k) * (-loss_k), so pairs whose images the network finds
hard become more likely. `PairPolicy` holds tau and does the sampling and the
loss; `Augmenter` applies the drawn pairs to a normalised batch.

Magnitudes. An op gets a fraction m in [0, 1] of its maximum; m = 0 leaves the
image unchanged for every op but AutoContrast and Equalize, which ignore m.
`Augmenter` draws m uniform on [0, max_level] (default 0.8: "level 8 of 10"),
clipped at 1. A max_level of 1.25 reproduces the reference code, whose level is
uniform on [0, 10], clipped at 8 and divided by 8.

| op           | argument at fraction m, sign s = +-1    | source                          |
|--------------|-----------------------------------------|---------------------------------|
| AutoContrast | none (per-channel min/max -> 0/1)       | AutoAugment                     |
| Equalize     | none (per-channel histogram, 256 bins)  | AutoAugment                     |
| Rotate       | s * 30m degrees                         | AutoAugment, FAA, DHA           |
| Posterize    | keep 8 - round(4m) bits (8 .. 4)        | AutoAugment, FAA (DHA: 4 .. 1)  |
| Solarize     | invert pixels >= 256(1 - m)/255         | AutoAugment, DHA (256 -> 0)     |
| Color        | saturation factor 1 + 0.9 s m           | AutoAugment 0.1..1.9 (a)        |
| Contrast     | factor 1 + 0.9 s m                      | AutoAugment 0.1..1.9 (a)        |
| Brightness   | factor 1 + 0.9 s m                      | AutoAugment 0.1..1.9 (a)        |
| Sharpness    | factor 1 + 0.9 s m                      | AutoAugment 0.1..1.9 (a)        |
| ShearX       | shear s * 0.3m about the centre (b)     | AutoAugment, FAA, DHA           |
| ShearY       | shear s * 0.3m about the centre (b)     | AutoAugment, FAA, DHA           |
| TranslateX   | s * 0.45m of the width                  | DHA TranslateXRel, FAA          |
| TranslateY   | s * 0.45m of the height                 | DHA TranslateYRel, FAA          |
| Identity     | none                                    |                                 |

(a) DHA maps its level to 0.1 + 1.8 * level/8 with no sign, so its level 0 is
the strongest; the signed form keeps "m = 0 is no change" true for every op.
(b) PIL, which the reference uses, shears about the top-left corner; about the
centre keeps a centred object in view.
Geometric ops fill uncovered pixels with the dataset mean, as the reference
does, so they are 0 after normalisation. Bilinear interpolation.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from raysearch.registry import Registry

_BILINEAR = InterpolationMode.BILINEAR


def _factor(m: float, sign: int) -> float:
    return 1.0 + 0.9 * sign * m


def _shear(x, m, sign, fill, axis):
    degrees = math.degrees(math.atan(0.3 * m)) * sign  # torchvision takes a shear angle, PIL a slope
    shear = [degrees, 0.0] if axis == 0 else [0.0, degrees]
    return TF.affine(x, angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=shear, interpolation=_BILINEAR, fill=fill)


def _translate(x, m, sign, fill, axis):
    pixels = 0.45 * m * sign * x.shape[-1 - axis]
    shift = [pixels, 0.0] if axis == 0 else [0.0, pixels]
    return TF.affine(x, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=_BILINEAR, fill=fill)


def _posterize(x, m, sign, fill):
    bits = 8 - round(4 * m)
    # torchvision's float kernel floors to 2**bits levels, so 8 bits would still
    # nudge every value; 8 bits means "unchanged", as in the reference.
    return x if bits == 8 else TF.posterize(x, bits)


def _solarize(x, m, sign, fill):
    threshold = 256 * (1 - m) / 255  # uint8's 256 -> 0 on [0, 1]; above 1 nothing is inverted
    return x if threshold > 1 else TF.solarize(x, threshold)


# Each op: (images in [0, 1], float [n, C, H, W]; fraction m in [0, 1]; sign +-1;
# fill: per-channel list for uncovered pixels, None = black) -> same shape.
# torchvision >= 0.17 takes float input for all of them (Equalize bins to uint8 inside).
OPS = Registry("augmentation op", {
    "AutoContrast": lambda x, m, sign, fill=None: TF.autocontrast(x),
    "Equalize": lambda x, m, sign, fill=None: TF.equalize(x),
    "Rotate": lambda x, m, sign, fill=None: TF.rotate(x, 30.0 * m * sign, interpolation=_BILINEAR, fill=fill),
    "Posterize": lambda x, m, sign, fill=None: _posterize(x, m, sign, fill),
    "Solarize": lambda x, m, sign, fill=None: _solarize(x, m, sign, fill),
    "Color": lambda x, m, sign, fill=None: TF.adjust_saturation(x, _factor(m, sign)),  # no-op on grayscale
    "Contrast": lambda x, m, sign, fill=None: TF.adjust_contrast(x, _factor(m, sign)),
    "Brightness": lambda x, m, sign, fill=None: TF.adjust_brightness(x, _factor(m, sign)),
    "Sharpness": lambda x, m, sign, fill=None: TF.adjust_sharpness(x, _factor(m, sign)),
    "ShearX": lambda x, m, sign, fill=None: _shear(x, m, sign, fill, axis=0),
    "ShearY": lambda x, m, sign, fill=None: _shear(x, m, sign, fill, axis=1),
    "TranslateX": lambda x, m, sign, fill=None: _translate(x, m, sign, fill, axis=0),
    "TranslateY": lambda x, m, sign, fill=None: _translate(x, m, sign, fill, axis=1),
    "Identity": lambda x, m, sign, fill=None: x,
})
OP_NAMES = tuple(OPS)  # the order of tau's rows and columns


class PairPolicy(nn.Module):
    """DHA's learnable policy: logits tau [k, k] over ordered pairs (first op, second op)."""

    def __init__(self, num_ops: int = len(OP_NAMES)):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_ops, num_ops))  # uniform over pairs

    def probabilities(self) -> torch.Tensor:
        """p(first = i, second = j) as a [k, k] matrix; softmax over all k*k pairs."""
        return self.logits.flatten().softmax(0).view_as(self.logits)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator,
               temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pair per image. `temperature` None: exact draws from p, by Gumbel-max (argmax(log p + g)
        per image). A temperature T: as DHA's code, one Gumbel-softmax matrix softmax((log p + g) / T) per
        call, from which every image draws its pair (so the images of a batch share one perturbation).

        Returns (pairs [n, 2], index [n] into the flattened matrix), both on the CPU:
        noise and draws both run there, so every rank with the same generator
        state gets the same pairs bit for bit whatever device the logits are on.
        """
        log_p = self.logits.detach().flatten().cpu().log_softmax(0)
        rows = n if temperature is None else 1
        # -log(-log u) with u in [0, 1) is never +inf (u = 0 gives -inf: that pair is just not picked)
        gumbel = torch.rand(rows, log_p.numel(), generator=generator).log_().neg_().log_().neg_()
        if temperature is None:
            index = (log_p + gumbel).argmax(1)
        else:
            relaxed = ((log_p + gumbel[0]) / temperature).softmax(0)
            index = torch.multinomial(relaxed, n, replacement=True, generator=generator)
        k = self.logits.shape[1]
        return torch.stack([index // k, index % k], 1), index

    def loss(self, index: torch.Tensor, per_image_loss: torch.Tensor) -> torch.Tensor:
        """Eq. 2: mean_k p(pair_k) * -loss_k, the losses taken as constants.

        A descent step raises logit j when the summed loss of the images drawn
        with pair j exceeds sum_k p(pair_k) loss_k and lowers it otherwise (pairs
        not drawn always fall); from uniform logits it moves mass, in expectation,
        to the pairs whose loss is above the average over pairs.
        """
        p = self.probabilities().flatten()[index.to(self.logits.device)]
        return (p * -per_image_loss.detach()).mean()


class Augmenter:
    """Applies one ordered op pair per image to a normalised batch.

    The batch is grouped by op and each op runs once per group, a batched
    torchvision call, so a batch costs at most 2 x 14 calls. One magnitude and
    one sign per (position, op) per batch, shared by the group: torchvision's
    ops take scalar arguments, and per-image values would need one call per
    image. The reference draws them per image; over many steps every group
    still sees the whole range. All 2 x 14 magnitudes and signs are drawn from
    `generator` (CPU) whatever the batch holds, so it advances the same way on
    every rank.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, max_level: float = 0.8):
        self.mean, self.std, self.max_level = mean, std, max_level  # mean, std: [1, C, 1, 1]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, pairs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean, std = self.mean.to(x), self.std.to(x)
        out = (x * std + mean).clamp(0, 1)
        fill = mean.flatten().tolist()
        magnitudes = (torch.rand(2, len(OP_NAMES), generator=generator) * self.max_level).clamp(max=1)
        signs = torch.randint(0, 2, (2, len(OP_NAMES)), generator=generator) * 2 - 1
        for position in range(2):
            ops = pairs[:, position].cpu()
            groups = torch.argsort(ops, stable=True).split(torch.bincount(ops, minlength=len(OP_NAMES)).tolist())
            for k, (name, rows) in enumerate(zip(OP_NAMES, groups)):
                if len(rows) and name != "Identity":
                    rows = rows.to(x.device)
                    done = OPS[name](out[rows], magnitudes[position, k].item(), int(signs[position, k]), fill)
                    out[rows] = done.clamp(0, 1)
        return (out - mean) / std
