"""R3GAN's players: each layer against its definition, the fix-up init, shapes 16..256 px, conditioning."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modules.nets.r3gan import (
    LEAKY_GAIN,
    DownTransition,
    InvertedBottleneck,
    R3GANDiscriminator,
    R3GANGenerator,
    UpTransition,
    stage_config,
)

TINY = {"widths": [16, 16, 8], "cardinalities": [4, 4, 2], "blocks_per_stage": 1}  # 16 px


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (the zero-initialised projections and biases too), so no term hides behind a zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return module


def per_group_conv(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped convolution by its definition: group g's outputs see only group g's inputs."""
    xs, ws = x.chunk(groups, dim=1), weight.chunk(groups, dim=0)
    pad = (weight.shape[-1] - 1) // 2
    return torch.cat([F.conv2d(xg, wg, padding=pad) for xg, wg in zip(xs, ws, strict=True)], dim=1)


def test_inverted_bottleneck_equals_its_definition_with_per_group_convolutions():
    block = randomize_(InvertedBottleneck(channels=6, cardinality=3, expansion=2, kernel_size=3, num_blocks=4))
    x = torch.randn(2, 6, 5, 5)
    h = F.leaky_relu(F.conv2d(x, block.expand.weight) + block.act1.bias.view(1, -1, 1, 1), 0.2)
    assert block.grouped.weight.shape == (12, 4, 3, 3)  # 12 channels in 3 groups of 4
    torch.testing.assert_close(block.grouped(h), per_group_conv(h, block.grouped.weight, 3))
    h = F.leaky_relu(per_group_conv(h, block.grouped.weight, 3) + block.act2.bias.view(1, -1, 1, 1), 0.2)
    expected = x + F.conv2d(h, block.project.weight)
    torch.testing.assert_close(block(x), expected)
    assert all(layer.bias is None for layer in (block.expand, block.grouped, block.project))


def test_every_block_is_the_identity_at_init():
    g = R3GANGenerator(latent_dim=8, resolution=16, channels=1, **TINY)
    d = R3GANDiscriminator(resolution=16, channels=1, **TINY)
    blocks = [m for net in (g, d) for m in net.modules() if isinstance(m, InvertedBottleneck)]
    assert len(blocks) == 6
    for block in blocks:
        assert torch.count_nonzero(block.project.weight) == 0
        x = torch.randn(2, block.expand.in_channels, 4, 4)
        assert torch.equal(block(x), x)


def branch_weights_in_units(net: nn.Module) -> torch.Tensor:
    """The expand and grouped weights of every block times sqrt(fan_in): N(0, gain^2) if drawn as specified."""
    units = [layer.weight.flatten() * math.sqrt(layer.weight[0].numel())
             for m in net.modules() if isinstance(m, InvertedBottleneck) for layer in (m.expand, m.grouped)]
    return torch.cat(units)


@pytest.mark.parametrize("net", ["generator", "discriminator"])
def test_branch_init_is_msr_scaled_by_blocks_to_the_minus_quarter(net):
    """Fix-up init: gain = sqrt(2 / (1 + 0.2^2)) * L^(-1/(2m-2)), m = 3 convolutions per branch, L blocks in all."""
    torch.manual_seed(0)
    build = R3GANGenerator if net == "generator" else R3GANDiscriminator
    for blocks in (1, 4):
        model = build(resolution=16, channels=3, widths=[32, 32, 32], cardinalities=[4, 4, 4],
                      blocks_per_stage=blocks)
        num_blocks = 3 * blocks
        expected = LEAKY_GAIN * num_blocks ** -0.25
        units = branch_weights_in_units(model)
        assert units.numel() > 20_000
        assert abs(units.std().item() / expected - 1) < 0.03
        assert abs(units.mean().item()) < 0.03 * expected


def test_other_layers_start_msr_with_unit_gain_and_the_basis_standard_normal():
    torch.manual_seed(0)
    g = R3GANGenerator(latent_dim=64, resolution=16, channels=3, widths=[64, 64, 32], cardinalities=[8, 8, 4],
                       blocks_per_stage=1)
    d = R3GANDiscriminator(resolution=16, channels=3, widths=[64, 64, 32], cardinalities=[8, 8, 4],
                           blocks_per_stage=1)
    up = [m.conv for m in g.modules() if isinstance(m, UpTransition) and isinstance(m.conv, nn.Conv2d)]
    down = [m.conv for m in d.modules() if isinstance(m, DownTransition) and isinstance(m.conv, nn.Conv2d)]
    assert len(up) == len(down) == 1  # 64 -> 32 channels: the only width change
    basis_g, basis_d = g.layers[0], d.layers[-1]
    unit_gain = [up[0], down[0], g.to_image, d.from_image, basis_g.linear, basis_d.linear, basis_d.basis]
    units = torch.cat([layer.weight.flatten() * math.sqrt(layer.weight[0].numel()) for layer in unit_gain])
    assert abs(units.std().item() - 1) < 0.05
    assert abs(basis_g.basis.std().item() - 1) < 0.1 and basis_g.basis.shape == (64, 4, 4)
    biases = [m.bias for net in (g, d) for m in net.modules() if hasattr(m, "bias") and m.bias is not None]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


@pytest.mark.parametrize("transition", ["up", "down"])
def test_resampling_keeps_a_constant_constant_and_is_bilinear_inside(transition):
    """[1, 3, 3, 1] up = bilinear interpolation; down = antialiased bilinear (triangle filter), away from the
    1-pixel border where the FIR's zero padding (as upfirdn2d) and interpolate's edge handling differ."""
    layer = UpTransition(3, 3, (1, 3, 3, 1)) if transition == "up" else DownTransition(3, 3, (1, 3, 3, 1))
    constant = torch.full((2, 3, 8, 8), 0.7)
    out = layer(constant)
    side = 16 if transition == "up" else 4
    assert out.shape == (2, 3, side, side)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.full_like(out[..., 1:-1, 1:-1], 0.7))
    x = torch.randn(2, 3, 8, 8)
    reference = F.interpolate(x, scale_factor=2.0 if transition == "up" else 0.5, mode="bilinear",
                              align_corners=False, antialias=transition == "down")
    torch.testing.assert_close(layer(x)[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1])


def test_a_width_change_between_stages_is_a_1x1_convolution_around_the_resampling():
    up, down = randomize_(UpTransition(4, 2, (1, 3, 3, 1))), randomize_(DownTransition(4, 2, (1, 3, 3, 1)))
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(up(x), up.resample(F.conv2d(x, up.conv.weight)))
    torch.testing.assert_close(down(x), F.conv2d(down.resample(x), down.conv.weight))


@pytest.mark.parametrize("resolution", [16, 32, 64, 256])
def test_shapes_at_every_resolution(resolution):
    stages = int(math.log2(resolution)) - 1
    small = {"widths": [8] * stages, "cardinalities": [2] * stages, "blocks_per_stage": 1}
    g = R3GANGenerator(latent_dim=8, resolution=resolution, channels=3, **small)
    d = R3GANDiscriminator(resolution=resolution, channels=3, **small)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, 3, resolution, resolution) and torch.isfinite(x).all()
    assert d(x).shape == (2,)
    assert sum(isinstance(m, UpTransition) for m in g.modules()) == stages - 1
    assert sum(isinstance(m, DownTransition) for m in d.modules()) == stages - 1


def test_default_stages_are_the_papers_cifar_and_ffhq_configs():
    """The official train.py presets: CIFAR-10 768 x 4 stages at cardinality 96; FFHQ-256 768, 768, 768, 768, 384,
    192, 96 at cardinality 96, 96, 96, 96, 48, 24, 12; two blocks per stage, expansion 2."""
    assert stage_config("G", 32, None, None, 2, 2) == ([768] * 4, [96] * 4, [2] * 4)
    assert stage_config("G", 256, None, None, 2, 2) == (
        [768, 768, 768, 768, 384, 192, 96], [96, 96, 96, 96, 48, 24, 12], [2] * 7)
    g = R3GANGenerator(resolution=32)  # the CIFAR-10 generator: about 20 M parameters
    assert g.latent_dim == 64 and 19e6 < sum(p.numel() for p in g.parameters()) < 22e6


def test_conditional_players_use_their_labels():
    torch.manual_seed(0)
    g = R3GANGenerator(latent_dim=8, resolution=16, channels=1, num_classes=3, **TINY)
    d = randomize_(R3GANDiscriminator(resolution=16, channels=1, num_classes=3, class_embed_dim=5, **TINY))
    z = torch.randn(1, 8).expand(3, -1)
    x = g(z, torch.arange(3))
    assert not torch.allclose(x[0], x[1]) and not torch.allclose(x[1], x[2])  # one z, three classes
    assert g.embed.weight.shape == (3, 8)  # class_embed_dim defaults to latent_dim
    y = torch.tensor([2, 0, 1])
    phi = d.layers(d.from_image(x))
    assert phi.shape == (3, 5)
    torch.testing.assert_close(d(x, y), (phi * d.embed.weight[y]).sum(dim=1))  # <phi(x), embed(y)>
    with pytest.raises(ValueError, match="conditional"):
        g(z)
    with pytest.raises(ValueError, match="conditional"):
        d(x)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_gradients_reach_every_parameter(num_classes):
    """At init the zero projections block the gradient to their branch; with all weights random, none is dead."""
    g = randomize_(R3GANGenerator(latent_dim=8, resolution=16, channels=1, num_classes=num_classes, **TINY), 1)
    d = randomize_(R3GANDiscriminator(resolution=16, channels=1, num_classes=num_classes, **TINY), 2)
    y = torch.arange(4) % 3 if num_classes else None
    d(g(torch.randn(4, 8), y), y).square().mean().backward()
    for name, p in (*g.named_parameters(), *d.named_parameters()):
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_no_normalisation_layer_anywhere():
    g = R3GANGenerator(latent_dim=8, resolution=16, channels=1, num_classes=3, **TINY)
    d = R3GANDiscriminator(resolution=16, channels=1, num_classes=3, **TINY)
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
    for net in (g, d):
        layers = list(net.modules())
        assert sum(isinstance(m, nn.Conv2d) for m in layers) > 10
        assert not [type(m).__name__ for m in layers if isinstance(m, norms)]
        assert not [n for n, _ in net.named_parameters() if "parametrizations" in n or n.endswith("_orig")]


@pytest.mark.parametrize("kwargs, match", [
    ({"resolution": 24}, "power of two"),
    ({"resolution": 16, "widths": [8, 8]}, "widths needs one entry per stage"),
    ({"resolution": 16, "widths": [8, 8, 8], "cardinalities": [3, 3, 3]}, r"cardinalities\[0\]=3 must divide"),
    ({"resolution": 16, "widths": [8, 8, 8], "blocks_per_stage": [1, 1]}, "blocks_per_stage needs one entry"),
    ({"resolution": 16, "widths": [8, 8, 8], "blocks_per_stage": 0}, "at least one residual block"),
])
def test_bad_configs_are_refused_in_one_line(kwargs, match):
    for build in (R3GANGenerator, R3GANDiscriminator):
        with pytest.raises(ValueError, match=match) as info:
            build(**kwargs)
        assert "\n" not in str(info.value) and build.__name__ in str(info.value)
