"""ADA's transforms against their definitions, the pipeline's probabilities, identity at p = 0, gradients."""

import math

import pytest
import torch
from torch.nn import functional as F

from modules.augment import AdaptiveAugment
from modules.augment.ada import (
    ADAPipeline,
    Draws,
    apply_color,
    brightness,
    contrast,
    hue_rotation,
    luma_flip,
    octave_filter_bank,
    quarter_turns,
    rotation,
    saturation,
    scaling,
    translation,
)
from modules.augment.resample import warp


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 4, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=seeded(seed)) * 2 - 1


def only(name: str, **ranges) -> ADAPipeline:
    """A pipeline with one transform on."""
    return AdaptiveAugment("none", multipliers={name: 1.0}, ranges=ranges).pipeline


def full(n: int, value: float) -> torch.Tensor:
    return torch.full((n,), value)


# ---- geometry: exact blits ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (1, 5)])
def test_identity_matrix_reads_every_pixel_exactly(shape):
    x = images(h=shape[0], w=shape[1])
    assert torch.equal(warp(x, torch.eye(3).expand(4, 3, 3)), x)


def test_x_flip_is_exact():
    x = images()
    assert torch.equal(warp(x, scaling(full(4, -1.0), full(4, 1.0))), x.flip(3))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_quarter_turns_equal_rot90(k):
    x = images(h=6, w=6)
    assert torch.equal(warp(x, quarter_turns(full(4, float(k)))), torch.rot90(x, k, dims=(2, 3)))
    # the arbitrary rotation has the same direction: rotation(k pi / 2) is the quarter turn up to rounding
    torch.testing.assert_close(warp(x, rotation(full(4, k * math.pi / 2))), torch.rot90(x, k, dims=(2, 3)))


@pytest.mark.parametrize("tx,ty", [(2, 0), (-3, 1), (1, -2), (0, 0)])
def test_integer_translation_shifts_exactly_and_mirrors_the_border(tx, ty):
    x = images(h=8, w=8)
    shifted = warp(x, translation(full(4, -float(tx)), full(4, -float(ty))))  # content moves by (+tx, +ty)
    padded = F.pad(x, [4, 4, 4, 4], mode="reflect")
    assert torch.equal(shifted, padded[:, :, 4 - ty:12 - ty, 4 - tx:12 - tx])


def test_shifts_beyond_the_image_keep_mirroring():
    x = images(n=1, c=1, h=1, w=4)
    out = warp(x, translation(torch.tensor([-5.0]), torch.tensor([0.0])))  # reads columns -5 .. -2
    row = x[0, 0, 0]
    expected = row[[1, 2, 3, 2]]  # mirror period 6: -5 -> 1, -4 -> 2, -3 -> 3, -2 -> 2
    assert torch.equal(out[0, 0, 0], expected)


# ---- geometry: general transforms on smooth images, against the analytic result ---------------------------
def bilinear_field(positions: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """f(x, y) = 0.3 + 0.05 x - 0.08 y + 0.01 x y, centred pixel coordinates: reproduced exactly by bilinear
    interpolation, so a warp of it must equal f at the mapped positions wherever no mirroring is involved."""
    px, py = positions
    return 0.3 + 0.05 * px - 0.08 * py + 0.01 * px * py


def centred_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    return xs.double(), ys.double()


def test_isotropic_scale_by_two_magnifies_about_the_centre():
    h = w = 16
    grid = centred_grid(h, w)
    image = bilinear_field(grid)[None, None]
    pipeline_s = 2.0  # the pipeline's scale s samples at position / s
    out = warp(image, scaling(torch.tensor([1 / pipeline_s]), torch.tensor([1 / pipeline_s])))
    expected = bilinear_field((grid[0] / pipeline_s, grid[1] / pipeline_s))
    torch.testing.assert_close(out[0, 0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("theta", [0.3, -1.1, 2.5])
def test_rotation_by_a_known_angle_matches_the_analytic_image(theta):
    h = w = 17
    xs, ys = centred_grid(h, w)
    image = bilinear_field((xs, ys))[None, None]
    out = warp(image, rotation(torch.tensor([theta], dtype=torch.float64)))
    c, s = math.cos(theta), math.sin(theta)
    src = (c * xs - s * ys, s * xs + c * ys)
    inside = (xs.square() + ys.square()).sqrt() < (w - 1) / 2 - 0.5  # where the source is in the image
    torch.testing.assert_close(out[0, 0][inside], bilinear_field(src)[inside], rtol=0, atol=1e-12)
    assert inside.sum() > 150


# ---- colour ---------------------------------------------------------------------------------------------
def test_brightness_adds_and_contrast_scales_about_zero():
    x = images(c=3)
    b, c = torch.tensor([0.1, -0.2, 0.0, 0.5]), torch.tensor([2.0, 0.5, 1.0, 0.25])
    torch.testing.assert_close(apply_color(x, brightness(b, 3)), x + b[:, None, None, None], rtol=0, atol=1e-6)
    torch.testing.assert_close(apply_color(x, contrast(c, 3)), x * c[:, None, None, None], rtol=0, atol=1e-6)
    grey = images(c=1)
    torch.testing.assert_close(apply_color(grey, brightness(b, 1)), grey + b[:, None, None, None])


def test_luma_flip_mirrors_the_grey_component():
    x = images(c=3)
    mean = x.mean(dim=1, keepdim=True)
    flipped = apply_color(x, luma_flip(torch.tensor([1.0, 0.0, 1.0, 0.0]), 3))
    # I - 2 v v^T: the grey component (the channel mean) changes sign, the chroma x - mean is kept
    torch.testing.assert_close(flipped[[0, 2]], (x - 2 * mean)[[0, 2]])
    assert torch.equal(flipped[[1, 3]], x[[1, 3]])
    grey = images(c=1)
    torch.testing.assert_close(apply_color(grey, luma_flip(torch.ones(4), 1)), -grey)


def test_saturation_zero_gives_grey_and_s_scales_the_chroma():
    x = images(c=3)
    mean = x.mean(dim=1, keepdim=True).expand_as(x)
    torch.testing.assert_close(apply_color(x, saturation(torch.zeros(4), 3)), mean)
    torch.testing.assert_close(apply_color(x, saturation(full(4, 1.5), 3)), mean + 1.5 * (x - mean))


def test_hue_rotation_by_a_third_turn_cycles_the_channels_and_keeps_grey():
    x = images(c=3)
    torch.testing.assert_close(apply_color(x, hue_rotation(full(4, 2 * math.pi / 3))), x.roll(1, dims=1))
    rotated = apply_color(x, hue_rotation(full(4, 0.7)))
    torch.testing.assert_close(rotated.mean(1), x.mean(1))  # rotation about the grey axis
    torch.testing.assert_close((rotated - rotated.mean(1, keepdim=True)).norm(dim=1),
                               (x - x.mean(1, keepdim=True)).norm(dim=1))


def test_grey_images_skip_hue_and_saturation():
    x = images(c=1)
    out = only("saturation")(x, 1.0, seeded(0))
    assert torch.equal(out, x) and only("hue")(x, 1.0, seeded(0)).equal(x)


# ---- image-space filter, noise, cutout ------------------------------------------------------------------
def test_octave_bands_sum_to_an_impulse_and_only_the_lowest_passes_dc():
    bank = octave_filter_bank().double()
    impulse = torch.zeros(bank.shape[1], dtype=torch.float64)
    impulse[bank.shape[1] // 2] = 1
    torch.testing.assert_close(bank.sum(0), impulse, rtol=0, atol=1e-6)
    torch.testing.assert_close(bank.sum(1), torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(bank, bank.flip(1))  # symmetric: no shift of the image


def test_filter_at_p1_changes_detail_but_a_flat_image_only_by_its_dc_gain():
    flat = torch.full((64, 1, 8, 8), 0.5)
    out = only("imgfilter")(flat, 1.0, seeded(0))
    assert torch.allclose(out.amax(dim=(1, 2, 3)), out.amin(dim=(1, 2, 3)), atol=1e-6)  # flat stays flat
    assert (out[:, 0, 0, 0] - 0.5).abs().max() > 0.01


def test_noise_is_zero_mean_with_half_normal_sigma():
    x = torch.zeros(2048, 1, 8, 8)
    out = only("noise")(x, 1.0, seeded(1))
    sigma = out.flatten(1).std(dim=1)
    expected = 0.1 * math.sqrt(2 / math.pi)  # E|N(0, 0.1^2)|
    assert abs(sigma.mean().item() - expected) < 0.004 and abs(out.mean().item()) < 0.002


def test_cutout_zeroes_one_rectangle_of_half_the_side():
    x = images(n=64, c=2, h=16, w=16) + 3.0
    out = only("cutout")(x, 1.0, seeded(2))
    zeroed = (out == 0).all(dim=1)
    assert torch.equal((out == 0).any(dim=1), zeroed)
    counts = zeroed.flatten(1).sum(1)
    assert counts.max() == 64 and counts.min() > 0
    for mask in zeroed:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert mask.sum() == len(rows) * len(cols) and len(rows) <= 8 and len(cols) <= 8


# ---- the pipeline: probabilities, identity, reproducibility -----------------------------------------------
@pytest.mark.parametrize("preset", ["bgc", "bgcfnc"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_p_zero_is_the_exact_identity(preset, channels):
    x = images(n=8, c=channels, h=9, w=12)
    assert torch.equal(AdaptiveAugment(preset, p=0.0)(x, seeded(0)), x)


def test_at_p1_x_flip_gives_the_image_or_its_mirror_both_seen():
    x = images(n=64)
    out = only("xflip")(x, 1.0, seeded(3))
    kept = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert torch.all(kept | flipped) and kept.any() and flipped.any()


def test_at_p1_quarter_turns_are_all_four_rotations():
    x = images(n=64)
    out = only("rotate90")(x, 1.0, seeded(4))
    which = torch.stack([(out == torch.rot90(x, k, (2, 3))).flatten(1).all(1) for k in range(4)], dim=1)
    assert torch.all(which.sum(1) == 1) and torch.all(which.any(0))


def test_at_p1_integer_translations_stay_within_an_eighth_of_the_side():
    x = images(n=32, h=16, w=16)
    out = only("xint")(x, 1.0, seeded(5))
    padded = F.pad(x, [4, 4, 4, 4], mode="reflect")
    found = torch.zeros(32, dtype=torch.long)
    for ty in range(-2, 3):
        for tx in range(-2, 3):
            found += (out == padded[:, :, 4 - ty:20 - ty, 4 - tx:20 - tx]).flatten(1).all(1).long()
    assert torch.all(found == 1)


def test_isotropic_scale_draws_are_lognormal_with_the_papers_std():
    pipeline = only("scale")
    x = torch.zeros(4096, 1, 4, 4)
    matrix, applied = pipeline.geometric_matrix(Draws(x, 1.0, seeded(6), pipeline.multipliers), 4, 4)
    assert applied.all()
    torch.testing.assert_close(matrix[:, 0, 0], matrix[:, 1, 1])
    assert torch.equal(matrix[:, 0, 1], torch.zeros(4096))
    log_scale = -torch.log2(matrix[:, 0, 0])
    assert abs(log_scale.std().item() - 0.2) < 0.01 and abs(log_scale.mean().item()) < 0.01


@pytest.mark.parametrize("name,multiplier,p", [("brightness", 1.0, 0.3), ("contrast", 0.5, 0.8),
                                               ("rotate", 1.0, 0.5), ("scale", 1.0, 0.25)])
def test_each_transform_hits_p_times_its_multiplier_of_the_images(name, multiplier, p):
    pipeline = AdaptiveAugment("none", multipliers={name: multiplier}).pipeline
    x = images(n=4096, c=1, h=4, w=4)
    changed = (pipeline(x, p, seeded(7)) != x).flatten(1).any(1).float().mean().item()
    assert abs(changed - p * multiplier) < 0.03, changed
    rate = "color" if name in ("brightness", "contrast") else "geometric"
    assert abs(pipeline.last_rates[rate].item() - changed) < 1e-6


def test_mixed_precision_autocast_leaves_the_pipeline_in_float32():
    aug, x = AdaptiveAugment("bgcfnc", p=1.0), images(n=8, h=16, w=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = aug(x, seeded(3))
    assert mixed.dtype == torch.float32 and torch.equal(mixed, aug(x, seeded(3)))
    assert aug(x.bfloat16(), seeded(3)).dtype == torch.bfloat16


def test_same_seed_same_augmentation_other_seed_another():
    aug, x = AdaptiveAugment("bgcfnc", p=0.7), images(n=8)
    assert torch.equal(aug(x, seeded(1)), aug(x, seeded(1)))
    assert not torch.equal(aug(x, seeded(1)), aug(x, seeded(2)))


# ---- gradients ------------------------------------------------------------------------------------------
def test_gradients_reach_the_generator_through_the_pipeline():
    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Linear(4, 3 * 8 * 8), torch.nn.Tanh(), torch.nn.Unflatten(1, (3, 8, 8)))
    fake = generator(torch.randn(6, 4))
    AdaptiveAugment("bgcfnc", p=1.0)(fake, seeded(0)).square().mean().backward()
    grads = [p.grad for p in generator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_warp_has_second_derivatives():
    x = images(n=2, c=2, h=5, w=6).double().requires_grad_(True)
    matrix = rotation(torch.tensor([0.4, -2.0], dtype=torch.float64)) @ scaling(
        torch.tensor([0.8, 1.3], dtype=torch.float64), torch.tensor([1.1, 0.7], dtype=torch.float64))
    assert torch.autograd.gradgradcheck(lambda t: warp(t, matrix).square(), (x,))


def test_full_pipeline_has_second_derivatives():
    """R1 through the augmentation (Karras et al., 2020): d/dtheta of ||d D(aug(x)) / dx||^2 needs them."""
    aug = AdaptiveAugment("bgcfnc", p=1.0)
    x = images(n=1, c=3, h=6, w=5).double().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda t: aug(t, seeded(9)).square(), (x,))


# ---- bad input ------------------------------------------------------------------------------------------
def test_bad_settings_fail_with_a_message():
    with pytest.raises(ValueError, match="preset 'bgx' is unknown"):
        AdaptiveAugment("bgx")
    with pytest.raises(ValueError, match="unknown transform"):
        AdaptiveAugment(multipliers={"flip": 1.0})
    with pytest.raises(ValueError, match="ADA ranges: unknown"):
        AdaptiveAugment(ranges={"rotation_max": 1.0})
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        AdaptiveAugment(p=1.5)
    with pytest.raises(ValueError, match="image batches"):
        AdaptiveAugment()(torch.zeros(4, 8), seeded(0))
