"""Image players: shapes at 16/32/64 px, the DCGAN init, class conditioning, and short runs in the engine."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modules.gan import GAN
from modules.losses import HingeLoss
from modules.nets.conditional import ConditionalBatchNorm2d, per_class_labels
from modules.nets.dcgan import DCGANDiscriminator, DCGANEncoder, DCGANGenerator
from modules.nets.resnet import ResNetDiscriminator, ResNetGenerator, SelfAttention2d

SMALL = {"base_width": 8, "max_width": 32}


pytestmark = pytest.mark.usefixtures("one_thread")


def class_images(n: int, classes: int, side: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images in [-1, 1]: class k is a bright square at a k-dependent place, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=gen)
    x = torch.full((n, 1, side, side), -1.0)
    quarter = side // 4
    for i, k in enumerate(y.tolist()):
        r, c = divmod(k % 9, 3)
        x[i, :, r * quarter:(r + 2) * quarter, c * quarter:(c + 2) * quarter] = 1.0
    return (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(-1, 1), y


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


# ---- shapes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_dcgan_shapes_and_output_range(resolution):
    g = DCGANGenerator(latent_dim=16, resolution=resolution, channels=3, **SMALL)
    d = DCGANDiscriminator(resolution=resolution, channels=3, **SMALL)
    e = DCGANEncoder(latent_dim=16, resolution=resolution, channels=3, **SMALL)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, 3, resolution, resolution)
    assert x.abs().max() <= 1.0
    assert d(x).shape == (5,)
    assert e(x).shape == (5, 16)


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_resnet_shapes_with_self_attention(resolution):
    g = ResNetGenerator(latent_dim=16, resolution=resolution, channels=3,
                        attention_resolution=resolution // 2, **SMALL)
    d = ResNetDiscriminator(resolution=resolution, channels=3, attention_resolution=resolution // 4, **SMALL)
    assert sum(isinstance(m, SelfAttention2d) for m in g.modules()) == 1
    assert sum(isinstance(m, SelfAttention2d) for m in d.modules()) == 1
    x = g(torch.randn(5, 16))
    assert x.shape == (5, 3, resolution, resolution)
    assert x.abs().max() <= 1.0
    assert d(x).shape == (5,)


def test_dcgan_widths_are_the_papers_at_64px_and_any_power_of_two_works_by_config():
    g, d = DCGANGenerator(latent_dim=100, resolution=64), DCGANDiscriminator(resolution=64)
    assert [layer.conv.out_channels for layer in g.layers] == [512, 256, 128, 64]
    assert [m.out_channels for m in d.trunk if isinstance(m, nn.Conv2d)] == [64, 128, 256, 512]
    big = DCGANGenerator(latent_dim=8, resolution=512, channels=1, base_width=1, max_width=4)
    assert big(torch.randn(1, 8)).shape == (1, 1, 512, 512)


@pytest.mark.parametrize("net", [DCGANGenerator, DCGANDiscriminator, ResNetGenerator, ResNetDiscriminator])
def test_resolution_must_be_a_power_of_two_from_8(net):
    for bad in (4, 48):
        with pytest.raises(ValueError, match="power of two"):
            net(resolution=bad)


def test_attention_resolution_must_be_a_block_output():
    with pytest.raises(ValueError, match="attention_resolution must be one of"):
        ResNetGenerator(resolution=32, attention_resolution=4, **SMALL)
    with pytest.raises(ValueError, match="attention_resolution must be one of"):
        ResNetDiscriminator(resolution=32, attention_resolution=32, **SMALL)


# ---- initialisation ---------------------------------------------------------------------------------------
def test_dcgan_init_draws_weights_from_n0_002_and_norm_gains_from_n1_002():
    torch.manual_seed(0)
    for net in (DCGANGenerator(latent_dim=100, resolution=64, num_classes=10),
                DCGANDiscriminator(resolution=64, num_classes=10)):
        weights = torch.cat([m.weight.detach().flatten() for m in net.modules()
                             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))])
        gains = [m.gain.weight for m in net.modules() if isinstance(m, ConditionalBatchNorm2d)]
        gains += [m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
        gains = torch.cat([w.detach().flatten() for w in gains])
        for values, mean in ((weights, 0.0), (gains, 1.0)):  # within 4 standard errors of N(mean, 0.02)
            n = values.numel()
            assert values.mean().item() == pytest.approx(mean, abs=4 * 0.02 / n**0.5)
            assert values.std().item() == pytest.approx(0.02, rel=4 / (2 * n) ** 0.5)
        biases = [m.bias for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
        assert all(b is None or not b.any() for b in biases)


def test_self_attention_starts_as_the_identity_and_then_mixes_positions():
    attention = SelfAttention2d(16)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    assert torch.equal(attention(x), x)
    with torch.no_grad():
        attention.gamma.fill_(1.0)
    attention(x)[0, :, 0, 0].sum().backward()
    assert x.grad[0, :, 3, 3].abs().sum() > 0  # the corner sees the opposite corner
    assert not x.grad[1].any()  # and never another image


# ---- conditioning -----------------------------------------------------------------------------------------
def test_conditional_batchnorm_normalises_then_applies_the_class_gain_and_bias():
    cbn = ConditionalBatchNorm2d(3, num_classes=2)
    with torch.no_grad():
        cbn.gain.weight.copy_(torch.tensor([[2.0] * 3, [1.0] * 3]))
        cbn.bias.weight.copy_(torch.tensor([[0.0] * 3, [5.0] * 3]))
    x, y = torch.randn(8, 3, 4, 4), torch.tensor([0, 1] * 4)
    normalised = nn.functional.batch_norm(x, None, None, training=True)
    out = cbn(x, y)
    assert torch.allclose(out[y == 0], 2 * normalised[y == 0], atol=1e-5)
    assert torch.allclose(out[y == 1], normalised[y == 1] + 5, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: DCGANDiscriminator(resolution=16, channels=1, num_classes=4, **SMALL),
    lambda: ResNetDiscriminator(resolution=16, channels=1, num_classes=4, **SMALL),
])
def test_projection_discriminator_adds_embed_y_dot_features(make):
    torch.manual_seed(0)
    d = make().eval()
    x = torch.randn(6, 1, 16, 16)
    s0, s3 = d(x, torch.zeros(6, dtype=torch.long)), d(x, torch.full((6,), 3))
    assert (s3 - s0).abs().min() > 1e-4  # the label changes every score
    phi = {}
    d.head.register_forward_hook(lambda module, args, out: phi.update(features=args[0]))
    d(x, torch.zeros(6, dtype=torch.long))
    embed = d.head.embed.weight
    assert torch.allclose(s3 - s0, phi["features"] @ (embed[3] - embed[0]), atol=1e-5)


def test_concat_discriminator_uses_the_label_and_conditional_nets_demand_labels():
    torch.manual_seed(0)
    d = DCGANDiscriminator(resolution=16, channels=1, num_classes=4, conditioning="concat", **SMALL).eval()
    x = torch.randn(6, 1, 16, 16)
    assert (d(x, torch.zeros(6, dtype=torch.long)) - d(x, torch.ones(6, dtype=torch.long))).abs().min() > 1e-5
    g = DCGANGenerator(latent_dim=8, resolution=16, num_classes=4, **SMALL)
    for call in (lambda: d(x), lambda: g(torch.randn(2, 8))):
        with pytest.raises(ValueError, match="num_classes=4.*no labels"):
            call()


@pytest.mark.parametrize("conditioning", ["batchnorm", "concat"])
def test_dcgan_generator_outputs_differ_per_class_and_agree_within_a_class(conditioning):
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=8, resolution=16, channels=1, num_classes=3, conditioning=conditioning,
                       **SMALL)
    z = torch.cat([torch.randn(1, 8).expand(6, -1), torch.randn(10, 8)])  # the rest: BatchNorm statistics
    x = g(z, torch.cat([torch.tensor([0, 0, 1, 1, 2, 2]), torch.randint(0, 3, (10,))]))
    assert torch.equal(x[0], x[1]) and torch.equal(x[2], x[3])
    for a, b in ((0, 2), (0, 4), (2, 4)):
        assert (x[a] - x[b]).abs().mean() > 0.01 * x.abs().mean()


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    nets = [DCGANGenerator(latent_dim=8, resolution=16, **SMALL), DCGANDiscriminator(resolution=16, **SMALL),
            ResNetGenerator(latent_dim=8, resolution=16, attention_resolution=8, **SMALL),
            ResNetDiscriminator(resolution=16, attention_resolution=8, **SMALL)]
    z, x = torch.randn(4, 8), torch.randn(4, 3, 16, 16)
    for net in nets:
        fast = copy.deepcopy(net).to(memory_format=torch.channels_last)
        inp = z if hasattr(net, "latent_dim") else x
        fast_inp = inp if inp.dim() == 2 else inp.contiguous(memory_format=torch.channels_last)
        assert torch.allclose(fast(fast_inp), net(inp), atol=1e-5)


# ---- in the engine ----------------------------------------------------------------------------------------
def fit(model: GAN, steps: int, data: tuple[torch.Tensor, ...]) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, DataLoader(TensorDataset(*data), batch_size=8, shuffle=True, drop_last=True))
    return trainer


IMG = {"resolution": 16, "channels": 1, **SMALL}
PLAYERS = {
    "dcgan-projection": lambda k: (DCGANGenerator(latent_dim=8, num_classes=k, **IMG),
                                   DCGANDiscriminator(num_classes=k, **IMG), {}),
    "dcgan-concat": lambda k: (DCGANGenerator(latent_dim=8, num_classes=k, conditioning="concat", **IMG),
                               DCGANDiscriminator(num_classes=k, conditioning="concat", **IMG), {}),
    "sngan-resnet": lambda k: (ResNetGenerator(latent_dim=8, num_classes=k, attention_resolution=8, **IMG),
                               ResNetDiscriminator(num_classes=k, attention_resolution=8, **IMG),
                               {"spectral_norm": True, "loss": HingeLoss()}),
}


@pytest.mark.parametrize("players", PLAYERS)
def test_conditional_players_train_in_the_engine_and_sample_per_class(players):
    torch.manual_seed(0)
    g, d, options = PLAYERS[players](3)
    model = GAN(g, d, lr_g=2e-3, lr_d=2e-3, noise_seed=0, **options)
    g0, d0 = flat(model.generator), flat(model.discriminator)
    trainer = fit(model, 5, class_images(64, 3, 16))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["loss/d"]) and torch.isfinite(metrics["loss/g"])
    assert not torch.equal(flat(model.generator), g0) and not torch.equal(flat(model.discriminator), d0)
    if options.get("spectral_norm"):  # the engine's option normalises every weight layer of D, attention too
        weighted = (nn.Conv2d, nn.Linear, nn.Embedding)
        layers = [m for m in model.discriminator.modules() if isinstance(m, weighted)]
        assert len(layers) > 10 and all("weight" in m.parametrizations for m in layers)
    samples = model.sample(6, labels=per_class_labels(3, 2), seed=1, use_ema=False)
    assert samples.shape == (6, 1, 16, 16)
    for a, b in ((0, 2), (0, 4), (2, 4)):
        assert (samples[a] - samples[b]).abs().mean() > 0.01 * samples.abs().mean()
