"""A small CNN classifier trained on the dataset's own images, for in-domain evaluation of image GANs.

Inception features, learnt on 299 px ImageNet photos, say little about 32 px digits; a network trained on
the data itself does. Its penultimate features give an in-domain Fréchet distance, its predictions give
class coverage. Saved as a plain dict (weights and what the network expects: resolution, channels,
classes), so loading it with ``weights_only=True`` can never run code.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FORMAT = "ganforge-feature-net/1"
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, Pillow's RGB -> L conversion (how shards turn grey)


def adapt_images(images: Tensor, channels: int, resolution: int) -> Tensor:
    """Images in [-1, 1] to the network's channels (grey by Pillow's luma weights, or repeated) and size
    (bilinear with antialiasing)."""
    if images.shape[1] != channels:
        if channels == 1:
            images = torch.einsum("nchw,c->nhw", images, images.new_tensor(_LUMA))[:, None]
        else:
            images = images.expand(-1, channels, -1, -1)
    if images.shape[-2:] != (resolution, resolution):
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False,
                               antialias=True)
    return images


class FeatureNet(nn.Module):
    """(N, C, H, W) images in [-1, 1] -> (features (N, feature_dim), logits (N, num_classes)).

    Three conv -> BatchNorm -> ReLU -> 2x2 max-pool blocks of ``width``, 2 ``width``, 4 ``width`` channels,
    then a ``feature_dim`` ReLU layer (the features) and a linear classifier. Inputs of another size or
    channel count are adapted first (see adapt_images).
    """

    def __init__(self, resolution: int = 32, channels: int = 1, num_classes: int = 10, width: int = 16,
                 feature_dim: int = 128):
        super().__init__()
        if resolution % 8:
            raise ValueError(f"feature net resolution must be a multiple of 8, got {resolution}")
        self.config = {"resolution": resolution, "channels": channels, "num_classes": num_classes,
                       "width": width, "feature_dim": feature_dim}
        layers: list[nn.Module] = []
        width_in = channels
        for width_out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(width_in, width_out, 3, padding=1, bias=False), nn.BatchNorm2d(width_out),
                       nn.ReLU(), nn.MaxPool2d(2)]
            width_in = width_out
        self.trunk = nn.Sequential(*layers, nn.Flatten(),
                                   nn.Linear(width_in * (resolution // 8) ** 2, feature_dim), nn.ReLU())
        self.classifier = nn.Linear(feature_dim, num_classes)

    @property
    def resolution(self) -> int:
        return self.config["resolution"]

    @property
    def channels(self) -> int:
        return self.config["channels"]

    @property
    def num_classes(self) -> int:
        return self.config["num_classes"]

    @property
    def feature_dim(self) -> int:
        return self.config["feature_dim"]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.trunk(adapt_images(images, self.channels, self.resolution))
        return features, self.classifier(features)


def save_feature_net(net: FeatureNet, path: str, **metadata: Any) -> None:
    """Weights, architecture and ``metadata`` (plain values: accuracy, data source, ...) as one dict."""
    record = {"format": FORMAT, "config": dict(net.config), "state_dict": net.state_dict(), **metadata}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(record, path)


def load_feature_net(path: str, config_key: str = "feature_net") -> FeatureNet:
    """The network saved at ``path``, in eval mode; a missing or foreign file fails naming ``config_key``."""
    make = f"train one with `python scripts/train_feature_net.py --shards <data> --out {path}`"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{config_key}={path}: no such file; {make}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"{config_key}={path}: not a readable feature-net file ({type(err).__name__}); "
                         f"{make}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{config_key}={path}: not a ganforge feature-net file; {make}")
    net = FeatureNet(**record["config"])
    net.load_state_dict(record["state_dict"])
    return net.eval().requires_grad_(False)
