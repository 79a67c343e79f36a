"""FIR resampling and equalized-lr layers against their definitions (StyleGAN2 Appendix B; ProGAN Sec. 4.1)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from modules.nets.equalized import EqualizedConv2d, EqualizedLinear
from modules.nets.fir import blur2d, downsample2d, fir_kernel, upsample2d

ASYMMETRIC = (1.0, 2.0, 4.0, 1.0)  # catches a flipped (correlation instead of convolution) kernel


def reference_upfirdn(x: np.ndarray, kernel: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """NVlabs' upfirdn2d on one channel, written out: zero insertion, zero padding, true convolution, decimation."""
    h, w = x.shape
    inserted = np.zeros((h * up, w * up))
    inserted[::up, ::up] = x
    padded = np.pad(inserted, [pad, pad])
    return convolve2d(padded, kernel, mode="valid")[::down, ::down]


def test_fir_kernel_is_the_normalised_outer_product():
    kernel = fir_kernel((1, 3, 3, 1))
    expected = torch.tensor([1.0, 3.0, 3.0, 1.0]).outer(torch.tensor([1.0, 3.0, 3.0, 1.0])) / 64.0
    torch.testing.assert_close(kernel, expected)
    assert float(kernel.sum()) == pytest.approx(1.0)


def test_fir_kernel_frequency_response_is_the_binomial_cosine():
    """[1,3,3,1]/8 = ((1 + z^-1)/2)^3: |H(omega)| = |cos(omega / 2)|^3, DC gain 1, a zero at Nyquist."""
    kernel = fir_kernel((1, 3, 3, 1))
    taps = kernel.sum(dim=0)  # the separable factor (the kernel's marginal), sums to 1
    n = 64
    omega = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    response = torch.fft.fft(taps.double(), n=n).abs()
    torch.testing.assert_close(response, torch.cos(omega / 2).abs() ** 3, atol=1e-6, rtol=0)
    assert float(response[0]) == pytest.approx(1.0)
    assert float(response[n // 2]) == pytest.approx(0.0, abs=1e-7)
    response_2d = torch.fft.fft2(kernel.double(), s=(n, n)).abs()
    torch.testing.assert_close(response_2d, response[:, None] * response[None, :], atol=1e-6, rtol=0)


def test_upsample_keeps_a_constant_away_from_the_border():
    kernel = fir_kernel()
    y = upsample2d(torch.full((1, 2, 8, 8), 3.0), kernel)
    assert y.shape == (1, 2, 16, 16)
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], torch.full((1, 2, 12, 12), 3.0))


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), ASYMMETRIC, (1, 2, 1)])
def test_upsample_and_downsample_match_explicit_upfirdn(taps):
    kernel = fir_kernel(taps)
    k = kernel.shape[0]
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    up = upsample2d(x, kernel.double())
    down = downsample2d(x, kernel.double())
    blurred = blur2d(x, kernel.double(), (1, 2))
    for n in range(2):
        for c in range(3):
            xi, kn = x[n, c].numpy(), kernel.double().numpy()
            ref_up = reference_upfirdn(xi, kn * 4, 2, 1, ((k + 1) // 2, (k - 2) // 2))
            ref_down = reference_upfirdn(xi, kn, 1, 2, ((k - 1) // 2, (k - 2) // 2))
            ref_blur = reference_upfirdn(xi, kn, 1, 1, (1, 2))
            np.testing.assert_allclose(up[n, c].numpy(), ref_up, atol=1e-12)
            np.testing.assert_allclose(down[n, c].numpy(), ref_down, atol=1e-12)
            np.testing.assert_allclose(blurred[n, c].numpy(), ref_blur, atol=1e-12)
    assert up.shape == (2, 3, 12, 12) and down.shape == (2, 3, 3, 3)


def test_fir_kernel_refuses_bad_taps():
    with pytest.raises(ValueError, match="taps"):
        fir_kernel((1, -1))


def test_equalized_linear_effective_weight_and_bias():
    torch.manual_seed(0)
    layer = EqualizedLinear(20, 7, lr_mul=0.01, bias_init=0.5)
    x = torch.randn(5, 20)
    expected = F.linear(x, layer.weight * 0.01 / math.sqrt(20), layer.bias * 0.01)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.bias * 0.01, torch.full((7,), 0.5))
    assert float(layer.weight.detach().std()) == pytest.approx(100.0, rel=0.15)  # stored N(0, 1 / lr_mul^2)


def test_equalized_conv_effective_weight():
    torch.manual_seed(0)
    conv = EqualizedConv2d(4, 6, 3, lr_mul=0.5)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * 0.5 / math.sqrt(36), conv.bias * 0.5, padding=1))


@torch.no_grad()
def test_equalized_layers_give_unit_variance_at_init():
    torch.manual_seed(0)
    x = torch.randn(4096, 256)
    assert float(EqualizedLinear(256, 256, lr_mul=0.01)(x).std()) == pytest.approx(1.0, abs=0.05)
    second_moment = EqualizedLinear(256, 256, activation="lrelu")(x).pow(2).mean()
    assert float(second_moment) == pytest.approx(1.0, abs=0.05)  # the sqrt(2) gain keeps E[y^2]
    images = torch.randn(64, 32, 8, 8)
    y = EqualizedConv2d(32, 64, 3, padding=0)(images)
    assert float(y.std()) == pytest.approx(1.0, abs=0.05)


def test_lr_mul_scales_the_adam_step_of_the_effective_weight():
    """Same effective layer, lr_mul 1 vs 0.01: one Adam step moves the 0.01 layer's effective weight 100x less."""
    torch.manual_seed(0)
    fast, slow = EqualizedLinear(8, 3, lr_mul=1.0).double(), EqualizedLinear(8, 3, lr_mul=0.01).double()
    with torch.no_grad():
        slow.weight.copy_(fast.weight / 0.01)
        fast.bias.normal_()
        slow.bias.copy_(fast.bias / 0.01)
    x = torch.randn(16, 8, dtype=torch.float64)
    torch.testing.assert_close(slow(x), fast(x))
    steps = []
    for layer in (fast, slow):
        before_w, before_b = layer.weight * layer.weight_gain, layer.bias * layer.lr_mul
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3, eps=1e-12)
        layer(x).pow(2).sum().backward()
        optimizer.step()
        steps.append((layer.weight * layer.weight_gain - before_w, layer.bias * layer.lr_mul - before_b))
    torch.testing.assert_close(steps[1][0], 0.01 * steps[0][0], rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(steps[1][1], 0.01 * steps[0][1], rtol=1e-6, atol=1e-12)


def test_equalized_conv_down_is_blur_then_strided_conv():
    """down=2: the FIR low-pass (padding p + 1 each side for [1,3,3,1]) then a stride-2 convolution."""
    torch.manual_seed(0)
    conv = EqualizedConv2d(2, 3, 3, down=2, bias=False).double()
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    kernel = fir_kernel().double().numpy()
    blurred = torch.stack([torch.from_numpy(reference_upfirdn(x[0, c].numpy(), kernel, 1, 1, (2, 2)))
                           for c in range(2)])[None]
    expected = F.conv2d(blurred, conv.weight * conv.weight_gain, stride=2)
    y = conv(x)
    assert y.shape == (1, 3, 4, 4)
    torch.testing.assert_close(y, expected)


def test_equalized_layers_refuse_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        EqualizedLinear(2, 2, activation="relu6")
    with pytest.raises(ValueError, match="down"):
        EqualizedConv2d(2, 2, 3, down=3)
