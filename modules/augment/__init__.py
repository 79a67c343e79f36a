"""Differentiable augmentation of everything the discriminator sees: DiffAugment (fixed policy) and ADA
(AdaptiveAugment: the paper's pipeline with a probability steered by D's overfitting), one slot of the game."""

from modules.augment.adaptive import AdaptiveAugment
from modules.augment.diffaugment import DiffAugment

__all__ = ["AdaptiveAugment", "DiffAugment"]
