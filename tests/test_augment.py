"""DiffAugment: shape-preserving, differentiable, seeded by the generator it is given, identity when empty."""

import pytest
import torch

from modules.augment import DiffAugment


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 6, c: int = 3, side: int = 16) -> torch.Tensor:
    return torch.rand(n, c, side, side, generator=seeded(123)) * 2 - 1


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_keeps_shape_and_dtype(policy):
    x = images()
    out = DiffAugment(policy)(x, seeded(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)


def test_empty_policy_is_the_identity():
    x = images()
    assert torch.equal(DiffAugment("")(x, seeded(0)), x)


def test_same_generator_seed_gives_the_same_output_and_another_seed_does_not():
    aug, x = DiffAugment(), images()
    assert torch.equal(aug(x, seeded(7)), aug(x, seeded(7)))
    assert not torch.equal(aug(x, seeded(7)), aug(x, seeded(8)))


def test_each_image_gets_its_own_draw():
    x = images(n=1).expand(8, -1, -1, -1).contiguous()
    out = DiffAugment()(x, seeded(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_is_differentiable_and_gradients_mark_the_kept_pixels():
    x = images().requires_grad_(True)
    DiffAugment("color,translation,cutout")(x, seeded(0)).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # translation and cutout only move or drop pixels: d(sum out)/dx is 1 for each pixel kept, 0 for dropped
    x.grad = None
    kept = DiffAugment("translation,cutout")(x, seeded(1))
    kept.sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}
    assert x.grad.sum() == (kept != 0).sum()


def test_translation_is_an_integer_shift_within_an_eighth_of_the_side_with_zero_fill():
    x = images(side=16) + 3.0  # no zeros in the image: zeros in the output are fill
    out = DiffAugment("translation")(x, seeded(3))
    for img, shifted in zip(x, out, strict=True):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                expected = torch.zeros_like(img)
                src = img[:, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)]
                expected[:, max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):16 + min(-dx, 0)] = src
                matches.append(torch.equal(shifted, expected))
        assert sum(matches) == 1


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    x = images(n=32, side=16) + 3.0
    out = DiffAugment("cutout")(x, seeded(4))
    zeroed = (out == 0).all(dim=1)  # (N, H, W): the same pixels in every channel
    assert torch.equal((out == 0).any(dim=1), zeroed)
    counts = zeroed.flatten(1).sum(1)
    assert counts.max() == 64 and counts.min() > 0  # an 8x8 square, clipped where it crosses an edge
    for mask in zeroed:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert mask.sum() == len(rows) * len(cols)  # a rectangle: the square, clipped


def test_color_shifts_a_black_image_by_one_brightness_in_half_a_unit():
    out = DiffAugment("color")(torch.zeros(16, 3, 8, 8), seeded(5))
    per_image = out.flatten(1)
    # saturation and contrast leave a flat image flat
    assert torch.equal(per_image.amin(1), per_image.amax(1))
    assert per_image.abs().max() <= 0.5 and per_image[:, 0].unique().numel() == 16


def test_channels_last_input_gives_the_same_result():
    x = images()
    aug = DiffAugment()
    assert torch.allclose(aug(x.contiguous(memory_format=torch.channels_last), seeded(2)), aug(x, seeded(2)))


def test_bad_policy_and_bad_input_fail_with_a_message():
    with pytest.raises(ValueError, match="unknown op"):
        DiffAugment("color,flip")
    with pytest.raises(ValueError, match="image batches"):
        DiffAugment()(torch.zeros(4, 2), seeded(0))
