"""Each corruption does what its docstring says, on real MNIST digits."""

from __future__ import annotations

import pytest
import torch

from lightning_ae.data import CORRUPTIONS, Block, Gaussian, Masking, SaltAndPepper, Strokes, build_corruption


@pytest.fixture(scope="module")
def digits(datamodule) -> torch.Tensor:
    return datamodule.split("test").images[:2000].view(-1, 1, 28, 28)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masking_keeps_a_fraction_p_of_nonzero_pixels_and_zeros_stay_zero(digits, p):
    out = Masking(p)(digits, gen())
    nonzero = digits > 0
    kept = (out[nonzero] == digits[nonzero]).float()
    n = nonzero.sum().item()
    tolerance = 5 * (p * (1 - p) / n) ** 0.5  # five binomial standard errors
    assert abs(kept.mean().item() - p) < tolerance
    assert torch.all(out[~nonzero] == 0)
    # Masked pixels are exactly 0, kept ones untouched.
    assert torch.all((out[nonzero] == 0) | (out[nonzero] == digits[nonzero]))


def test_masking_p_one_is_the_identity(digits):
    assert torch.equal(Masking(1.0)(digits, gen()), digits)


def test_gaussian_noise_has_sigma_and_stays_in_range(digits):
    sigma = 0.2
    out = Gaussian(sigma)(digits, gen())
    assert out.min() >= 0 and out.max() <= 1
    # Where clipping cannot act (pixels at 0.5 +- 3 sigma stay inside), the noise std is sigma.
    mid = (digits > 0.45) & (digits < 0.55)
    noise = (out - digits)[mid]
    inside = noise.abs() < 0.45
    assert noise[inside].std().item() == pytest.approx(sigma, rel=0.1)


def test_salt_and_pepper_sets_a_fraction_q_to_zero_or_one(digits):
    q = 0.3
    out = SaltAndPepper(q)(digits, gen())
    changed_or_extreme = (out == 0) | (out == 1)
    # Pixels that are not 0/1 must be untouched.
    assert torch.equal(out[~changed_or_extreme], digits[~changed_or_extreme])
    grey = (digits > 0.05) & (digits < 0.95)  # grey pixels are hit iff they become 0/1
    hit = changed_or_extreme[grey].float().mean().item()
    assert hit == pytest.approx(q, abs=0.01)
    assert ((out[grey] == 1).float().mean() / (out[grey] == 0).float().mean()).item() == pytest.approx(1, abs=0.1)


def test_block_zeroes_exactly_one_square_per_image(digits):
    ones = torch.ones(50, 1, 28, 28)
    out = Block(7)(ones, gen())
    zeros = out == 0
    assert torch.all(zeros.sum(dim=(1, 2, 3)) == 49)
    for image in zeros[:, 0]:
        rows, cols = image.any(dim=1).nonzero(), image.any(dim=0).nonzero()
        assert rows.max() - rows.min() == 6 and cols.max() - cols.min() == 6
    out_digits = Block(10)(digits, gen())
    assert torch.all(out_digits <= digits)


def test_strokes_only_add_ink(digits):
    out = Strokes(count=2, width=2.0)(digits, gen())
    assert torch.all(out >= digits) and out.max() <= 1
    added = ((out == 1) & (digits < 1)).sum(dim=(1, 2, 3))
    assert torch.all(added > 0)  # every image gets at least some new ink
    # A 2-pixel-wide stroke of at least 8 px covers at least ~10 pixels; two strokes stay far below half the image.
    assert added.float().mean() > 10 and added.max() < 28 * 28 / 2


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_is_reproducible_from_the_generator_and_fresh_otherwise(digits, name):
    corruption = build_corruption(name)
    batch = digits[:64]
    first, again = corruption(batch, gen(1)), corruption(batch, gen(1))
    assert torch.equal(first, again)
    assert not torch.equal(first, corruption(batch, gen(2)))
    assert first.shape == batch.shape and first.min() >= 0 and first.max() <= 1


@pytest.mark.parametrize(
    "name, params, pattern",
    [
        ("masking", {"p": 0.0}, r"masking: p=0.0 is out of range; valid: 0 < p <= 1"),
        ("masking", {"p": 1.5}, r"masking: p=1.5 is out of range"),
        ("masking", {"p": -0.1}, r"p=-0.1"),
        ("masking", {"p": "half"}, r"p='half' is not a number"),
        ("gaussian", {"sigma": -0.1}, r"gaussian: sigma=-0.1 is out of range; valid: sigma >= 0"),
        ("salt_and_pepper", {"q": 1.2}, r"salt_and_pepper: q=1.2 is out of range; valid: 0 <= q <= 1"),
        ("block", {"size": 0}, r"block: size=0 is not valid; valid: an integer in \[1, 28\]"),
        ("block", {"size": 29}, r"size=29"),
        ("strokes", {"count": 0}, r"strokes: count=0"),
        ("strokes", {"width": 0}, r"strokes: width=0"),
        ("masking", {"sigma": 0.1}, r"corruption_args=\{'sigma': 0.1\} do not fit corruption 'masking'.*\['p'\]"),
        ("blur", {}, r"corruption='blur' is not a known corruption; valid values: \['block', 'gaussian', 'masking'"),
    ],
)
def test_bad_corruption_parameters(name, params, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_corruption(name, params)
