"""StyleGAN2 (Karras et al., 2020) in plain PyTorch: no compiled extensions, torch.compile-friendly."""

from modules.nets.stylegan2.discriminator import StyleGAN2Discriminator
from modules.nets.stylegan2.generator import StyleGAN2Generator

__all__ = ["StyleGAN2Discriminator", "StyleGAN2Generator"]
