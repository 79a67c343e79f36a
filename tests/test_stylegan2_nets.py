"""StyleGAN2 networks against their definitions (Karras et al., 2020; NVlabs' stylegan2-ada-pytorch)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from modules.nets.fir import fir_kernel
from modules.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from modules.nets.stylegan2.discriminator import MinibatchStdDev
from modules.nets.stylegan2.synthesis import SynthesisLayer, modulated_conv2d

SMALL = {"channel_base": 512, "channel_max": 32}


pytestmark = pytest.mark.usefixtures("one_thread")


def small_generator(resolution=32, channels=1, **kwargs):
    kwargs = {"latent_dim": 16, "w_dim": 16, "mapping_layers": 2, **SMALL, **kwargs}
    return StyleGAN2Generator(resolution=resolution, channels=channels, **kwargs)


def reference_modulated_conv(x, weight, styles, demodulate, up):
    """Per sample: the explicitly modulated (and demodulated) weight, convolved by F.conv2d; for up=2 the
    image is zero-inserted and fully convolved (a transposed convolution), then FIR-filtered by scipy."""
    outputs = []
    for i in range(x.shape[0]):
        w = weight * styles[i][None, :, None, None]
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xi = x[i:i + 1]
        if up == 1:
            outputs.append(F.conv2d(xi, w, padding=1))
            continue
        inserted = torch.zeros(1, xi.shape[1], 2 * xi.shape[2] - 1, 2 * xi.shape[3] - 1, dtype=x.dtype)
        inserted[:, :, ::2, ::2] = xi
        full = F.conv2d(F.pad(inserted, [2, 2, 2, 2]), w.flip([2, 3]))  # (2H + 1) square
        kernel = fir_kernel().double().numpy() * 4
        filtered = [convolve2d(np.pad(full[0, c].numpy(), 1), kernel, mode="valid") for c in range(w.shape[0])]
        outputs.append(torch.from_numpy(np.stack(filtered))[None])
    return torch.cat(outputs)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_per_sample_reference(up, fused, demodulate):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    weight = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 4, dtype=torch.float64)
    y = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_kernel=fir_kernel().double(),
                         fused=fused)
    expected = reference_modulated_conv(x, weight, styles, demodulate, up)
    assert y.shape == (3, 6, 5 * up, 5 * up)
    torch.testing.assert_close(y, expected)


def test_demodulation_gives_unit_variance_outputs():
    """Eq. 3: with iid unit-variance inputs, each output of a demodulated conv has unit variance."""
    torch.manual_seed(0)
    x = torch.randn(16, 128, 12, 12)
    weight = torch.randn(32, 128, 3, 3)
    styles = 3.0 * torch.rand(16, 128) + 0.1  # far from 1: without demodulation the variance would be off
    y = modulated_conv2d(x, weight, styles)[:, :, 1:-1, 1:-1]  # the interior: no zero padding in the window
    per_channel = y.var(dim=(0, 2, 3))
    assert float(y.var()) == pytest.approx(1.0, abs=0.03)
    assert float((per_channel - 1).abs().max()) < 0.15
    plain = modulated_conv2d(x, weight, styles, demodulate=False)[:, :, 1:-1, 1:-1]
    assert float(plain.var()) > 100.0  # sum_ik s_i^2 w^2 ~ 128 * 9 * E[s^2]: the check can fail


def test_num_ws_matches_the_layer_count():
    for resolution in (16, 32, 64):
        g = small_generator(resolution)
        layers = sum(isinstance(m, SynthesisLayer) for m in g.modules())
        assert g.num_ws == layers + 1 == 2 * int(math.log2(resolution)) - 2
        assert g.mapping(torch.randn(2, 16)).shape == (2, g.num_ws, 16)
        with pytest.raises(ValueError, match="ws must be"):
            g.synthesis(torch.randn(2, g.num_ws - 1, 16))


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_shapes(resolution):
    g = small_generator(resolution, channels=3)
    d = StyleGAN2Discriminator(resolution, 3, **SMALL)
    images = g(torch.randn(4, 16))
    assert images.shape == (4, 3, resolution, resolution)
    assert d(images).shape == (4,)


@pytest.mark.parametrize("resolution", [8, 48, 2048])
def test_bad_resolution_is_refused(resolution):
    with pytest.raises(ValueError, match="power of two in 16..1024"):
        small_generator(resolution)
    with pytest.raises(ValueError, match="power of two in 16..1024"):
        StyleGAN2Discriminator(resolution, 1)


def test_mapping_normalises_z_and_tracks_w_avg_in_training_only():
    g = small_generator()
    z = torch.randn(8, 16)
    torch.testing.assert_close(g.mapping(z), g.mapping(5.0 * z))  # pixel norm: the scale of z is irrelevant
    w = g.mapping(z)[:, 0]
    g.mapping.w_avg.fill_(1.0)
    g.mapping(z)
    torch.testing.assert_close(g.mapping.w_avg, w.mean(0).lerp(torch.ones(16), 0.995))
    before = g.mapping.w_avg.clone()
    g.eval()
    g.mapping(torch.randn(8, 16))
    torch.testing.assert_close(g.mapping.w_avg, before)
    lr_muls = {layer.lr_mul for layer in g.mapping.layers}
    assert lr_muls == {0.01} and len(g.mapping.layers) == 2


def test_truncation_psi_zero_gives_the_image_of_w_avg():
    g = small_generator().eval()
    g.mapping.w_avg.copy_(torch.randn(16))
    z = torch.randn(3, 16)
    images = g(z, truncation_psi=0.0, noise_mode="const")
    expected = g.synthesis(g.mapping.w_avg.expand(3, g.num_ws, -1), noise_mode="const")
    torch.testing.assert_close(images, expected)
    ws = g.styles(z, truncation_psi=0.5, truncation_cutoff=3)
    plain = g.mapping(z)
    torch.testing.assert_close(ws[:, :3], 0.5 * (g.mapping.w_avg + plain[:, :3]))
    torch.testing.assert_close(ws[:, 3:], plain[:, 3:])


def test_style_mixing_swaps_exactly_the_rows_from_the_cutoff():
    """Training mode, mixing_prob 1: ws rows < cutoff from z, rows >= cutoff from a second z (global RNG)."""
    g = small_generator(mixing_prob=1.0)
    z = torch.randn(4, 16)
    torch.manual_seed(7)
    images = g(z, noise_mode="const")
    torch.manual_seed(7)
    ws = g.styles(z)
    torch.manual_seed(7)  # the draws in styles' order: the second z, the cutoff, the mixing coin
    second = g.mapping(torch.randn_like(z))
    cutoff = int(torch.randint(1, g.num_ws, ()))
    torch.rand(())
    first = g.mapping(z)
    assert 1 <= cutoff < g.num_ws
    hand_mixed = torch.cat([first[:, :cutoff], second[:, cutoff:]], dim=1)
    torch.testing.assert_close(ws, hand_mixed)
    assert not torch.allclose(first[:, cutoff:], second[:, cutoff:])
    torch.testing.assert_close(images, g.synthesis(hand_mixed, noise_mode="const"))
    g.eval()
    torch.testing.assert_close(g.styles(z), first)  # no mixing outside training


def test_style_mixing_cutoff_distribution():
    g = small_generator(mixing_prob=0.5)
    ws, other = torch.zeros(1, g.num_ws, 1), torch.ones(1, g.num_ws, 1)
    torch.manual_seed(0)
    mixed_rows = torch.stack([g.mix_styles(ws, other)[0, :, 0] for _ in range(2000)])
    cutoffs = g.num_ws - mixed_rows.sum(dim=1)  # rows from `other` are a suffix
    assert bool(((mixed_rows.diff(dim=1)) >= 0).all())
    assert float((cutoffs < g.num_ws).float().mean()) == pytest.approx(0.5, abs=0.04)
    assert set(cutoffs[cutoffs < g.num_ws].long().tolist()) == set(range(1, g.num_ws))


def test_noise_modes():
    g = small_generator().eval()
    for module in g.modules():
        if isinstance(module, SynthesisLayer):
            module.noise_strength.data.fill_(1.0)
    z = torch.randn(2, 16)
    torch.testing.assert_close(g(z, noise_mode="const"), g(z, noise_mode="const"))
    torch.testing.assert_close(g(z, noise_mode="none"), g(z, noise_mode="none"))
    assert not torch.allclose(g(z, noise_mode="const"), g(z, noise_mode="none"))
    assert not torch.allclose(g(z), g(z))
    with pytest.raises(ValueError, match="noise_mode"):
        g(z, noise_mode="fixed")


def test_minibatch_stddev_on_a_hand_case():
    """N=4, group 2: samples {0, 2} and {1, 3} form groups; stddev of two values a, b is |a - b| / 2."""
    x = torch.tensor([1.0, 10.0, 3.0, 20.0, 5.0, -10.0, 9.0, 40.0]).reshape(4, 2, 1, 1)
    y = MinibatchStdDev(group_size=2)(x)
    assert y.shape == (4, 3, 1, 1)
    group_02 = (abs(1 - 5) / 2 + abs(10 + 10) / 2) / 2
    group_13 = (abs(3 - 9) / 2 + abs(20 - 40) / 2) / 2
    torch.testing.assert_close(y[:, 2, 0, 0], torch.tensor([group_02, group_13, group_02, group_13]))
    torch.testing.assert_close(y[:, :2], x)
    two = MinibatchStdDev(group_size=4, num_channels=2)(x)  # one group of all four, one stddev per channel
    torch.testing.assert_close(two[0, 2:, 0, 0], x.std(dim=0, unbiased=False).flatten())


def test_conditional_networks_use_their_labels():
    torch.manual_seed(0)
    g = small_generator(num_classes=3).eval()
    d = StyleGAN2Discriminator(32, 1, num_classes=3, **SMALL, mapping_layers=2)
    z = torch.randn(2, 16)
    zeros, twos = torch.zeros(2, dtype=torch.long), torch.full((2,), 2)
    assert not torch.allclose(g(z, zeros, noise_mode="none"), g(z, twos, noise_mode="none"))
    images = g(z, zeros)
    assert not torch.allclose(d(images, zeros), d(images, twos))
    with pytest.raises(ValueError, match="no labels"):
        g(z)
    with pytest.raises(ValueError, match="no labels"):
        d(images)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    g = small_generator(num_classes=3)
    d = StyleGAN2Discriminator(32, 1, num_classes=3, **SMALL, mapping_layers=2)
    labels = torch.tensor([0, 1, 2, 1])
    d(g(torch.randn(4, 16), labels), labels).sum().backward()
    for net in (g, d):
        for name, p in net.named_parameters():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
