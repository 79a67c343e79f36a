"""DiffAugment and channels_last inside the game: what D sees is augmented, G is trained through it."""

import pytest
import pytorch_lightning as pl
import torch

from modules.augment import DiffAugment
from modules.bigan import BiGAN
from modules.gan import GAN
from modules.nets.dcgan import DCGANDiscriminator, DCGANEncoder, DCGANGenerator
from modules.nets.joint import JointConvDiscriminator


class ImageStream(torch.utils.data.IterableDataset):
    def __iter__(self):
        gen = torch.Generator().manual_seed(0)
        while True:
            yield torch.rand(1, 16, 16, generator=gen) * 2 - 1


def make_gan(**kwargs) -> GAN:
    torch.manual_seed(0)
    return GAN(DCGANGenerator(latent_dim=8, resolution=16, channels=1, base_width=8),
               DCGANDiscriminator(resolution=16, channels=1, base_width=8, batch_norm=False), noise_seed=3,
               ema_kimg=None, **kwargs)


def fit(model: GAN, steps: int) -> GAN:
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, torch.utils.data.DataLoader(ImageStream(), batch_size=8))
    return model


class SeenByD(torch.nn.Module):
    """Wraps D and keeps every input it is given."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x, y=None):
        self.inputs.append(x.detach().clone())
        return self.net(x, y)


def test_d_sees_augmented_reals_and_fakes():
    model = make_gan(augment=DiffAugment("translation,cutout"))
    model.discriminator = SeenByD(model.discriminator)
    fit(model, 1)
    real_seen, fake_seen, g_seen = model.discriminator.inputs[:3]
    zero_share = [(x == 0).float().mean().item() for x in (real_seen, fake_seen, g_seen)]
    assert all(share > 0.2 for share in zero_share), zero_share  # cut-outs and translation fill zero


def test_augmentation_draws_are_reproducible_and_the_game_moves():
    a, b = fit(make_gan(augment=DiffAugment()), 3), fit(make_gan(augment=DiffAugment()), 3)
    plain = fit(make_gan(), 3)
    for name, p in a.discriminator.state_dict().items():
        assert torch.equal(p, b.discriminator.state_dict()[name])
    plain_d = plain.discriminator.state_dict()
    assert any(not torch.allclose(p, plain_d[n]) for n, p in a.discriminator.state_dict().items())


def test_channels_last_trains_to_the_same_weights():
    fast, plain = fit(make_gan(channels_last=True), 3), fit(make_gan(), 3)
    assert fast.generator.layers[1].conv.weight.is_contiguous(memory_format=torch.channels_last)
    for name, p in fast.generator.state_dict().items():
        torch.testing.assert_close(p, plain.generator.state_dict()[name], atol=1e-5, rtol=1e-4)


def test_bigan_refuses_augment():
    with pytest.raises(ValueError, match="model.augment"):
        BiGAN(DCGANGenerator(latent_dim=8, resolution=16, channels=1),
              JointConvDiscriminator(resolution=16, channels=1, latent_dim=8),
              DCGANEncoder(latent_dim=8, resolution=16, channels=1), augment=DiffAugment())
